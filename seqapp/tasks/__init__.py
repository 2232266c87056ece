"""seqapp's tasks, one module each, in one explicit table (see `seqapp.tasks.base.Task`).

A new task is a new module here and a line in `REGISTRY`; nothing else is edited.
"""

from seqapp.errors import SeqappError
from seqapp.tasks.captioning import CaptioningTask
from seqapp.tasks.classification import ClassificationTask
from seqapp.tasks.language_modeling import LanguageModelingTask
from seqapp.tasks.translation import TranslationTask

REGISTRY = {task.name: task for task in (ClassificationTask(), TranslationTask(), CaptioningTask(),
                                                LanguageModelingTask())}


def get(name):
    """The registered task called `name`."""
    if name not in REGISTRY:
        raise SeqappError(f"unknown task {name!r}; known: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def of(definition):
    """The task of a validated definition."""
    return REGISTRY[definition.task]
