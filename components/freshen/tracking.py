"""MLflow bookkeeping: one parent run per pipeline run, one child run per step.

The tracking store is SQLite in the project folder unless MLFLOW_TRACKING_URI says otherwise.
The parent run id comes from --parent-run-id / $FRESHEN_PARENT_RUN_ID (Airflow passes it),
else from .freshen/parent_run (the open pipeline run that DVC stages share); `promote` ends it.

A child run ends FAILED when its step raises, or is stopped by SIGTERM (the CLI turns that into
an exception). A SIGKILL leaves no chance to end it: each child run records its pid and host,
and the next step on that host marks KILLED the runs left RUNNING by a process that is gone."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import subprocess
from pathlib import Path

from freshen.atomic import pid_alive
from freshen.config import flatten
from freshen.orchestration.pipeline import TRAIN
from freshen.params import Params

PARENT_ENV = "FRESHEN_PARENT_RUN_ID"
STATE_FILE = Path(".freshen") / "parent_run"
PID_TAG, HOST_TAG = "freshen.pid", "freshen.host"  # which process runs a step's child run


def setup(root: Path, experiment: str):
    import mlflow

    uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(root / 'mlflow.db').resolve()}"
    mlflow.set_tracking_uri(uri)
    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:
        artifacts = None
        if uri.startswith("sqlite:"):
            artifacts = (root / "mlartifacts").resolve().as_uri()
        mlflow.create_experiment(experiment, artifact_location=artifacts)
    mlflow.set_experiment(experiment)
    return mlflow


def git_commit(root: Path) -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def dvc_lock_tags(root: Path) -> dict[str, str]:
    """The dvc.lock digest plus the md5 of each locked output, as tags."""
    lock = root / "dvc.lock"
    if not lock.is_file():
        return {}
    import yaml

    text = lock.read_text()
    tags = {"dvc.lock.sha256": hashlib.sha256(text.encode()).hexdigest()}
    for stage, body in (yaml.safe_load(text) or {}).get("stages", {}).items():
        for out in body.get("outs", []) or []:
            digest = out.get("md5") or out.get("hash")
            if digest:
                tags[f"dvc.{stage}.{out['path']}"[:250]] = str(digest)
    return tags


def parent_run_id(root: Path, explicit: str | None, experiment: str) -> str:
    mlflow = setup(root, experiment)
    client = mlflow.tracking.MlflowClient()
    run_id = explicit or os.environ.get(PARENT_ENV)
    if run_id:
        return run_id
    state = root / STATE_FILE
    if state.is_file():
        run_id = state.read_text().strip()
        with contextlib.suppress(Exception):
            if client.get_run(run_id).info.status == "RUNNING":
                return run_id
    exp = mlflow.get_experiment_by_name(experiment)
    run = client.create_run(
        exp.experiment_id, run_name="pipeline", tags={"freshen.kind": "pipeline", "git_commit": git_commit(root)}
    )
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_text(run.info.run_id)
    return run.info.run_id


def end_parent(root: Path, run_id: str, status: str = "FINISHED") -> None:
    import mlflow

    mlflow.tracking.MlflowClient().set_terminated(run_id, status)
    state = root / STATE_FILE
    if state.is_file() and state.read_text().strip() == run_id:
        state.unlink()


def end_dead_runs(client, experiment_id: str) -> list[str]:
    """Mark KILLED the step runs of this host left RUNNING by a process that no longer exists
    (SIGKILLed, out of memory, the machine restarted); returns their ids. Only runs tagged with
    a pid are judged (parent runs outlive their processes), and only on the host of that pid.
    Our own pid counts as gone: this process opens its step run only after this, so such a run is
    an earlier process's that had the same pid (a restarted container's step is pid 1 again)."""
    host = socket.gethostname()
    runs = client.search_runs(
        [experiment_id], filter_string=f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = '{host}'"
    )
    ended = []
    for run in runs:
        pid = run.data.tags.get(PID_TAG, "")
        if pid.isdigit() and (int(pid) == os.getpid() or not pid_alive(int(pid))):
            client.set_terminated(run.info.run_id, "KILLED")
            ended.append(run.info.run_id)
    return ended


def end_runs_of_dead_processes(root: Path, experiment: str, mlflow=None) -> list[str]:
    """`end_dead_runs` in `experiment`: at each step's start, and for a launcher whose ranks are
    gone. `mlflow`: the module already `setup` for this experiment (None: set it up here)."""
    mlflow = mlflow or setup(root, experiment)
    return end_dead_runs(mlflow.tracking.MlflowClient(), mlflow.get_experiment_by_name(experiment).experiment_id)


@contextlib.contextmanager
def step_run(step: str, params: Params, root: Path, parent: str | None = None, log_sections=None):
    """A child run for one step, tagged with the git commit, the dvc.lock hashes and its process,
    with the params of `log_sections` (all when None) logged flat (`train.negatives.k`).
    It ends FAILED on any exception (mlflow.start_run does that), FINISHED otherwise.

    The parent run is an orchestrator's when its id is given (Airflow, Kubeflow: they end it
    themselves); otherwise it is this project's own (DVC, a shell), and the train pipeline's
    last step ends it."""
    experiment = params.mlflow.experiment
    mlflow = setup(root, experiment)
    end_runs_of_dead_processes(root, experiment, mlflow)
    parent_id = parent_run_id(root, parent, experiment)
    tags = {
        "mlflow.parentRunId": parent_id,
        "freshen.step": step,
        "git_commit": git_commit(root),
        PID_TAG: str(os.getpid()),
        HOST_TAG: socket.gethostname(),
        **dvc_lock_tags(root),
    }
    with mlflow.start_run(run_name=step, tags=tags, nested=True) as run:
        flat = {
            k: json.dumps(v) if isinstance(v, (list, dict)) else v
            for k, v in flatten(params.sections(log_sections)).items()
        }
        mlflow.log_params({k: str(v)[:500] for k, v in flat.items()})
        yield run, parent_id
    if step == TRAIN.steps[-1].name and not (parent or os.environ.get(PARENT_ENV)):
        end_parent(root, parent_id)
