"""Atomic writes and output locks: temporaries named after their writer, modes that follow the
umask, one writer per output, and what dead runs left behind cleared by the next one."""

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from freshen import atomic, locks
from freshen.atomic import atomic_dir, atomic_file, write_json, write_text
from freshen.errors import FreshenError
from freshen.locks import WAIT_ENV, hold, lock_path

COMPONENTS = str(Path(__file__).resolve().parents[1] / "components")


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture()
def live_process():
    """Another process, alive for the test."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture()
def holder(tmp_path):
    """Start a separate process holding the lock of an output until its stdin closes (or it is killed)."""
    procs = []

    def start(output: Path) -> subprocess.Popen:
        code = (
            "import sys; from freshen.locks import hold\n"
            f"with hold({str(output)!r}):\n"
            "    print('held', flush=True); sys.stdin.read()\n"
        )
        proc = subprocess.Popen(
            [sys.executable, "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": COMPONENTS},
        )
        procs.append(proc)
        assert proc.stdout.readline().strip() == "held"
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def test_temporaries_carry_the_writers_pid(tmp_path, monkeypatch):
    with atomic_dir(tmp_path / "out") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(f".out.{os.getpid()}.") and tmp.name.endswith(".tmp")
    replaced = []
    real_replace = os.replace

    def recording_replace(src, dst):
        replaced.append(Path(src).name)
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", recording_replace)
    write_text(tmp_path / "a.json", "{}")
    with atomic_file(tmp_path / "index.faiss") as tmp:
        tmp.write_bytes(b"x")
    assert [n.split(".")[:3] for n in replaced] == [["", "a", "json"], ["", "index", "faiss"]]
    assert all(n.split(".")[-3] == str(os.getpid()) and n.endswith(".tmp") for n in replaced), replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "index.faiss", "out"]


@pytest.mark.parametrize("umask,file_mode,dir_mode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)])
def test_modes_follow_the_umask(tmp_path, umask, file_mode, dir_mode):
    """Atomic writes must give what a plain open() / mkdir() gives, not mkstemp's 0600 / 0700:
    a serving folder or current.json readable only by its writer breaks every consumer."""
    old = os.umask(umask)
    try:
        write_json(tmp_path / "current.json", {"a": 1})
        with atomic_dir(tmp_path / "serving") as tmp:
            write_json(tmp / "promotion.json", {})
            (tmp / "model.safetensors").write_bytes(b"w")
            (tmp / "encoder").mkdir()
            (tmp / "encoder" / "weights.safetensors").write_bytes(b"w")
            (tmp / "encoder" / "weights.safetensors").chmod(0o600)  # as the safetensors library writes
        with atomic_file(tmp_path / "serving" / "index.faiss") as tmp:
            tmp.write_bytes(b"i")
        with hold(tmp_path / "locked" / "out"):
            pass
    finally:
        os.umask(old)
    files = ("current.json", "serving/promotion.json", "serving/model.safetensors", "serving/index.faiss")
    for f in (*files, "serving/encoder/weights.safetensors"):
        assert mode(tmp_path / f) == file_mode, f
    for d in ("serving", "serving/encoder"):
        assert mode(tmp_path / d) == dir_mode, d


def test_a_second_writer_fails_at_once_naming_the_first_and_writes_nothing(tmp_path, holder, monkeypatch):
    out = tmp_path / "cache" / "initial"
    out.mkdir(parents=True)
    (out / "ids.json").write_text("[]")
    first = holder(out)
    waits = []
    with (
        monkeypatch.context() as m,
        pytest.raises(
            FreshenError,
            match=rf"{out} is being written by another run \(pid {first.pid}, since \d{{4}}-"
            rf".*; wait for it to finish, or set {WAIT_ENV}=SECONDS",
        ) as busy,
    ):
        m.setattr(locks.time, "sleep", waits.append)  # at once: no wait for the lock
        with hold(out):
            (out / "ids.json").write_text("overwritten")
    assert waits == [] and "(waited" not in str(busy.value)
    assert (out / "ids.json").read_text() == "[]"
    # the kernel lets go of a lock when its holder dies, however it dies: no stale lock to clear by hand
    first.kill()
    first.wait()
    assert lock_path(out).exists()  # a SIGKILLed holder could not tidy up ...
    with hold(out):  # ... and the next run takes the lock all the same
        pass
    assert not lock_path(out).exists()  # a holder that returns leaves nothing beside the output


def test_waiting_for_another_run_when_asked(tmp_path, holder, monkeypatch):
    out = tmp_path / "model"
    first = holder(out)
    monkeypatch.setenv(WAIT_ENV, "0.5")
    with pytest.raises(FreshenError, match=r"is being written by another run .*\(waited 0\.5 s\)"):
        with hold(out):
            pass
    monkeypatch.setenv(WAIT_ENV, "60")
    first.stdin.close()  # the first run finishes while the second waits
    with hold(out):
        assert first.wait(timeout=30) == 0


def test_a_lock_is_reentrant_in_one_process_and_leaves_no_folder_it_made(tmp_path):
    out = tmp_path / "new" / "deeper" / "out"
    with hold(out, tmp_path / "other"):
        with hold(out):  # a step holds its output, and the library function it calls takes it again
            assert lock_path(out).is_file()
        assert lock_path(out).is_file()  # still held by the outer hold
        info = json.loads(lock_path(out).read_text())
        assert info["pid"] == os.getpid() and "since" in info
    assert not (tmp_path / "new").exists() and list(tmp_path.iterdir()) == []


def test_taking_a_lock_removes_what_dead_runs_left_and_nothing_else(tmp_path, live_process):
    dead, live = dead_pid(), live_process.pid
    day_old = time.time() - 2 * 86400

    def make(name: str, is_dir: bool = True, mtime: float | None = None) -> Path:
        p = tmp_path / name
        if is_dir:
            (p / "encoder").mkdir(parents=True)
            (p / "encoder" / "model.safetensors").write_bytes(b"w" * 1000)
        else:
            p.write_bytes(b"x")
        if mtime:
            os.utime(p, (mtime, mtime))
        return p

    gone = [
        make(f".model.{dead}.0badc0de.tmp"),  # a save killed half-way
        make(f".model.old-{dead}"),  # killed between the two renames of replace_dir
        make(".model.k3j_x9zq.tmp", mtime=day_old),  # mkstemp name, no pid: only by its age
        make(f".model.{dead}.12345678.tmp", is_dir=False),
        make(f".model.{os.getpid()}.0badc0de.tmp"),
    ]  # our pid, before we held the lock: an earlier
    #                                                         process's with the same pid (a container's pid 1)
    kept = [
        make(f".model.{live}.0badc0de.tmp"),  # another live process's work
        make(".model.abcdefgh.tmp", mtime=day_old + 86400 + 3600),  # no pid, 23 hours old: young enough
        make(".model.partial"),  # a resume folder: kept for the resume
        make(f".model-v2.{dead}.0badc0de.tmp"),  # another output's
        make(f".model.v2.{dead}.0badc0de.tmp"),  # output "model.v2"'s, not "model"'s
        make("model"),
    ]
    with hold(tmp_path / "model"):
        pass
    assert [p for p in gone if p.exists()] == []
    assert [p for p in kept if not p.exists()] == []
    assert (kept[0] / "encoder" / "model.safetensors").read_bytes() == b"w" * 1000


def test_restored_on_failure_puts_the_file_back_until_kept(tmp_path):
    from freshen.atomic import restored_on_failure, write_text

    f = tmp_path / "train.json"
    f.write_bytes(b"previous \xff")
    with pytest.raises(RuntimeError, match="^failed$"), restored_on_failure(f):
        write_text(f, "half-way")
        raise RuntimeError("failed")
    assert f.read_bytes() == b"previous \xff"  # byte for byte, UTF-8 or not
    with pytest.raises(RuntimeError, match="^failed$"), restored_on_failure(tmp_path / "new.json"):
        write_text(tmp_path / "new.json", "half-way")
        raise RuntimeError("failed")
    assert not (tmp_path / "new.json").exists()
    with pytest.raises(RuntimeError, match="after the model was saved"), restored_on_failure(f) as keep:
        write_text(f, "the new model's")
        keep()
        raise RuntimeError("failed after the model was saved")
    assert f.read_text() == "the new model's"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.json"]
