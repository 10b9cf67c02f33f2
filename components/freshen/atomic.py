"""Atomic writes: an artifact is either complete or absent, so retries are always safe.

Files go to a temporary sibling and are renamed into place; directories are built in a
temporary sibling and swapped in with two renames (the old one removed after).

A temporary is named `.<name>.<pid>.<random>.tmp` after its output and the process writing it,
so a later run can tell what a dead run left (removed by `remove_stale_temps` once that run
holds the output's lock, see freshen.locks) from another live run's work (left alone).
Temporaries are created with mode 0666 / 0777 less the umask, as open() and mkdir() create
anything else: mkstemp's 0600 / 0700 would make a published index or current.json unreadable
to every consumer but its writer."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import time
from pathlib import Path

STALE_AFTER = 24 * 3600  # seconds: a temporary without a pid in its name is a dead run's this old


def temp_sibling(path: Path) -> Path:
    """A fresh temporary name beside `path`: `.<name>.<pid>.<8 hex digits>.tmp`."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def _new_temp_file(path: Path) -> tuple[int, Path]:
    """Create a temporary file beside `path`; returns its descriptor (open for writing) and name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = temp_sibling(path)
        try:  # mode 0666: the kernel applies the umask, as for any file open() creates
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue


def _new_temp_dir(path: Path) -> Path:
    """Create a temporary folder beside `path` (mode 0777 less the umask) and return it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = temp_sibling(path)
        try:
            os.mkdir(tmp, 0o777)
            return tmp
        except FileExistsError:
            continue


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_bytes(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    fd, tmp = _new_temp_file(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
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
def restored_on_failure(path: str | Path):
    """For a file a step rewrites while it runs (train's metrics at every evaluation): if the
    block fails, `path` is put back as it was before (or removed, when it was not there), so a
    failed run leaves the previous run's file. Call the yielded `keep()` once the run's result
    has replaced what the file described (the model), from when on its rewrites stay.
    A SIGKILLed process cannot put anything back: its last rewrite stays."""
    path = Path(path)
    before = path.read_bytes() if path.is_file() else None
    kept = False

    def keep() -> None:
        nonlocal kept
        kept = True

    try:
        yield keep
    except BaseException:
        if not kept:
            if before is None:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            else:
                write_bytes(path, before)
        raise


@contextlib.contextmanager
def atomic_file(path: str | Path):
    """Yield a temporary file name beside `path` for a writer that wants a name (faiss.write_index);
    on success it replaces `path`, on any error it is removed and `path` is left as it was."""
    path = Path(path)
    fd, tmp = _new_temp_file(path)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | Path):
    """Yield a fresh temporary directory; on success it replaces `path` whole.

    On any error the temporary directory is removed and `path` is left as it was."""
    path = Path(path)
    tmp = _new_temp_dir(path)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    readable_as_umask_allows(tmp)
    replace_dir(tmp, path)


def readable_as_umask_allows(folder: Path) -> None:
    """Give everything under `folder` the read (and, for folders, search) bits the umask allows:
    libraries writing inside an atomic folder may create their files 0600 (safetensors does,
    for every model weight), which no consumer running as another uid could read."""
    umask = os.umask(0)
    os.umask(umask)
    for p in [folder, *folder.rglob("*")]:
        if p.is_symlink():
            continue
        st_mode = p.stat().st_mode
        wanted = st_mode | ((0o555 if p.is_dir() else 0o444) & ~umask)
        if wanted != st_mode:
            os.chmod(p, wanted & 0o7777)


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


def pid_alive(pid: int) -> bool:
    """Whether a process `pid` exists on this machine (one of another user's counts)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_stale(entry: Path, name: str) -> bool:
    """Whether `entry`, beside output `name`, is a leftover of a dead run of that output."""
    escaped = re.escape(name)
    with_pid = (
        re.fullmatch(rf"\.{escaped}\.(\d+)\.[0-9a-f]{{8}}\.tmp", entry.name)  # temp_sibling
        or re.fullmatch(rf"\.{escaped}\.old-(\d+)", entry.name)
    )  # replace_dir, killed mid-way
    if with_pid:
        # our own pid too: we are only now taking the output's lock, so a temporary with our pid
        # is an earlier process's that had the same pid (a container's step is pid 1 every retry)
        pid = int(with_pid.group(1))
        return pid == os.getpid() or not pid_alive(pid)
    if re.fullmatch(rf"\.{escaped}\.[A-Za-z0-9_]{{8}}\.tmp", entry.name):  # mkstemp's names: no pid to ask
        return time.time() - entry.lstat().st_mtime > STALE_AFTER
    return False


def remove_stale_temps(path: str | Path) -> list[Path]:
    """Remove what dead runs left beside `path` (a killed save leaves a whole model there) and
    return it. Call it only on taking `path`'s lock: the lock is what says no other run of this
    project is writing `path` now; the pid check spares a live process that ignores the lock.
    `.<name>.partial` (a resumable cache) is never touched: the next run resumes it."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    removed = []
    for entry in path.parent.iterdir():
        if entry.name.startswith(f".{path.name}.") and _is_stale(entry, path.name):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()
            removed.append(entry)
    return removed
