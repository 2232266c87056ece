"""What every benchmark records beside its figures: machine, date, command, versions."""

import csv
import datetime
import json
import os
import platform
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def environment():
    import tensorflow as tf
    import keras

    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:]),
        "machine": {"platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(),
                    "gpus": len(tf.config.list_physical_devices("GPU"))},
        "versions": {"python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__},
    }


def write(name, figures):
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({**figures, "environment": environment()}, indent=2) + "\n")
    print(f"wrote {path}")
    return path


def training_history(work_dir):
    """The per-epoch rows (Keras' CSVLogger) that `runner.train` writes to `<work_dir>/history.csv`."""
    with open(Path(work_dir) / "history.csv") as stream:
        return list(csv.DictReader(stream))


def data_dir():
    value = os.environ.get("SEQAPP_DATA_DIR")
    if not value:
        raise SystemExit("set SEQAPP_DATA_DIR to the folder holding the datasets (e.g. ../shared/data)")
    return Path(value)


def throughput(call, batches, *, batch_size, seconds):
    """Items/s of `call(batch)` over `batches` (cycled), for at least `seconds` after one warm-up call."""
    import itertools
    import time

    call(batches[0])
    done, started = 0, time.perf_counter()
    for batch in itertools.cycle(batches[1:] or batches):
        call(batch)
        done += batch_size
        if time.perf_counter() - started >= seconds:
            break
    return done / (time.perf_counter() - started)
