"""`seqapp tune`: one search, in one process or as one process of a chief/worker search.

KerasTuner's protocol decides the role from the environment: no
`KERASTUNER_ORACLE_IP` is a search alone; with it, `KERASTUNER_TUNER_ID`
containing "chief" holds the oracle and serves it over gRPC (it never trains),
any other id is a worker that asks the chief for trials and trains them.
"""

import os
import time
from concurrent import futures

import keras_tuner

from seqapp import config
from seqapp import tasks
from seqapp.errors import SeqappError
from seqapp.tuning import results
from seqapp.tuning import space
from seqapp.tuning.tuner import HYPERBAND_FACTOR
from seqapp.tuning.tuner import MAX_CONSECUTIVE_FAILURES
from seqapp.tuning.tuner import ORACLES
from seqapp.tuning.tuner import DefinitionTuner
from seqapp.tuning.tuner import deadline_oracle

# How often the chief looks for silent workers and for the end of the search.
_CHIEF_POLL_SECONDS = 1.0
# The longest pause between two heartbeats of a worker.
HEARTBEAT_MAX_SECONDS = 60.0


def role():
    """"alone", "chief" or "worker", from KerasTuner's environment variables."""
    from keras_tuner.src.distribute import utils

    if not utils.has_chief_oracle():
        return "alone"
    return "chief" if utils.is_chief_oracle() else "worker"


def tune(pipeline, work_dir, *, tuner="random", max_trials=10, time_budget=None, seed=0, worker_deadline=600.0,
         executions_per_trial=1, verbose=2):
    """Searches the `tune` space of a pipeline definition, or continues the search in `work_dir`.

    Args:
        pipeline: the pipeline definition file.
        work_dir: the search's folder (`trials/`, results, `best.yaml`); a search already there is
            continued: finished trials are kept, the interrupted one resumes from its backup.
        tuner: "random", "bayesian" or "hyperband" (Hyperband's largest budget is `train.epochs`).
        max_trials: the most trials in all (raise it to extend a finished search).
        time_budget: seconds after which no trial starts, or None.
        seed: the oracle's seed (the trials train with the definition's own `seed`).
        worker_deadline: seconds the chief waits for a silent worker before queuing its trial again,
            and for any worker at all before it gives up; a worker beats every quarter of it (at
            most every minute) while it holds a trial.
        executions_per_trial: runs of each trial (seeds `seed`, `seed + 1`, ... of the definition); the
            trial scores their mean objective.
        verbose: Keras `fit` verbosity of the trials.

    Returns:
        The results table (text), or None in a worker.
    """
    oracle = search_oracle(config.load_definition(pipeline), tuner, max_trials=max_trials, time_budget=time_budget,
                           seed=seed, worker_deadline=worker_deadline)
    current = role()
    # A worker beats a few times per deadline: one late beat never costs it its trial.
    heartbeat = min(HEARTBEAT_MAX_SECONDS, worker_deadline / 4) if current == "worker" else None
    searcher = DefinitionTuner(pipeline, oracle, work_dir, verbose=verbose, heartbeat=heartbeat,
                               executions_per_trial=executions_per_trial)
    if current == "worker":
        searcher.search()
        return None
    if current == "chief":
        serve(searcher)
    else:
        searcher.search()
    return results.write(work_dir, pipeline, searcher.oracle)


def search_oracle(definition, tuner, *, max_trials, time_budget, seed, worker_deadline):
    """The oracle of a search over `definition`'s `tune` space (arguments as `tune`'s).

    Raises:
        SeqappError: an unknown tuner, or a negative seed.
    """
    if tuner not in ORACLES:
        raise SeqappError(f"--tuner {tuner}: expected {', '.join(ORACLES)}")
    if seed < 0:
        raise SeqappError(f"--seed {seed}: expected 0 or more")
    objective, direction = tasks.of(definition).tuning_objective()
    options = {
        "objective": keras_tuner.Objective(objective, direction),
        "hyperparameters": space.hyperparameters(definition),
        # KerasTuner takes a seed of 0 for none and draws one at random (`seed or randint`), so seed 0
        # would search differently on every run: every seed is shifted by one.
        "seed": seed + 1,
        "allow_new_entries": False,
        "max_consecutive_failed_trials": MAX_CONSECUTIVE_FAILURES,
    }
    if tuner == "hyperband":
        options.update(max_epochs=definition.train.epochs, factor=HYPERBAND_FACTOR)
    oracle = deadline_oracle(tuner, time_budget=time_budget, worker_deadline=worker_deadline, **options)
    # Set after construction: Hyperband takes no `max_trials` argument, yet every oracle stops there.
    oracle.max_trials = max_trials
    return oracle


def serve(searcher):
    """The chief: serves the oracle to the workers until the search has ended and every worker has
    left, or until no worker has asked anything for `worker_deadline` seconds (KerasTuner's own
    server waits forever for a worker that died, #915). A silent worker's trial goes back to the
    queue, for another worker or for the next run of the search.

    Args:
        searcher: the chief's `DefinitionTuner` (its oracle a `deadline_oracle`).
    """
    import grpc
    from keras_tuner.src import protos
    from keras_tuner.src.distribute import oracle_chief

    oracle = searcher.oracle
    searcher.save()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    servicer = oracle_chief.OracleServicer(oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    address = f"{os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}"
    if not server.add_insecure_port(address):
        raise SeqappError(f"the chief cannot listen on {address}")
    server.start()
    try:
        while True:
            time.sleep(_CHIEF_POLL_SECONDS)
            for tuner_id in oracle.expire_silent():
                print(f"worker {tuner_id} silent for over {oracle.worker_deadline:.0f} s: its trial is queued again",
                      flush=True)
            idle = not oracle.ongoing_trials and not oracle.tuner_ids
            if idle and servicer.stop_triggered:
                break
            if idle and time.monotonic() - oracle.last_heard > oracle.worker_deadline:
                print(f"no worker for {oracle.worker_deadline:.0f} s: the chief stops (run it again to continue)",
                      flush=True)
                break
    finally:
        server.stop(grace=5)
        oracle.save()
