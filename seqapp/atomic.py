"""Writes other processes see whole or not at all: a temporary sibling, then a rename.

Two processes preparing the same cached file or folder at once (two folds,
two tuning workers) each write their own temporary copy; the rename publishes
one, and neither reader nor writer ever sees half of one.
"""

import contextlib
import os
import shutil
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path, *, directory=False):
    """Yields a temporary sibling of `path` to fill; publishes it as `path` when the block succeeds.

    A file replaces whatever `path` held. A folder is published only when no
    other process published `path` first; then ours is dropped and theirs kept
    (both were made from the same inputs). On an error nothing is published and
    the temporary copy is removed.

    Args:
        path: the file or folder to publish.
        directory: yield an empty folder instead of a file path.

    Example:

    >>> with atomic_path(cache / "vocab.txt") as tmp:
    ...     tmp.write_text("[PAD]\\n")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix, suffix = f".{path.name}.", ".incomplete"
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=path.parent))
    else:
        handle, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=path.parent)
        os.close(handle)
        tmp = Path(name)
    try:
        yield tmp
        if not directory:
            os.replace(tmp, path)
        elif path.is_dir():
            shutil.rmtree(tmp)
        else:
            try:
                os.rename(tmp, path)
            except OSError:
                if not path.is_dir():  # not another process's copy: a real failure
                    raise
                shutil.rmtree(tmp)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise
