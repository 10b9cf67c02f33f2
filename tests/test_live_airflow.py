"""The process handling of the live-Airflow deployment check (scripts/deploy/airflow_service.py):
stop() ends every process it started, also children that ignore SIGTERM (as LocalExecutor
workers do) and ones that left the process group, and leaves nothing behind."""

import subprocess
import sys
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts" / "deploy"))

from airflow_service import Processes, marked_pids  # noqa: E402

# a parent that starts a SIGTERM-ignoring child in its group and a daemon in a new session, then waits
FAMILY = textwrap.dedent(
    """
    import os, signal, subprocess, sys, time
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
    subprocess.Popen([sys.executable, "-c", stubborn])
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    open(sys.argv[1], "w").write("started")
    time.sleep(600)
    """
)


def wait_for(path: Path, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.1)


def test_stop_ends_the_group_the_sigterm_ignorers_and_the_escaped(tmp_path):
    procs = Processes({"PATH": "/usr/bin:/bin"}, tmp_path / "logs")
    ready = tmp_path / "ready"
    parent = procs.start("family", [sys.executable, "-c", FAMILY, str(ready)])
    wait_for(ready)
    deadline = time.monotonic() + 30  # until the children have execed and carry the marker
    while len(family := marked_pids(procs.token)) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert parent.pid in family and len(family) == 3
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # not started by procs
    try:
        stopped = procs.stop(grace_s=2)
        assert stopped["left"] == [] and marked_pids(procs.token) == []
        assert len(stopped["killed"]) == 1  # only the SIGTERM-ignoring child needed SIGKILL
        assert other.poll() is None  # a process it did not start is left alone
    finally:
        other.kill()
        other.wait()


def test_stop_with_nothing_started_is_a_no_op(tmp_path):
    assert Processes({}, tmp_path).stop(grace_s=0.1) == {"killed": [], "left": []}
