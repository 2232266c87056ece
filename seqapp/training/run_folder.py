"""A run's folder, written by one process only.

When several processes train one model (multi-worker `tf.distribute`, or
tuning workers), only the chief writes the run folder; every other process
writes what it must (checkpoints its callbacks need, its own backup) into a
private scratch folder, as TensorFlow's multi-worker guide advises, so the
processes never overwrite one another's files.
"""

import json
import os
import shutil
import tempfile
from pathlib import Path


def is_chief():
    """Whether this process writes run folders: no `TF_CONFIG` cluster, or its chief (a
    "chief" task, else worker 0)."""
    spec = json.loads(os.environ.get("TF_CONFIG") or "{}")
    task, cluster = spec.get("task") or {}, spec.get("cluster") or {}
    if not task:
        return True
    if "chief" in cluster:
        return task.get("type") == "chief"
    return task.get("type") == "worker" and int(task.get("index", 0)) == 0


class RunFolder:
    """Where a run's files go: `path` for the chief, a scratch folder for any other process.

    Args:
        path: the run folder.
        chief: whether this process writes it (default: `is_chief()`).

    Example:

    >>> folder = RunFolder("runs/demo")
    >>> folder.write_text("labels.txt", "neg\\npos\\n")
    >>> folder / "best.keras"          # where a callback writes
    PosixPath('runs/demo/best.keras')
    """

    def __init__(self, path, *, chief=None):
        self.chief = is_chief() if chief is None else chief
        self.path = Path(path) if self.chief else Path(tempfile.mkdtemp(prefix="seqapp-worker-run-"))
        self.path.mkdir(parents=True, exist_ok=True)

    def __truediv__(self, name):
        return self.path / name

    def write_text(self, name, text):
        (self.path / name).write_text(text, encoding="utf-8")

    def write_json(self, name, value):
        self.write_text(name, json.dumps(value, indent=2, ensure_ascii=False))

    def copy_in(self, source, name):
        shutil.copyfile(source, self.path / name)

    def write_bytes(self, name, data):
        path = self.path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
