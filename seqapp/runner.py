"""Training, evaluation, cross-validation and export of any task, driven by a definition.

The runner calls the definition's task (`seqapp.tasks`) for everything that
differs between tasks and never asks which one it holds. A run lives in one
work directory:

    definition.yaml  the validated definition the run used
    vocab.txt, labels.txt                classification: vocabulary and class names
    source_vocab.txt, target_vocab.txt   translation: each side's vocabulary
    warmup.txt       a few real inputs, replayed by TF Serving when the export loads
    best.keras       the best checkpoint (by the task's monitored metric)
    backup/          BackupAndRestore state: a killed run resumes from its last epoch
    logs/            TensorBoard
    history.csv      per-epoch metrics
    training.json    wall time, epochs and tokens/s of the fit (and the fold it held out)
    metrics.json     the task's metrics per split (classification: accuracy, macro-F1 and
                     confusion matrix; translation: perplexity, BLEU and chrF)
    curves.png, confusion_<split>.png
"""

import json
import time
from pathlib import Path

import keras
import numpy as np
import yaml

from seqapp import config
from seqapp import exporters
from seqapp import plots
from seqapp import tasks
from seqapp.errors import ConfigError
from seqapp.training.run_folder import RunFolder


def _reseed(definition):
    """Seeds again just before the model is built. Preparing a dataset the first time draws from
    the global random state, and loading it from the cache does not: without this, a run's
    initial weights would depend on what the cache held."""
    keras.utils.set_random_seed(definition.seed)


def train(definition, work_dir, *, fold=None, verbose="auto"):
    """Trains the definition's model and evaluates it on the validation and test splits.

    Args:
        definition: a validated definition of any task.
        work_dir: the run's folder; a run killed midway resumes from `backup/`.
        fold: the held-out fold in cross-validation, or None.
        verbose: Keras `fit` verbosity.

    Returns:
        `{split: metrics}` as the task's `evaluate` gives them.
    """
    folder, inputter, _ = fit(definition, work_dir, fold=fold, verbose=verbose)
    return tasks.of(definition).evaluate_after_training(load_run(folder.path), inputter)


def fit(definition, work_dir, *, fold=None, verbose="auto", more_callbacks=None):
    """Trains the definition's model into a run folder (best checkpoint, backup, logs, history,
    curves), without evaluating it; `train` and tuning trials (`seqapp.tuning`) share it.

    Args:
        definition: a validated definition of any task.
        work_dir: the run's folder; a run killed midway resumes from `backup/`.
        fold: the held-out fold in cross-validation, or None.
        verbose: Keras `fit` verbosity.
        more_callbacks: `more_callbacks(inputter) -> [callbacks]`, run after the task's own and before
            checkpointing (a tuning objective, a trial's reporting), or None.

    Returns:
        `(folder, inputter, history)`: the `RunFolder`, the inputter that read the data, and the
        `History` of this process's epochs (a resumed run's earlier epochs are in `history.csv`).
    """
    task = tasks.of(definition)
    folder = RunFolder(work_dir)
    keras.utils.set_random_seed(definition.seed)
    inputter = task.inputter(definition, fold=fold)
    folder.write_text("definition.yaml", yaml.safe_dump(definition.model_dump(mode="json"), sort_keys=False))
    task.write_run_files(inputter, folder)
    warm_starts = task.warm_starts(definition, inputter)
    for start in warm_starts:  # before the model exists: this may train another model
        start.resolve()
    _reseed(definition)
    model = task.build_model(inputter)
    for start in warm_starts:
        start.apply(model)
    task.compile(model, definition)

    validation = dict(task.split_datasets(inputter, ("validation",))).get("validation")
    resuming = (folder / "backup").exists()  # BackupAndRestore left state: a killed run
    monitor, mode = task.monitored(validation is not None)
    cfg = definition.train
    callbacks = [
        keras.callbacks.BackupAndRestore(str(folder / "backup")),
        *(task.callbacks(inputter) if validation is not None else []),
        *(more_callbacks(inputter) if more_callbacks is not None else []),
        keras.callbacks.ModelCheckpoint(str(folder / "best.keras"), monitor=monitor, mode=mode, save_best_only=True),
        keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=cfg.early_stopping_patience,
                                      restore_best_weights=True),
        keras.callbacks.TensorBoard(str(folder / "logs")),
        keras.callbacks.CSVLogger(str(folder / "history.csv"), append=resuming),
    ]
    batches = inputter.dataset("train", training=True)
    started = time.perf_counter()
    history = model.fit(
        batches,
        validation_data=validation,
        epochs=cfg.epochs,
        # Keras opens the next epoch's iterator at each epoch's end; told the steps, it reads the next
        # epoch from that one, else it opens yet another and the first has filled a shuffle buffer for nothing.
        steps_per_epoch=int(batches.cardinality()),
        callbacks=callbacks,
        verbose=verbose,
        shuffle=False,  # the pipeline shuffles (seeded) before bucketing
        **task.fit_options(inputter),
    )
    seconds = time.perf_counter() - started
    epochs = len(history.history.get("loss", []))
    folder.write_json("training.json", {
        "wall_seconds": seconds, "epochs": epochs, "parameters": model.count_params(), "fold": fold,
        "tokens_per_second": epochs * int(inputter.train_lengths.sum()) / seconds if seconds else None,
    })
    plots.training_curves(history.history, folder / "curves.png")
    return folder, inputter, history


def cross_validate(definition, work_dir, *, verbose="auto"):
    """k-fold cross-validation (k = the task's `folds(definition)`); one run folder per fold.

    Returns:
        `{"folds": [test metrics per fold], metric: {"mean", "std", "per_fold"}}` for each
        of the task's `summary_metrics`.
    """
    task = tasks.of(definition)
    k = task.folds(definition)
    if k < 2:
        raise ConfigError(definition.origin, "train.folds", "cross-validation needs at least 2 folds")
    per_fold = [train(definition, Path(work_dir) / f"fold{fold}", fold=fold, verbose=verbose)["test"]
                for fold in range(k)]
    summary = {"folds": per_fold}
    for metric in task.summary_metrics:
        values = np.array([result[metric] for result in per_fold])
        summary[metric] = {"mean": float(values.mean()), "std": float(values.std()), "per_fold": values.tolist()}
    RunFolder(work_dir).write_json("cv_metrics.json", summary)
    return summary


def run_definition(work_dir):
    """The validated definition of a finished run."""
    work_dir = Path(work_dir)
    if not (work_dir / "best.keras").exists():
        raise ConfigError(work_dir, "best.keras", "no trained model in this run folder (run `seqapp train` first)")
    return config.saved(yaml.safe_load((work_dir / "definition.yaml").read_text()),
                        source=work_dir / "definition.yaml")


def load_run(work_dir):
    """A finished run of any task (`seqapp.tasks.base.Run`): its definition, best model and tokenizers."""
    definition = run_definition(work_dir)
    return tasks.of(definition).load_run(Path(work_dir), definition)


def evaluate(work_dir, splits=("test",), **options):
    """The task's metrics of a finished run on its data's `splits`, merged into its `metrics.json`.

    Args:
        work_dir: the run folder.
        splits: the splits to evaluate (those the data lacks are skipped).
        **options: the task's evaluation options (translation: `beam_size`, `cached`).

    Returns:
        `{split: metrics}`.
    """
    run = load_run(work_dir)
    return tasks.of(run.definition).evaluate(run, splits, **options)


def export(work_dir, base_path, version=None):
    """Exports a run's best model to `base_path/<version>/` with the task's signatures, warmup
    requests from the run's own inputs and a model card (see `exporters.export`)."""
    run = load_run(work_dir)
    task = tasks.of(run.definition)
    metrics_path = Path(work_dir) / "metrics.json"
    card = {
        "task": task.name,
        "data": run.definition.data.model_dump(mode="json"),
        "config": run.definition.model_dump(mode="json", exclude={"origin", "base_dir"}),
        "metrics": json.loads(metrics_path.read_text()) if metrics_path.exists() else None,
        "run": str(Path(work_dir).resolve()),
        **task.card(run),
    }
    track, signatures = task.signatures(run)
    return exporters.export(signatures, base_path, version, track=track, warmup=task.warmup_inputs(run), card=card)
