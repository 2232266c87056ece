"""The `Task` interface: everything that makes one job (classification, translation, ...) what it is.

A task is one module under `seqapp/tasks/`, registered in `seqapp.tasks.REGISTRY`.
It owns its definition schema (its `task:` tag, its sections and their
cross-checks), its inputter (raw examples -> batched `tf.data`), model building,
compile defaults and the metric that checkpointing and early stopping monitor,
its warm starts, evaluation and the text of its metrics, export signatures and
warmup requests, and its demo step. The runner, CLI, exporter, demo and
`seqapp data stats` call these methods and never ask which task they hold.
"""

import dataclasses
import json
from pathlib import Path
from typing import ClassVar

import keras

from seqapp import config
from seqapp.errors import ConfigError
from seqapp.errors import SeqappError


@dataclasses.dataclass
class Run:
    """A finished run, loaded for evaluation and export.

    Attributes:
        work_dir: the run folder.
        definition: the definition it was trained with.
        model: its best model.
        tokenizers: `{field: tokenizer}` read from the run's vocabularies.
        fold: the cross-validation fold it held out, or None.
    """

    work_dir: Path
    definition: config.Definition
    model: keras.Model
    tokenizers: dict
    fold: int = None


class Task:
    """One job seqapp trains, evaluates, exports and serves.

    Attributes:
        name: the `task:` tag of its definitions; also its name in the CLI, run folders and model cards.
        definition_class: its `config.Definition` subclass.
        inputter_class: its `seqapp.inputters.Inputter` subclass.
        export_name: the served model's default name (`seqapp export`, the demo).
        monitor: the Keras metric that checkpointing and early stopping watch
            (on the validation split when there is one; see `monitored`).
        warmup_field: the raw-example field whose validation texts become the
            export's warmup requests.
        summary_metrics: metrics that cross-validation averages over folds.
    """

    name: ClassVar[str]
    definition_class: ClassVar[type]
    export_name: ClassVar[str]
    monitor: ClassVar[str] = "loss"
    warmup_field: ClassVar[str] = "text"
    summary_metrics: ClassVar[tuple] = ()

    inputter_class: ClassVar[type]

    # -- data
    def inputter(self, definition, fold=None, tokenizers=None):
        """The task's `seqapp.inputters.Inputter` (its `inputter_class`) for a definition."""
        return self.inputter_class(definition, fold=fold, tokenizers=tokenizers)

    def split_datasets(self, inputter, splits):
        """`(split, batches)` for each of `splits` the data has, in order, unshuffled."""
        for split in splits:
            try:
                yield split, inputter.dataset(split, training=False)
            except ConfigError:  # the data has no such split
                continue

    def default_definition(self, dataset):
        """A definition (dict) for a built-in dataset of this task, as `seqapp data stats` measures it."""
        return {"task": self.name, "data": {"dataset": dataset}}

    def folds(self, definition):
        """How many cross-validation folds the definition asks for (1: the data's own splits)."""
        return 1

    # -- training
    def write_run_files(self, inputter, folder):
        """Writes what the run needs besides the model (vocabularies, labels, warmup inputs) into
        a `RunFolder`."""
        try:
            texts = inputter.texts("validation", self.warmup_field, 8)
        except ConfigError:  # no validation split
            texts = inputter.texts("train", self.warmup_field, 8)
        folder.write_text("warmup.txt", json.dumps(texts, ensure_ascii=False))

    def warm_starts(self, definition, inputter):
        """The `seqapp.training.warm_start.WarmStart`s the model starts from, in the order applied."""
        return []

    def build_model(self, inputter, hp=None):
        """An uncompiled model sized by the inputter's vocabularies and labels."""
        raise NotImplementedError

    def compile(self, model, definition):
        """Compiles with the task's loss, metrics and optimizer."""
        raise NotImplementedError

    def monitored(self, has_validation):
        """`(log key, mode)` that checkpointing and early stopping watch: `val_<monitor>` with a
        validation split, else the training split's `monitor`; mode as Keras' ("auto", "min", "max")."""
        return (f"val_{self.monitor}" if has_validation else self.monitor), "auto"

    def callbacks(self, inputter):
        """Keras callbacks that run before checkpointing and early stopping (one may add the
        metric they watch to the epoch's logs, see `seqapp.training.decoded_metric`)."""
        return []

    def tuning_objective(self):
        """What `seqapp tune` optimizes: `(log key, "min" or "max")`, measured on the validation split."""
        return "val_loss", "min"

    def tuning_callbacks(self, inputter):
        """Keras callbacks that add `tuning_objective`'s key to each epoch's logs when Keras does not
        (they run after `callbacks`)."""
        return []

    def fit_options(self, inputter):
        """Extra keyword arguments of `Model.fit` (class weights, ...)."""
        return {}

    # -- a finished run
    def load_run(self, work_dir, definition):
        """The `Run` in `work_dir` (its definition already read)."""
        raise NotImplementedError

    def run_tokenizer(self, definition, vocab_path):
        from seqapp.tokenizers import WordPieceTokenizer

        cfg = definition.tokenizer
        return WordPieceTokenizer(vocab_path, lower_case=cfg.lower_case, normalization_form=cfg.normalization_form)

    def run_inputter(self, run):
        """The inputter of a finished run: its definition, fold and vocabularies."""
        return self.inputter(run.definition, fold=run.fold, tokenizers=run.tokenizers)

    def evaluate(self, run, splits, *, inputter=None, **options):
        """Metrics of `run` on its data's `splits` (those the data lacks are skipped), merged into
        the run's `metrics.json`. Returns `{split: metrics}`. `inputter`: one that has already
        prepared the splits (training's), else `run_inputter(run)`."""
        raise NotImplementedError

    def evaluate_after_training(self, run, inputter):
        """The metrics `seqapp train` reports, with the inputter training used."""
        return self.evaluate(run, ("validation", "test"), inputter=inputter)

    def evaluate_files(self, run, files, **options):
        """Metrics of `run` on the user's files (`seqapp eval --data/--source/--reference/--output`)."""
        raise NotImplementedError

    def format_metrics(self, results, work_dir):
        """`{split: metrics}` as lines of text."""
        raise NotImplementedError

    def format_summary(self, summary):
        """Cross-validation's summary as a line of text."""
        return ", ".join(f"{metric} {summary[metric]['mean']:.4f} ± {summary[metric]['std']:.4f}"
                         for metric in self.summary_metrics)

    def explain(self, run, out, *, text=None, image=None, **options):
        """Draws what the model attends to for one input, a text or an image file (`seqapp explain`),
        into the PNG `out`; returns `(answer, png)`."""
        raise SeqappError(f"`seqapp explain` does not support {self.name} runs")

    # -- export
    def signatures(self, run):
        """`(objects to track, [exporters.Signature])` of the run's SavedModel."""
        raise NotImplementedError

    def warmup_inputs(self, run):
        """`{input name: values}` of `serving_default`, one warmup request per value."""
        path = Path(run.work_dir) / "warmup.txt"
        texts = json.loads(path.read_text(encoding="utf-8")) if path.exists() else []
        return {"text": [text.encode() for text in texts]}

    def example_inputs(self, run):
        """`{signature: {input name: values}}`: a request every signature of the export answers (the
        task conformance test sends them to a freshly loaded export)."""
        return {"serving_default": self.warmup_inputs(run)}

    def card(self, run):
        """Task-specific facts for the export's model card."""
        return {"max_length": run.definition.pipeline.max_length}

    # -- demo
    def demo_definition(self, small=False):
        """The demo's definition (dict); `small` shrinks data and model to seconds of training."""
        raise NotImplementedError

    def demo_inputs(self):
        """`{input name: values}` the demo sends to the served model."""
        raise NotImplementedError

    def format_outputs(self, inputs, outputs):
        """A served answer to `demo_inputs`, as lines of text."""
        raise NotImplementedError


def as_text(value):
    """A served string value (bytes over gRPC, str over REST) as str."""
    return value.decode() if isinstance(value, bytes) else value
