"""Atomic writes: an artifact is either complete or absent, so retries are always safe.

Files go to a temporary sibling and are renamed into place; directories are built in a
temporary sibling and swapped in with two renames (the old one removed after)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path


def write_text(path: str | Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def write_json(path: str | Path, obj) -> Path:
    """Strict JSON: a NaN or Inf (which json.dumps would write as bare `NaN`, invalid JSON that
    DVC and other readers refuse) stops the step, naming the key, and nothing is written."""
    from freshen.integrity import nonfinite_key

    key = nonfinite_key(obj)
    if key is not None:
        from freshen.errors import DataError

        raise DataError(path, "not a finite number: refusing to write a NaN or Inf", field=key)
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | Path):
    """Yield a fresh temporary directory; on success it replaces `path` whole.

    On any error the temporary directory is removed and `path` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, path)


def replace_dir(src: Path, dst: Path) -> None:
    """Move directory `src` to `dst`, replacing whatever `dst` was."""
    old = None
    if dst.is_symlink() or dst.is_file():
        dst.unlink()
    elif dst.exists():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        os.replace(dst, old)
    os.replace(src, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
