"""A search over a definition's `tune` space on KerasTuner's engine, every trial trained by the runner.

KerasTuner's oracles choose the values (random search, Bayesian optimization,
Hyperband) and keep the search's state in `<work dir>/trials/` (`oracle.json`,
`trial_<id>/trial.json`); `DefinitionTuner.run_trial` turns a trial's values into
a complete definition and trains it with `seqapp.runner.fit` in the trial's own
run folder (`trial_<id>/run/`), so a trial is a run like any other: its
`BackupAndRestore` state lets a trial killed midway continue where it stopped
when the search is started again (KerasTuner would rerun it from scratch), and
the task says what the search optimizes (`Task.tuning_objective`).

What KerasTuner lacks is added around its oracle (`deadline_oracle`): a time
budget after which no trial starts, and, for a chief serving workers, a deadline
after which a silent worker's trial goes back to the queue (KerasTuner's chief
waits for it forever).
"""

import contextlib
import csv
import gc
import logging
import math
import re
import threading
import time
from pathlib import Path

import keras
import keras_tuner

from seqapp import runner
from seqapp import tasks
from seqapp.errors import ConfigError
from seqapp.errors import SeqappError
from seqapp.tuning import space

log = logging.getLogger("seqapp.tuning")

ORACLES = {
    "random": keras_tuner.oracles.RandomSearchOracle,
    "bayesian": keras_tuner.oracles.BayesianOptimizationOracle,
    "hyperband": keras_tuner.oracles.HyperbandOracle,
}
# KerasTuner stops a search after this many failed trials in a row: a broken setup, not a bad point.
MAX_CONSECUTIVE_FAILURES = 5
# Hyperband's reduction factor (KerasTuner's default).
HYPERBAND_FACTOR = 3


def parse_duration(text):
    """Seconds in a duration written `90s`, `30m`, `2h` or `1h30m` (a bare number is seconds).

    Args:
        text: the duration.

    Raises:
        SeqappError: when it is not one.
    """
    parts = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*", text)
    if not text.strip() or parts is None:
        raise SeqappError(f"{text!r} is not a duration (e.g. 90s, 30m, 2h, 1h30m)")
    hours, minutes, seconds = (float(part) if part else 0.0 for part in parts.groups())
    return hours * 3600 + minutes * 60 + seconds


def deadline_oracle(kind, *, time_budget=None, worker_deadline=None, **options):
    """A KerasTuner oracle of `kind` that also honours a time budget and a worker deadline.

    Args:
        kind: "random", "bayesian" or "hyperband".
        time_budget: seconds from now after which no new trial starts (the running ones finish), or None.
        worker_deadline: seconds a tuner may stay silent (no request) while it holds a trial before
            the trial is queued again for another tuner (see `expire_silent`), or None.
        **options: the oracle's own arguments (objective, max_trials, hyperparameters, seed, ...).

    Returns:
        The oracle.
    """
    base = ORACLES[kind]

    class DeadlineOracle(base):
        def __init__(self):
            super().__init__(**options)
            self.stop_at = None if time_budget is None else time.monotonic() + time_budget
            self.worker_deadline = worker_deadline
            self.heard = {}  # tuner id -> when it last asked anything
            self.last_heard = time.monotonic()

        def _hear(self, tuner_id):
            self.heard[tuner_id] = self.last_heard = time.monotonic()

        @keras_tuner.synchronized
        def create_trial(self, tuner_id):
            self._hear(tuner_id)
            out_of_time = self.stop_at is not None and time.monotonic() >= self.stop_at
            if out_of_time and tuner_id not in self.ongoing_trials:
                # What KerasTuner answers once `max_trials` is reached: this tuner stops.
                self.tuner_ids.discard(tuner_id)
                return keras_tuner.engine.trial.Trial(self.get_space(), status="STOPPED")
            return super().create_trial(tuner_id)

        @keras_tuner.synchronized
        def get_trial(self, trial_id):
            # A worker's `Heartbeat` asks for its trial: it is alive.
            for tuner_id, trial in self.ongoing_trials.items():
                if trial.trial_id == trial_id:
                    self._hear(tuner_id)
            return super().get_trial(trial_id)

        @keras_tuner.synchronized
        def end_trial(self, trial):
            for tuner_id, ongoing in self.ongoing_trials.items():
                if ongoing.trial_id == trial.trial_id:
                    self._hear(tuner_id)
            return super().end_trial(trial)

        @keras_tuner.synchronized
        def expire_silent(self):
            """Queues again the trial of every tuner silent for longer than the worker deadline and
            forgets that tuner; returns the ids of the tuners forgotten."""
            if self.worker_deadline is None:
                return []
            now, gone = time.monotonic(), []
            for tuner_id in list(self.tuner_ids):
                if now - self.heard.get(tuner_id, self.last_heard) > self.worker_deadline:
                    trial = self.ongoing_trials.pop(tuner_id, None)
                    if trial is not None:
                        self._retry_queue.append(trial.trial_id)
                    self.tuner_ids.discard(tuner_id)
                    gone.append(tuner_id)
            if gone:
                self.save()
            return gone

    return DeadlineOracle()


class Heartbeat:
    """While a trial runs (data preparation and evaluation included, not only epochs), tells the
    oracle every `seconds` from a thread that this tuner holds it, so a worker alive through a long
    epoch never outlives the chief's deadline and a dead one is noticed within it.

    Args:
        oracle: the tuner's oracle (an `OracleClient` on a worker).
        trial_id: the trial being trained.
        seconds: the interval between two beats.

    Example:
    >>> with Heartbeat(oracle, trial.trial_id, seconds=15.0):
    ...     train(trial)
    """

    def __init__(self, oracle, trial_id, seconds):
        self.oracle = oracle
        self.trial_id = trial_id
        self.seconds = seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"seqapp-heartbeat-{trial_id}", daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._thread.join()

    def _beat(self):
        while not self._stop.wait(self.seconds):
            try:
                self.oracle.get_trial(self.trial_id)
            except Exception as error:  # noqa: BLE001 - the chief restarting: the next beat tries again
                log.warning("heartbeat of trial %s not delivered: %s", self.trial_id, error)


class DefinitionTuner(keras_tuner.Tuner):
    """Tunes a pipeline definition: each trial is the definition with the trial's values, trained by
    `seqapp.runner.fit` in `<work dir>/trials/trial_<id>/run/`.

    Args:
        pipeline: the pipeline definition file holding the `tune` section.
        oracle: a KerasTuner oracle over `space.hyperparameters` of it (`deadline_oracle`).
        work_dir: the search's folder; an existing search there is continued.
        verbose: Keras `fit` verbosity of the trials.
        heartbeat: seconds between a worker's `Heartbeat`s to the chief while it trains a trial, or
            None (a search alone, or the chief).
        executions_per_trial: runs of each trial's definition, with seeds `seed`, `seed + 1`, ...;
            the trial scores the mean of their objectives (KerasTuner's `executions_per_trial`), so
            a lucky seed on a small validation set picks no trial.
    """

    def __init__(self, pipeline, oracle, work_dir, *, verbose=2, heartbeat=None, executions_per_trial=1):
        if executions_per_trial < 1:
            raise SeqappError(f"--executions-per-trial {executions_per_trial}: expected 1 or more")
        self.pipeline = Path(pipeline)
        self.verbose = verbose
        self.heartbeat = heartbeat
        super().__init__(oracle, directory=str(work_dir), project_name="trials", overwrite=False,
                         executions_per_trial=executions_per_trial)

    def run_dir(self, trial_id, execution=0):
        """The run folder of a trial's execution: `run/` for the first, `run_<n>/` for the others."""
        return Path(self.get_trial_dir(trial_id)) / ("run" if execution == 0 else f"run_{execution}")

    def run_trial(self, trial, *args, **kwargs):
        """Trains the trial's definition once per execution and returns, for each, its metrics at the
        epoch where its objective was best (KerasTuner averages them). An execution that finished
        before the search was killed is read back, not trained again.

        Raises:
            keras_tuner.errors.FailedTrialError: the values make an invalid definition, or the loss
                became NaN; KerasTuner records the trial as failed with this reason and goes on.
        """
        values = trial.hyperparameters.values
        # Hyperband gives each trial its number of epochs.
        extra = {"train.epochs": values["tuner/epochs"]} if "tuner/epochs" in values else None
        try:
            definition = space.definition_of(self.pipeline, trial.hyperparameters, extra)
        except ConfigError as error:
            raise keras_tuner.errors.FailedTrialError(f"invalid definition: {error}") from None
        task = tasks.of(definition)
        name, _ = task.tuning_objective()

        def callbacks(inputter):
            return [*task.tuning_callbacks(inputter), keras.callbacks.TerminateOnNaN()]

        alive = contextlib.nullcontext() if self.heartbeat is None else \
            Heartbeat(self.oracle, trial.trial_id, self.heartbeat)
        results = []
        with alive:
            for execution in range(self.executions_per_trial):
                run_dir = self.run_dir(trial.trial_id, execution)
                if not _finished(run_dir):
                    keras.backend.clear_session()  # the previous run's models and graphs
                    gc.collect()
                    seeded = definition.model_copy(update={"seed": definition.seed + execution})
                    runner.fit(seeded, run_dir, verbose=self.verbose, more_callbacks=callbacks)
                results.append(_best_epoch(run_dir / "history.csv", name, self.oracle.objective.direction))
        return results


def _finished(run_dir):
    """Whether a run folder holds a run that trained to its end (`runner.fit` writes `training.json`
    after `BackupAndRestore` has removed its backup; a run killed midway still has the backup)."""
    return (run_dir / "training.json").exists() and not (run_dir / "backup").exists()


def _best_epoch(history_csv, objective, direction):
    """The metrics of the epoch with the best objective in a run's `history.csv` (every epoch, those
    before a resume included)."""
    with open(history_csv, newline="") as file:
        rows = [{key: float(value) for key, value in row.items() if value not in ("", None)}
                for row in csv.DictReader(file)]
    for row in rows:
        if any(math.isnan(value) for value in row.values()):
            raise keras_tuner.errors.FailedTrialError(f"NaN at epoch {int(row['epoch']) + 1}: {row}")
    if not rows or objective not in rows[0]:
        raise keras_tuner.errors.FailedTrialError(f"no {objective} in {history_csv}")
    best = (max if direction == "max" else min)(rows, key=lambda row: row[objective])
    return {key: value for key, value in best.items() if key != "epoch"}
