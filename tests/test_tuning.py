"""Tuning (`seqapp tune`): search spaces in definitions, searches on KerasTuner's engine, resume,
results and distributed search."""

import functools
from pathlib import Path

import keras_tuner
import pytest
import yaml

from seqapp import config
from seqapp.errors import ConfigError
from seqapp.errors import SeqappError
from seqapp.tuning import search
from seqapp.tuning import space

PIPELINES = sorted(Path(__file__).resolve().parents[1].glob("pipelines/*.yaml"))


def _value(definition, dotted):
    return functools.reduce(getattr, dotted.split("."), definition)


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.stem)
def test_every_shipped_space_samples_valid_definitions(path):
    definition = config.load_definition(path)
    hp = space.hyperparameters(definition)
    oracle = keras_tuner.oracles.RandomSearchOracle(objective=keras_tuner.Objective("score", "max"),
                                                    max_trials=50, hyperparameters=hp, seed=3)
    drawn = set()
    for trial in range(12):
        sampled = hp.copy()
        sampled.values = oracle.populate_space(str(trial))["values"]
        trial_definition = space.definition_of(path, sampled)
        assert trial_definition.tune is None
        for key, value in space.overrides(sampled).items():
            assert _value(trial_definition, key) == value
        for key, tuned in definition.tune:  # an inactive conditional key keeps the file's value
            if key not in space.overrides(sampled):
                assert tuned.when is not None
                assert _value(trial_definition, key) == _value(definition, key)
        drawn.add(tuple(sorted(space.overrides(sampled).items())))
    assert len(drawn) > 1


@pytest.mark.parametrize("tuner", ["random", "bayesian", "hyperband"])
@pytest.mark.parametrize("seed", [0, 7])
def test_a_seed_draws_the_same_trials_on_every_run(tuner, seed):
    # KerasTuner alone reads seed 0 as none and draws its own.
    definition = config.load_definition(PIPELINES[0].parent / "sentiment_bilstm.yaml")

    def first_values():
        oracle = search.search_oracle(definition, tuner, max_trials=5, time_budget=None, seed=seed,
                                      worker_deadline=60.0)
        return [oracle.populate_space(str(trial))["values"] for trial in range(3)]

    assert first_values() == first_values()


def test_a_negative_seed_is_refused_naming_the_flag():
    definition = config.load_definition(PIPELINES[0].parent / "sentiment_bilstm.yaml")
    with pytest.raises(SeqappError, match="--seed -1"):
        search.search_oracle(definition, "random", max_trials=5, time_budget=None, seed=-1, worker_deadline=60.0)


def _raw(tune):
    raw = yaml.safe_load((PIPELINES[0].parent / "sentiment_user_csv.yaml").read_text())
    return {**raw, "tune": tune}


def test_a_space_naming_a_key_the_definition_lacks_is_a_config_error():
    with pytest.raises(ConfigError, match=r"x.yaml: tune.model.unitz: the classification definition has no key"):
        config.validate(_raw({"model.unitz": {"type": "int", "min": 1, "max": 4}}), source="x.yaml")
    with pytest.raises(ConfigError, match=r"tune.decode.beam_size"):  # a translation key
        config.validate(_raw({"decode.beam_size": {"type": "int", "min": 1, "max": 4}}), source="x.yaml")
    with pytest.raises(ConfigError, match=r"tune.model: "):  # a whole section is not a key
        config.validate(_raw({"model": {"type": "boolean"}}), source="x.yaml")


def test_a_condition_names_a_key_tuned_before_it():
    with pytest.raises(ConfigError, match=r"tune.model.kernel_size.when: 'model.family' must be a tuned key"):
        config.validate(_raw({"model.kernel_size": {"type": "int", "min": 2, "max": 5,
                                                    "when": {"model.family": ["tcn"]}}}), source="x.yaml")


def test_a_conditional_key_is_tuned_only_under_its_parent_value():
    definition = config.validate(_raw({
        "model.family": {"type": "choice", "values": ["bilstm", "tcn"]},
        "model.kernel_size": {"type": "int", "min": 4, "max": 5, "when": {"model.family": ["tcn"]}},
    }), source="x.yaml")
    hp = space.hyperparameters(definition)
    hp.values.update({"model.family": "bilstm", "model.kernel_size": 5})
    assert space.overrides(hp) == {"model.family": "bilstm"}
    hp.values["model.family"] = "tcn"
    assert space.overrides(hp) == {"model.family": "tcn", "model.kernel_size": 5}


def test_a_definition_with_a_space_stays_hashable_and_round_trips():
    definition = config.validate(_raw({"train.learning_rate": {"type": "float", "min": 0.0001, "max": 0.01,
                                                               "sampling": "log"}}), source="x.yaml")
    hash(definition)  # definitions are cache keys
    dumped = definition.model_dump(mode="json")["tune"]
    assert dumped == {"train.learning_rate": {"type": "float", "min": 0.0001, "max": 0.01, "sampling": "log"}}
    assert config.validate(_raw(dumped), source="x.yaml").tune == definition.tune


# -- searches


def _tiny_pipeline(folder, tune, **sections):
    """The tiny sentiment definition (`tiny_sentiment`) with a `tune` section, as a pipeline file."""
    import tiny_sentiment

    sections.setdefault("train", {"epochs": 3, "early_stopping_patience": 5})
    definition = tiny_sentiment.definition(folder, **sections)
    raw = {**definition.model_dump(mode="json", exclude={"origin"}), "tune": tune}
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


_SMALL_SPACE = {"model.units": {"type": "int", "min": 4, "max": 16, "step": 4},
                "train.learning_rate": {"type": "float", "min": 0.001, "max": 0.02, "sampling": "log"}}


def _trials(work_dir):
    """`{trial id: trial.json}` of a search folder."""
    import json

    return {path.parent.name.removeprefix("trial_"): json.loads(path.read_text())
            for path in (work_dir / "trials").glob("trial_*/trial.json")}


def _epochs(work_dir, trial_id, run="run"):
    """The epochs a trial's run trained, from its `history.csv` (every process's)."""
    import csv

    with open(work_dir / "trials" / f"trial_{trial_id}" / run / "history.csv") as file:
        return [int(row["epoch"]) for row in csv.DictReader(file)]


@pytest.mark.parametrize("tuner", ["random", "bayesian", "hyperband"])
def test_a_search_records_trials_results_and_a_best_definition_that_trains(tuner, tmp_path, seqapp_cache_dir):
    from seqapp import runner
    from seqapp.tuning import search

    pipeline = _tiny_pipeline(tmp_path, _SMALL_SPACE)
    table = search.tune(pipeline, tmp_path / "search", tuner=tuner, max_trials=3, seed=1, verbose=0)
    trials = _trials(tmp_path / "search")
    assert len(trials) == 3 and {t["status"] for t in trials.values()} == {"COMPLETED"}
    for trial_id, trial in trials.items():
        assert f"\n{trial_id}" in table
        epochs = _epochs(tmp_path / "search", trial_id)
        assert epochs == list(range(len(epochs)))
        if tuner == "hyperband":  # each trial trains the epochs its bracket gives it
            assert len(epochs) == trial["hyperparameters"]["values"]["tuner/epochs"]
    assert (tmp_path / "search" / "results.png").stat().st_size > 0
    assert len(list((tmp_path / "search" / "hparams").glob("trial_*/events.out.tfevents.*"))) == 3
    best = config.load_definition(tmp_path / "search" / "best.yaml")
    best_id = table.split("*")[0].splitlines()[-1]
    assert best.model.units == trials[best_id]["hyperparameters"]["values"]["model.units"]
    metrics = runner.train(best, tmp_path / "best_run", verbose=0)
    assert set(metrics) == {"validation", "test"}


def test_each_execution_of_a_trial_trains_at_its_own_seed_and_the_trial_scores_their_mean(tmp_path,
                                                                                          seqapp_cache_dir):
    import csv

    from seqapp.tuning import search

    pipeline = _tiny_pipeline(tmp_path, _SMALL_SPACE, train={"epochs": 2, "early_stopping_patience": 5})
    search.tune(pipeline, tmp_path / "search", max_trials=1, seed=1, executions_per_trial=2, verbose=0)
    seed = config.load_definition(pipeline).seed
    ((trial_id, trial),) = _trials(tmp_path / "search").items()
    assert trial["status"] == "COMPLETED"
    folder = tmp_path / "search" / "trials" / f"trial_{trial_id}"
    best = []  # each run's epoch of best validation accuracy
    for run, run_seed in (("run", seed), ("run_1", seed + 1)):
        assert config.load_definition(folder / run / "definition.yaml").seed == run_seed
        with open(folder / run / "history.csv", newline="") as file:
            best.append(max(csv.DictReader(file), key=lambda row: float(row["val_accuracy"])))
    assert best[0]["val_loss"] != best[1]["val_loss"]  # two seeds, two runs
    reported = {name: metric["observations"][0]["value"][0] for name, metric in trial["metrics"]["metrics"].items()}
    for name in ("val_accuracy", "val_loss"):
        assert reported[name] == pytest.approx((float(best[0][name]) + float(best[1][name])) / 2)
    assert trial["score"] == reported["val_accuracy"]


def test_executions_per_trial_below_one_is_refused_naming_the_flag(tmp_path):
    from seqapp.errors import SeqappError
    from seqapp.tuning import search

    with pytest.raises(SeqappError, match="--executions-per-trial 0"):
        search.tune(_tiny_pipeline(tmp_path, _SMALL_SPACE), tmp_path / "search", executions_per_trial=0)


def test_a_failing_trial_is_recorded_with_its_reason_and_the_search_goes_on(tmp_path, seqapp_cache_dir):
    from seqapp.tuning import search

    space_with_failures = {
        # "nonsense" is no pooling: that trial's definition is invalid. An infinite learning rate makes NaN.
        "model.pooling": {"type": "choice", "values": ["max", "nonsense"]},
        "train.learning_rate": {"type": "choice", "values": [0.01, float("inf")]},
    }
    pipeline = _tiny_pipeline(tmp_path, space_with_failures, train={"epochs": 2, "clipnorm": None})
    table = search.tune(pipeline, tmp_path / "search", tuner="random", max_trials=4, seed=2, verbose=0)
    trials = _trials(tmp_path / "search")
    assert len(trials) == 4  # the search went on past failures
    by_values = {(t["hyperparameters"]["values"]["model.pooling"], t["hyperparameters"]["values"]["train.learning_rate"]): t
                 for t in trials.values()}
    assert by_values[("max", 0.01)]["status"] == "COMPLETED"
    assert by_values[("nonsense", 0.01)]["status"] == "FAILED"
    assert "invalid definition" in by_values[("nonsense", 0.01)]["message"]
    assert "model.pooling" in by_values[("nonsense", 0.01)]["message"]
    assert by_values[("max", float("inf"))]["status"] == "FAILED"
    assert "NaN" in by_values[("max", float("inf"))]["message"]
    assert "reason: invalid definition: " in table and "reason: NaN at epoch" in table
    best = config.load_definition(tmp_path / "search" / "best.yaml")  # only a completed trial is best
    assert (best.model.pooling, best.train.learning_rate) == ("max", 0.01)


def test_the_time_budget_stops_the_search_after_the_running_trial(tmp_path, seqapp_cache_dir):
    import json
    import time

    from seqapp.tuning import search

    pipeline = _tiny_pipeline(tmp_path, _SMALL_SPACE)
    started = time.monotonic()
    search.tune(pipeline, tmp_path / "search", max_trials=50, time_budget=6.0, seed=1, verbose=0)
    elapsed = time.monotonic() - started
    trials = _trials(tmp_path / "search")
    assert 1 <= len(trials) < 50
    assert {t["status"] for t in trials.values()} == {"COMPLETED"}  # none cut off midway
    longest = max(json.loads((tmp_path / "search" / "trials" / f"trial_{i}" / "run" / "training.json").read_text())
                  ["wall_seconds"] for i in trials)
    # No trial starts after the budget: the search ends within one trial (and its setup) of it.
    assert elapsed < 6.0 + 3 * longest + 20


@pytest.mark.parametrize("task_name", ["translation", "captioning"])
def test_a_three_trial_search_of_a_generating_task_optimizes_validation_bleu(task_name, tmp_path,
                                                                             seqapp_cache_dir, shared_data_dir):
    from seqapp import tasks
    from seqapp.tuning import search

    raw = tasks.get(task_name).demo_definition(small=True)
    raw["tune"] = {"train.learning_rate": {"type": "float", "min": 0.001, "max": 0.01, "sampling": "log"},
                   "model.dropout": {"type": "choice", "values": [0.0, 0.1]}}
    pipeline = tmp_path / f"{task_name}.yaml"
    pipeline.write_text(yaml.safe_dump(raw))
    table = search.tune(pipeline, tmp_path / "search", max_trials=3, seed=4, verbose=0)
    objective, direction = tasks.get(task_name).tuning_objective()
    assert direction == "max" and objective.startswith("val_bleu")
    assert table.splitlines()[0].split()[2] == objective
    trials = _trials(tmp_path / "search")
    assert {t["status"] for t in trials.values()} == {"COMPLETED"} and len(trials) == 3
    for trial in trials.values():  # the decoded metric reached the oracle as the trial's score
        assert trial["score"] == trial["metrics"]["metrics"][objective]["observations"][0]["value"][0]
    assert config.load_definition(tmp_path / "search" / "best.yaml").task == task_name


# -- killed and resumed searches, one process or several


def _tune_command(pipeline, work_dir, *args):
    import sys

    return [sys.executable, "-m", "seqapp", "tune", str(pipeline), "--work-dir", str(work_dir), "--seed", "1", *args]


def _wait_for(condition, timeout, what):
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _history_rows(work_dir, trial_id, run="run"):
    path = work_dir / "trials" / f"trial_{trial_id}" / run / "history.csv"
    return len(path.read_text().splitlines()) - 1 if path.exists() else 0


# Small batches (many steps) make an epoch long enough to kill a trial between two of its epochs.
_SLOW_EPOCHS = {"train": {"epochs": 10, "early_stopping_patience": 20}, "pipeline": {"tokens_per_batch": 8}}


def test_a_search_killed_mid_trial_resumes_that_trial_and_repeats_no_finished_one(tmp_path, seqapp_cache_dir):
    """Two executions per trial; killed in trial 1's second execution, the search trains neither
    trial 0 nor trial 1's first execution again and continues the second from its backup."""
    import re
    import signal
    import subprocess

    slow = {**_SLOW_EPOCHS, "train": {"epochs": 5, "early_stopping_patience": 20}}
    pipeline = _tiny_pipeline(tmp_path, _SMALL_SPACE, **slow)
    work_dir = tmp_path / "search"
    command = _tune_command(pipeline, work_dir, "--max-trials", "3", "--executions-per-trial", "2")
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: _history_rows(work_dir, "1", "run_1") >= 2, 300, "two epochs of trial 1's second run")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    before = _trials(work_dir)
    assert before["0"]["status"] == "COMPLETED" and before["1"]["status"] == "RUNNING"
    runs_done = (("0", "run"), ("0", "run_1"), ("1", "run"))
    finished = {(trial_id, run): _epochs(work_dir, trial_id, run) for trial_id, run in runs_done}
    assert all(epochs == list(range(5)) for epochs in finished.values())
    done_before_kill = _epochs(work_dir, "1", "run_1")
    assert 2 <= len(done_before_kill) < 5

    second = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    after = _trials(work_dir)
    assert sorted(after) == ["0", "1", "2"] and {t["status"] for t in after.values()} == {"COMPLETED"}
    assert after["0"] == before["0"]  # not trained again
    assert {(trial_id, run): _epochs(work_dir, trial_id, run) for trial_id, run in runs_done} == finished
    # Trial 1's second run went on from its backup: every epoch once, those before the kill not repeated.
    assert _epochs(work_dir, "1", "run_1") == list(range(5))
    assert re.findall(r"Epoch \d+/5", second.stdout)[0] == f"Epoch {len(done_before_kill) + 1}/5"
    # Trial 2's two runs from scratch, and no other: trial 1's first run was read back, not retrained
    # (its history alone could not tell: a rerun rewrites the same epochs).
    assert second.stdout.count("Epoch 1/5") == 2


def test_keras_tuner_grpc_code_imports_with_the_pinned_protobuf():
    """KerasTuner's protos were generated for protobuf 4.22 (v4) and 3.20 (v3); it falls back to v3
    silently when v4 fails to import. With the pinned protobuf, v4 must load and round-trip."""
    import google.protobuf
    from keras_tuner.src import protos
    from keras_tuner.src.distribute import oracle_chief  # noqa: F401 (imports the gRPC service code)
    from keras_tuner.src.distribute import oracle_client  # noqa: F401

    assert int(google.protobuf.__version__.split(".")[0]) >= 5
    assert protos.get_service_grpc().__name__ == "keras_tuner.src.protos.v4.service_pb2_grpc"
    hp = keras_tuner.HyperParameters()
    hp.Choice("model.units", [8, 16])
    trial = keras_tuner.engine.trial.Trial(hp, trial_id="3", status="RUNNING")
    again = keras_tuner.engine.trial.Trial.from_proto(
        protos.get_proto().Trial.FromString(trial.to_proto().SerializeToString()))
    assert (again.trial_id, again.status, again.hyperparameters.values) == ("3", "RUNNING", {"model.units": 8})


def _oracle_state(work_dir):
    import json

    path = work_dir / "trials" / "oracle.json"
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):  # not written yet, or being rewritten
        return {}


def _start(pipeline, work_dir, tuner_id, port, *args):
    import os
    import subprocess

    env = {**os.environ, "KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": str(port),
           "KERASTUNER_TUNER_ID": tuner_id}
    role = "--chief" if tuner_id == "chief" else "--worker"
    log = open(work_dir.parent / f"{tuner_id}.log", "a")
    return subprocess.Popen(_tune_command(pipeline, work_dir, role, *args), env=env, stdout=log, stderr=log)


def _kill_mid_trial(work_dir, process, tuner_id):
    """SIGKILLs a worker once its trial has finished an epoch; returns that trial's id."""
    import signal

    def trial_of_worker():
        return _oracle_state(work_dir).get("ongoing_trials", {}).get(tuner_id)

    _wait_for(lambda: trial_of_worker() is not None and _history_rows(work_dir, trial_of_worker()) >= 1, 300,
              f"{tuner_id} to train an epoch")
    trial_id = trial_of_worker()
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert _trials(work_dir)[trial_id]["status"] == "RUNNING"
    return trial_id


@pytest.mark.parametrize("worker_returns", [True, False], ids=["restarted", "gone_for_good"])
def test_a_chief_and_two_workers_finish_a_search_when_a_worker_is_killed(worker_returns, tmp_path,
                                                                         seqapp_cache_dir):
    from seqapp.tuning import distributed

    pipeline = _tiny_pipeline(tmp_path, _SMALL_SPACE, **_SLOW_EPOCHS)
    work_dir, port = tmp_path / "search", distributed.free_port()
    options = ("--max-trials", "4", "--worker-deadline", "600s" if worker_returns else "8s")
    chief = _start(pipeline, work_dir, "chief", port, *options)
    workers = {tuner_id: _start(pipeline, work_dir, tuner_id, port, *options) for tuner_id in ("tuner0", "tuner1")}
    try:
        killed_trial = _kill_mid_trial(work_dir, workers["tuner1"], "tuner1")
        if worker_returns:  # the same id takes its trial back
            workers["tuner1"] = _start(pipeline, work_dir, "tuner1", port, *options)
        for tuner_id, process in workers.items():
            if worker_returns or tuner_id == "tuner0":
                assert process.wait(timeout=600) == 0
        assert chief.wait(timeout=120) == 0  # a worker gone for good does not hang the chief
    finally:
        for process in (chief, *workers.values()):
            if process.poll() is None:
                process.kill()
    trials = _trials(work_dir)
    assert sorted(trials) == ["0", "1", "2", "3"] and {t["status"] for t in trials.values()} == {"COMPLETED"}
    for trial_id in trials:  # no trial trained twice; the killed one went on from its backup
        assert _epochs(work_dir, trial_id) == list(range(10))
    log = (tmp_path / "chief.log").read_text()
    assert ("silent for over 8 s" in log) != worker_returns
    if not worker_returns:  # tuner0 took the trial over
        assert "Epoch 1/10" in (tmp_path / "tuner0.log").read_text()
        assert killed_trial in _oracle_state(work_dir)["end_order"]
    assert (work_dir / "best.yaml").exists() and "COMPLETED" in (work_dir / "results.txt").read_text()


def test_workers_flag_runs_a_chief_and_workers_on_this_machine(tmp_path, seqapp_cache_dir):
    import subprocess

    pipeline = _tiny_pipeline(tmp_path, _SMALL_SPACE, train={"epochs": 2, "early_stopping_patience": 5})
    done = subprocess.run(_tune_command(pipeline, tmp_path / "search", "--workers", "2", "--max-trials", "3"),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    trials = _trials(tmp_path / "search")
    assert sorted(trials) == ["0", "1", "2"] and {t["status"] for t in trials.values()} == {"COMPLETED"}
    assert "val_accuracy" in done.stdout and (tmp_path / "search" / "best.yaml").exists()



def test_a_worker_heartbeat_beats_while_its_trial_runs_and_stops_after():
    import time

    from seqapp.tuning.tuner import Heartbeat

    class Oracle:
        def __init__(self):
            self.asked = []

        def get_trial(self, trial_id):
            self.asked.append(trial_id)
            if len(self.asked) == 2:
                raise RuntimeError("chief restarting")  # a lost beat does not stop the next ones

    oracle = Oracle()
    with Heartbeat(oracle, "7", seconds=0.05):
        time.sleep(0.6)  # an epoch longer than the interval: the chief still hears the worker
    beats = len(oracle.asked)
    assert beats >= 4 and set(oracle.asked) == {"7"}
    time.sleep(0.2)
    assert len(oracle.asked) == beats  # a finished trial is not kept alive
