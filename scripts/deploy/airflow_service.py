"""A live Airflow for a deployment check: `airflow standalone` (scheduler, dag-processor,
api-server, triggerer; LocalExecutor on SQLite) on a throwaway AIRFLOW_HOME, driven through the
REST API v2 with a JWT from /auth/token, and stopped without leaving a process behind.

Every process started here carries a marker variable in its environment; `stop()` finds them all
by it (the LocalExecutor's workers and task processes included, even when re-parented), sends
SIGTERM to the process group and to each, then SIGKILL to what is left after a grace period."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

MARKER = "FRESHEN_LIVE_CHECK"  # environment variable that tags every process started here
TERMINAL = {"success", "failed"}  # dag run states that end a wait


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def marked_pids(token: str) -> list[int]:
    """Processes whose environment holds MARKER=token (read from /proc; needs the same uid or root)."""
    needle = f"{MARKER}={token}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                pids.append(int(entry.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return pids


class Processes:
    """Long-running processes of one check, each in its own process group, all marked."""

    def __init__(self, env: dict[str, str], logs: Path):
        self.token = secrets.token_hex(8)
        self.env = {**env, MARKER: self.token}
        self.logs = logs
        self.groups: list[int] = []

    def start(self, name: str, argv: list[str], cwd: Path | None = None) -> subprocess.Popen:
        self.logs.mkdir(parents=True, exist_ok=True)
        with open(self.logs / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                argv, env=self.env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.groups.append(proc.pid)
        return proc

    def stop(self, grace_s: float = 20.0) -> dict[str, list[int]]:
        """SIGTERM every group and marked process, SIGKILL the survivors after `grace_s`.
        Returns the pids that outlived SIGTERM ("killed") and those still alive after SIGKILL ("left")."""
        killed: list[int] = []
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if sig == signal.SIGKILL:
                killed = self.alive()
            for pgid in self.groups:
                try:
                    os.killpg(pgid, sig)
                except OSError:
                    pass
            for pid in marked_pids(self.token):
                try:
                    os.kill(pid, sig)
                except OSError:
                    pass
            deadline = time.monotonic() + (grace_s if sig == signal.SIGTERM else 5.0)
            while time.monotonic() < deadline and self.alive():
                reap()
                time.sleep(0.5)
        reap()
        return {"killed": killed, "left": self.alive()}

    def alive(self) -> list[int]:
        """Our processes still running: marked ones plus members of our groups (`pgrep -g`)."""
        found = set(marked_pids(self.token))
        for pgid in self.groups:
            res = subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, text=True)
            found |= {int(p) for p in res.stdout.split()}
        return sorted(pid for pid in found if not _zombie(pid))


def reap() -> None:
    """Collect exited children of this process so they do not linger as zombies."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True  # gone


def airflow_config(home: Path, port: int, user: str, password: str) -> dict[str, str]:
    """Environment for `airflow standalone` on `home`: SQLite, LocalExecutor, the API on `port`
    (tasks reach the execution API there too), one simple-auth-manager admin with `password`."""
    home.mkdir(parents=True, exist_ok=True)
    passwords = home / "passwords.json"
    passwords.write_text(json.dumps({user: password}))
    base = f"http://127.0.0.1:{port}"
    return {
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{user}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base}/execution/",
        "AIRFLOW__API__BASE_URL": base,
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
    }


def airflow_command() -> list[str]:
    exe = Path(sys.executable).parent / "airflow"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "airflow"]


class Api:
    """The Airflow REST API v2, authenticated with a JWT from the simple auth manager: with a user
    and password, or without (GET /auth/token, when every user is an admin, as in the compose stack)."""

    def __init__(self, base: str, user: str | None = None, password: str | None = None):
        self.base, self.user, self.password = base.rstrip("/"), user, password
        self.session = requests.Session()

    def login(self) -> None:
        if self.user is None:
            res = requests.get(f"{self.base}/auth/token", timeout=30)
        else:
            credentials = {"username": self.user, "password": self.password}
            res = requests.post(f"{self.base}/auth/token", json=credentials, timeout=30)
        res.raise_for_status()
        self.session.headers["Authorization"] = f"Bearer {res.json()['access_token']}"

    def call(self, method: str, path: str, **kw) -> dict:
        res = self.session.request(method, f"{self.base}/api/v2{path}", timeout=60, **kw)
        if res.status_code >= 400:
            raise RuntimeError(f"{method} /api/v2{path}: HTTP {res.status_code}: {res.text[:500]}")
        return res.json() if res.content else {}

    def wait_ready(self, dag_ids: list[str], timeout_s: float, components: tuple[str, ...] = ("scheduler",)) -> None:
        """Until the API answers, the named components (all that report, for `()`) are healthy and
        every DAG is parsed without import errors."""
        deadline = time.monotonic() + timeout_s
        unhealthy: list[str] = []
        while True:
            try:
                health = requests.get(f"{self.base}/api/v2/monitor/health", timeout=10).json()
                names = components or [k for k, v in health.items() if isinstance(v, dict)]
                unhealthy = [n for n in names if health[n]["status"] != "healthy"]
                if not unhealthy:
                    self.login()
                    errors = self.call("GET", "/importErrors")["import_errors"]
                    if errors:
                        raise RuntimeError(f"DAG import errors: {json.dumps(errors)[:2000]}")
                    known = {d["dag_id"] for d in self.call("GET", "/dags")["dags"]}
                    if set(dag_ids) <= known:
                        return
            except (requests.ConnectionError, requests.Timeout, KeyError, requests.HTTPError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"Airflow at {self.base} not ready with {dag_ids} after {timeout_s:.0f}s (unhealthy: {unhealthy})"
                )
            time.sleep(3)

    def unpause(self, dag_id: str) -> None:
        self.call("PATCH", f"/dags/{dag_id}", json={"is_paused": False})

    def trigger(self, dag_id: str, conf: dict) -> str:
        return self.call("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf})["dag_run_id"]

    def runs(self, dag_id: str) -> list[dict]:
        return self.call("GET", f"/dags/{dag_id}/dagRuns", params={"limit": 100, "order_by": "run_after"})["dag_runs"]

    def wait_run(self, dag_id: str, run_id: str, timeout_s: float) -> dict:
        deadline = time.monotonic() + timeout_s
        while True:
            run = self.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}")
            if run["state"] in TERMINAL:
                return run
            if time.monotonic() > deadline:
                raise TimeoutError(f"{dag_id} run {run_id} still {run['state']} after {timeout_s:.0f}s")
            time.sleep(5)

    def run_dag(self, dag_id: str, conf: dict, timeout_s: float) -> dict:
        """Unpause, trigger and wait for one run; returns the finished run."""
        self.unpause(dag_id)
        return self.wait_run(dag_id, self.trigger(dag_id, conf), timeout_s)

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances"
        return self.call("GET", path, params={"limit": 100})["task_instances"]

    def task_states(self, dag_id: str, run_id: str) -> dict[tuple[str, int], str]:
        """(task_id, map_index) -> state of every task instance of one run (-1: not mapped)."""
        return {(t["task_id"], t["map_index"]): t["state"] for t in self.task_instances(dag_id, run_id)}

    def log_tail(self, dag_id: str, run_id: str, task: dict, lines: int = 30) -> str:
        """The last lines of one task instance's log (of its latest try)."""
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task['task_id']}/logs/{max(task['try_number'], 1)}"
        try:
            content = self.call("GET", path, params={"full_content": True}).get("content", [])
        except RuntimeError as exc:
            return f"(no log: {exc})"
        events = [c.get("event", str(c)) if isinstance(c, dict) else str(c) for c in content]
        return "\n".join(events[-lines:])

    def asset_events(self, name: str) -> list[dict]:
        assets = self.call("GET", "/assets", params={"name_pattern": name})["assets"]
        asset = next((a for a in assets if a["name"] == name), None)
        if asset is None:
            return []
        return self.call("GET", "/assets/events", params={"asset_id": asset["id"], "limit": 100})["asset_events"]

    def triggering_events(self, dag_id: str, run_id: str) -> list[dict]:
        return self.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}/upstreamAssetEvents")["asset_events"]
