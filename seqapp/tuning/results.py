"""What a search leaves besides its trials: a table, a PNG, TensorBoard HParams logs and `best.yaml`.

Written by the process that holds the oracle (the only process, or the chief)
after the search, from the oracle's trials:

    results.txt   every trial: status, objective, values, and a failed trial's reason
    results.png   the objective per trial and the best so far
    hparams/      TensorBoard's HParams dashboard (`tensorboard --logdir <work dir>/hparams`)
    best.yaml     the best completed trial's complete definition; `seqapp train` runs it as it is
"""

import re
import shutil
from pathlib import Path

import yaml

from seqapp import plots
from seqapp.tuning import space

COMPLETED = "COMPLETED"


def trials_in_order(oracle):
    """The oracle's trials, finished ones in the order they finished, then the others."""
    ended = [oracle.trials[trial_id] for trial_id in oracle.end_order]
    return ended + [trial for trial_id, trial in sorted(oracle.trials.items()) if trial_id not in oracle.end_order]


def best_trial(oracle):
    """The best completed trial, or None (KerasTuner's own answer includes failed trials when too
    few completed)."""
    completed = [trial for trial in oracle.trials.values() if trial.status == COMPLETED]
    if not completed:
        return None
    pick = max if oracle.objective.direction == "max" else min
    return pick(completed, key=lambda trial: trial.score)


def table(oracle):
    """The trials as text, one line each, the best marked with `*`."""
    best = best_trial(oracle)
    name = oracle.objective.name
    lines = [f"{'trial':<8}{'status':<11}{name:>12}  values"]
    for trial in trials_in_order(oracle):
        score = f"{trial.score:.4f}" if trial.status == COMPLETED and trial.score is not None else "-"
        values = ", ".join(f"{key}={_short(value)}" for key, value in space.overrides(trial.hyperparameters).items())
        mark = "*" if best is not None and trial.trial_id == best.trial_id else " "
        lines.append(f"{trial.trial_id + mark:<8}{trial.status:<11}{score:>12}  {values}")
        if trial.message:
            lines.append(f"{'':<8}reason: {_reason(trial.message)}")
    return "\n".join(lines)


def _short(value):
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _reason(message):
    """The error of a failed trial's traceback (its last line), without the exception's module path."""
    last = next((line.strip() for line in reversed(message.strip().splitlines()) if line.strip()), message)
    return re.sub(r"^[\w.]+\.(\w+): ", lambda match: "" if match.group(1) == "FailedTrialError" else f"{match.group(1)}: ",
                  last)


def best_definition(pipeline, trial):
    """The complete definition a trial trained, as YAML text that `seqapp train` runs.

    Args:
        pipeline: the searched pipeline definition file.
        trial: a `keras_tuner` trial of that search.
    """
    values = trial.hyperparameters.values
    extra = {"train.epochs": values["tuner/epochs"]} if "tuner/epochs" in values else None
    definition = space.definition_of(pipeline, trial.hyperparameters, extra)
    # `base_dir` stays: relative data paths and `init_from` still resolve from the pipeline's folder.
    raw = definition.model_dump(mode="json", exclude={"origin", "tune"})
    header = (f"# Trial {trial.trial_id} of the search over {pipeline} (score {trial.score:.4f}); written by "
              f"`seqapp tune`.\n")
    return header + yaml.safe_dump(raw, sort_keys=False, allow_unicode=True)


def write(work_dir, pipeline, oracle):
    """Writes `results.txt`, `results.png`, `hparams/` and (when a trial completed) `best.yaml`.

    Args:
        work_dir: the search's folder.
        pipeline: the searched pipeline definition file.
        oracle: the search's oracle (not a worker's client).

    Returns:
        The table's text.
    """
    work_dir = Path(work_dir)
    text = table(oracle)
    (work_dir / "results.txt").write_text(text + "\n", encoding="utf-8")
    ordered = trials_in_order(oracle)
    plots.tuning_progress([(trial.trial_id, trial.score if trial.status == COMPLETED else None)
                           for trial in ordered if trial.status in (COMPLETED, "FAILED", "INVALID")],
                          oracle.objective.name, oracle.objective.direction, work_dir / "results.png")
    _hparams_logs(work_dir / "hparams", oracle, ordered)
    best = best_trial(oracle)
    if best is not None:
        (work_dir / "best.yaml").write_text(best_definition(pipeline, best), encoding="utf-8")
    return text


def _hparams_logs(folder, oracle, trials):
    """TensorBoard HParams logs: the space, then one session per finished trial with its values and
    its objective (rewritten whole each time, so a resumed search never logs a trial twice)."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hparams

    shutil.rmtree(folder, ignore_errors=True)
    name = oracle.objective.name
    keys = [entry.name for entry in oracle.hyperparameters.space]
    with tf.summary.create_file_writer(str(folder)).as_default():
        hparams.hparams_config(hparams=[hparams.HParam(key) for key in keys],
                               metrics=[hparams.Metric(name, display_name=name)])
    for trial in trials:
        if trial.status != COMPLETED:
            continue
        with tf.summary.create_file_writer(str(folder / f"trial_{trial.trial_id}")).as_default():
            hparams.hparams(space.overrides(trial.hyperparameters), trial_id=trial.trial_id)
            tf.summary.scalar(name, trial.score, step=1)
