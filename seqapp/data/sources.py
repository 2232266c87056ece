"""Where a definition's raw examples come from: a built-in dataset's split, or the user's file.

Each task (`seqapp.tasks`) turns these into its examples, with the same keys
whatever their origin (classification `{"text", "label"}`, translation
`{"source", "target"}`); what is common to every task lives here: choosing and
slicing a dataset's split, the user's file of a split, the training slice, and
the identity of the training data that cache keys are made of.
"""

from pathlib import Path

from seqapp import datasets
from seqapp.errors import ConfigError

SPLITS = ("train", "validation", "test")


def check_split(definition, split):
    if split not in SPLITS:
        raise ConfigError(definition.origin, "split", f"unknown split {split!r}; expected one of {SPLITS}")


def limit(definition, split, examples):
    """The first `data.max_train_examples` of the training split (all when unset); other splits whole."""
    count = definition.data.max_train_examples
    return examples.take(count) if split == "train" and count else examples


def dataset_split(definition, split, *, any_task=False):
    """`(examples, features)`: the TFDS split of `definition.data.dataset` that serves as `split`
    (see `data.splits`; a split the dataset has beyond train/validation/test, such as
    `test_compositional`, serves as itself), unbatched and in a fixed order, and the dataset's
    feature dict.

    `any_task`: read another task's dataset too (a language model reads the text of any).

    Raises:
        ConfigError: the dataset is another task's (unless `any_task`), has no such split, or the
            chosen split or slice is malformed.
    """
    data = definition.data
    task = datasets.TASKS.get(data.dataset.partition("/")[0])
    if task not in (None, definition.task) and not any_task:
        raise ConfigError(definition.origin, "data.dataset", f"{data.dataset} is a {task} dataset, not {definition.task}")
    builder = datasets.prepare(data.dataset)
    chosen = getattr(data.splits, split, None) if data.splits is not None else None
    if chosen is None and split not in builder.info.splits:
        raise ConfigError(definition.origin, "data.dataset", f"{data.dataset} has no {split!r} split")
    try:
        examples = builder.as_dataset(split=chosen or split, shuffle_files=False)
    except ValueError as error:  # TFDS: an unknown split or a malformed slice
        raise ConfigError(definition.origin, f"data.splits.{split}",
                          f"{chosen!r} for {data.dataset}: {error}") from None
    return examples, builder.info.features


def user_file(definition, split, *, key=None):
    """The user's file of `split`, from the definition's folder. `key` picks one of a
    split given as several files (`{source: ..., target: ...}`).

    Raises:
        ConfigError: the definition gives no file for this split.
    """
    check_split(definition, split)
    files = getattr(definition.data, split)
    if files is None:
        raise ConfigError(definition.origin, f"data.{split}", "no file given for this split")
    return str(Path(definition.base_dir, files if isinstance(files, str) else getattr(files, key or "source")))


def identity(definition):
    """A string naming the training data, for cache keys of what is learned from it."""
    data = definition.data
    count = f"/first={data.max_train_examples}" if data.max_train_examples else ""
    if data.dataset is not None:
        chosen = f"/splits={data.splits.train}" if data.splits is not None and data.splits.train else ""
        return f"dataset={data.dataset}/{datasets.builder(data.dataset).info.version}{chosen}{count}"
    path = user_file(definition, "train")
    stat = Path(path).stat()
    return f"file={path}/{stat.st_size}/{stat.st_mtime_ns}{count}"
