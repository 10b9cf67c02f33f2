"""One writer per output: an advisory lock beside every folder or file a step writes.

A step holds `.<name>.lock` beside each of its outputs from before it touches them until it
returns. A second run of a step on the same outputs (a second terminal, a DVC stage run by
hand while `dvc repro` runs, a retried Airflow task whose first attempt still runs) fails at
once with a FreshenError naming the run that holds the lock, instead of both writing the same
`.<name>.partial/` folder and leaving half a cache. Set FRESHEN_LOCK_WAIT=SECONDS to wait that
long for the other run instead.

The lock is flock(2): the kernel drops it when its holder exits in any way, SIGKILL included,
so a lock is never stale and never needs clearing by hand. The holder removes the lock file
when it lets go (a SIGKILLed one cannot; the next run simply takes the lock on it), and the
folders it had to create for it, so a run refused early leaves the project as it was.

Once a run holds an output's lock it removes what dead runs left beside the output
(`atomic.remove_stale_temps`), so a kill mid-save costs no disk space for good."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import threading
import time
from pathlib import Path

from freshen.atomic import remove_stale_temps
from freshen.errors import FreshenError

WAIT_ENV = "FRESHEN_LOCK_WAIT"
POLL_SECONDS = 0.2

# how many times this process holds each lock file. A step holds its outputs, and the library
# function it calls (build_cache) takes the same lock again: within one process that is the same
# writer, so it may. (flock itself would refuse: each open() of the file is a lock of its own.)
_held: dict[Path, int] = {}
_held_guard = threading.Lock()


class OutputBusy(FreshenError):
    """Another run holds the lock of an output this run was about to write."""


def lock_path(output: str | Path) -> Path:
    """The lock file of `output`: `.<name>.lock` beside it (in its real parent folder)."""
    output = Path(output)
    return Path(os.path.realpath(output.parent)) / f".{output.name}.lock"


def wait_seconds(wait: float | None = None) -> float:
    """How long to wait for another run's lock: `wait`, else $FRESHEN_LOCK_WAIT, else 0 (fail at once)."""
    if wait is not None:
        return float(wait)
    raw = os.environ.get(WAIT_ENV, "").strip()
    try:
        return max(0.0, float(raw)) if raw else 0.0
    except ValueError:
        raise FreshenError(f"{WAIT_ENV}={raw!r}: must be a number of seconds") from None


@contextlib.contextmanager
def hold(*outputs: str | Path, wait: float | None = None):
    """Hold the locks of all `outputs` for the `with` block, or raise OutputBusy.

    The locks are taken in one fixed order (sorted), so two runs waiting for each other's
    outputs cannot deadlock. Each lock taken removes the stale temporaries beside its output."""
    patience = wait_seconds(wait)
    deadline = time.monotonic() + patience
    by_lock = {lock_path(o): Path(o) for o in outputs}
    with contextlib.ExitStack() as stack:
        for lock in sorted(by_lock):
            stack.enter_context(_hold_one(lock, by_lock[lock], deadline, patience))
        yield


@contextlib.contextmanager
def _hold_one(lock: Path, output: Path, deadline: float, patience: float):
    with _held_guard:
        again = lock in _held
        if again:
            _held[lock] += 1
    if again:
        try:
            yield
        finally:
            with _held_guard:
                if lock in _held:
                    _held[lock] -= 1
        return
    made = _make_folders(lock.parent)
    try:
        fd = _acquire(lock, output, deadline, patience)
    except BaseException:
        _remove_empty(made)
        raise
    with _held_guard:
        _held[lock] = 1
    try:
        _write_holder(fd)
        remove_stale_temps(output)
        yield
    finally:
        with _held_guard:
            del _held[lock]
        _release(fd, lock)
        _remove_empty(made)


def _make_folders(folder: Path) -> list[Path]:
    """Create `folder` and its missing parents; return those created, deepest last."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    made = []
    for f in reversed(missing):
        with contextlib.suppress(FileExistsError):
            f.mkdir()
            made.append(f)
    return made


def _acquire(lock: Path, output: Path, deadline: float, patience: float) -> int:
    """Open and flock `lock`, polling until `deadline`; returns the descriptor holding it."""
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except FileNotFoundError:  # a holder removed the (empty) folder as it let go: make it again
            _make_folders(lock.parent)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_holder(fd)
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            if time.monotonic() >= deadline:
                raise OutputBusy(busy_message(output, holder, patience)) from None
            time.sleep(min(POLL_SECONDS, max(0.0, deadline - time.monotonic())))
            continue
        if _is_current(fd, lock):
            return fd
        os.close(fd)  # we locked a file its holder removed as it let go: take the new one


def _is_current(fd: int, lock: Path) -> bool:
    """Whether the locked descriptor is still the file at `lock` (not one unlinked meanwhile)."""
    try:
        on_disk = os.stat(lock)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (on_disk.st_dev, on_disk.st_ino) == (mine.st_dev, mine.st_ino)


def _write_holder(fd: int) -> None:
    """Record who holds the lock, for the message another run shows."""
    program = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "command": " ".join([program, *sys.argv[1:]])[:300],
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)


def _read_holder(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}  # the holder has not written it yet


def busy_message(output: Path, holder: dict, waited: float) -> str:
    """`<output> is being written by another run (pid N, since T, `command`); wait for it ...`."""
    who = f"pid {holder.get('pid', 'unknown')}"
    if holder.get("host") and holder["host"] != socket.gethostname():
        who += f" on {holder['host']}"
    if holder.get("since"):
        who += f", since {holder['since']}"
    if holder.get("command"):
        who += f", `{holder['command']}`"
    waited_text = f" (waited {waited:g} s)" if waited else ""
    return (
        f"{output} is being written by another run ({who}){waited_text}; wait for it to finish, or set "
        f"{WAIT_ENV}=SECONDS to wait for it. Nothing was written."
    )


def _release(fd: int, lock: Path) -> None:
    """Remove the lock file while still holding it, then let go: a run that opened the old file
    meanwhile finds it gone once it gets the lock, and takes a new one (see _is_current)."""
    if _is_current(fd, lock):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)
    os.close(fd)


def _remove_empty(made: list[Path]) -> None:
    """Remove the folders made for a lock file, deepest first, where still empty (where the step
    wrote nothing and no other run's lock file is)."""
    for folder in reversed(made):
        with contextlib.suppress(OSError):
            folder.rmdir()
