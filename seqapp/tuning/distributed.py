"""A search shared by several processes on KerasTuner's chief/worker protocol.

Each process runs `seqapp tune` with the same pipeline, folder and options;
the environment says who it is (KerasTuner's own variables):

    KERASTUNER_ORACLE_IP, KERASTUNER_ORACLE_PORT   where the chief serves the oracle
    KERASTUNER_TUNER_ID                            "chief", or a worker's own id ("tuner0", ...)

A worker restarted with the same id gets its unfinished trial back, and the
trial resumes from its BackupAndRestore state when the workers share the search
folder. `tune_locally` runs a chief and N workers on this machine.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

from seqapp.errors import SeqappError
from seqapp.tuning import search

_VARIABLES = ("KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID")


def take_role(*, chief=False, worker=False):
    """Checks KerasTuner's variables for `--chief` or `--worker` (a chief's id defaults to "chief").

    Args:
        chief: this process serves the oracle.
        worker: this process trains the chief's trials.

    Raises:
        SeqappError: when a variable the role needs is missing or says another role.
    """
    if not (chief or worker):
        if "KERASTUNER_ORACLE_IP" in os.environ:
            raise SeqappError("KERASTUNER_ORACLE_IP is set: say --chief or --worker (or unset it)")
        return
    if chief:
        os.environ.setdefault("KERASTUNER_TUNER_ID", "chief")
    missing = [name for name in _VARIABLES if not os.environ.get(name)]
    if missing:
        raise SeqappError(f"{'--chief' if chief else '--worker'} needs {', '.join(missing)} in the environment")
    if search.role() != ("chief" if chief else "worker"):
        raise SeqappError(f"KERASTUNER_TUNER_ID={os.environ['KERASTUNER_TUNER_ID']} does not fit "
                          f"{'--chief' if chief else '--worker'} (a chief's id contains 'chief', a worker's does not)")


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def command(pipeline, work_dir, role, *, tuner, max_trials, time_budget, seed, worker_deadline,
            executions_per_trial=1):
    """The `seqapp tune` command line of one process of a shared search."""
    args = [sys.executable, "-m", "seqapp", "tune", str(pipeline), f"--{role}", "--work-dir", str(work_dir),
            "--tuner", tuner, "--max-trials", str(max_trials), "--seed", str(seed),
            "--worker-deadline", f"{worker_deadline}s", "--executions-per-trial", str(executions_per_trial)]
    return args + (["--time-budget", f"{time_budget}s"] if time_budget is not None else [])


def tune_locally(pipeline, work_dir, *, workers, **options):
    """Runs a chief and `workers` workers (ids tuner0, tuner1, ...) on 127.0.0.1 and waits for them.

    Args:
        pipeline: the pipeline definition file.
        work_dir: the search's folder, shared by every process.
        workers: how many workers.
        **options: `search.tune`'s options (tuner, max_trials, time_budget, seed, worker_deadline,
            executions_per_trial).

    Returns:
        The chief's results table (text).

    Raises:
        SeqappError: when the chief or a worker fails.
    """
    if workers < 1:
        raise SeqappError("--workers needs at least 1")
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    base = {**os.environ, "KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": str(free_port())}
    with open(work_dir / "chief.log", "a") as log:  # the workers' trials are what a user watches
        chief = subprocess.Popen(command(pipeline, work_dir, "chief", **options),
                                 env={**base, "KERASTUNER_TUNER_ID": "chief"}, stdout=log, stderr=log)
        pool = [subprocess.Popen(command(pipeline, work_dir, "worker", **options),
                                 env={**base, "KERASTUNER_TUNER_ID": f"tuner{index}"})
                for index in range(workers)]
        codes = [process.wait() for process in pool]
        chief.wait()
    if chief.returncode or any(codes):
        raise SeqappError(f"the shared search failed (chief exit {chief.returncode}, workers {codes}; "
                          f"see {work_dir / 'chief.log'})")
    return (work_dir / "results.txt").read_text(encoding="utf-8").rstrip()
