"""The MLflow parent run of one orchestrated pipeline run (a DAG run, a Kubeflow run).

`start` opens it (tagged with who started it) and notes which version was champion then;
every step attaches its child run to it; `end` closes it FINISHED only when every child
finished, else FAILED (children left RUNNING by a killed container are marked KILLED), so
the verdict needs nothing but MLflow and works the same for every runner."""

from __future__ import annotations

from pathlib import Path

from freshen import tracking
from freshen.errors import FreshenError
from freshen.params import Params

KIND_TAG, PIPELINE_TAG = "freshen.kind", "freshen.pipeline"
UNIT_TAG = "freshen.unit"  # tells apart the child runs of one mapped step (e.g. shard 1-of-3)


def champion_version(client, name: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, "champion").version)
    except MlflowException:
        return None


def _experiment(params: Params) -> str:
    return params.mlflow.experiment


def start(params: Params, root: Path, kind: str, tags: dict | None = None) -> dict:
    """Open the parent run; returns its id and the champion version at this moment."""
    mlflow = tracking.setup(root, _experiment(params))
    client = mlflow.tracking.MlflowClient()
    exp = mlflow.get_experiment_by_name(_experiment(params))
    all_tags = {
        KIND_TAG: "pipeline",
        PIPELINE_TAG: kind,
        "git_commit": tracking.git_commit(root),
        **{k: str(v) for k, v in (tags or {}).items()},
    }
    run = client.create_run(exp.experiment_id, run_name=kind, tags=all_tags)
    return {
        "parent_run_id": run.info.run_id,
        "champion_before": champion_version(client, params.promote.registered_model),
    }


def find(params: Params, root: Path, tags: dict) -> str:
    """The open parent run carrying these tags (Kubeflow's exit handler finds its run this way)."""
    mlflow = tracking.setup(root, _experiment(params))
    exp = mlflow.get_experiment_by_name(_experiment(params))
    query = " and ".join([f"tags.`{KIND_TAG}` = 'pipeline'"] + [f"tags.`{k}` = '{v}'" for k, v in tags.items()])
    runs = mlflow.tracking.MlflowClient().search_runs([exp.experiment_id], filter_string=query, max_results=2)
    if not runs:
        raise FreshenError(f"no pipeline run tagged {tags} in experiment '{_experiment(params)}'")
    return runs[0].info.run_id


def end(params: Params, root: Path, run_id: str, failed: list[str] | None = None) -> dict:
    """Close the parent run: FINISHED if the last attempt of every step finished and the caller
    saw no failed task (`failed`: a step can fail before its child run exists), else FAILED."""
    mlflow = tracking.setup(root, _experiment(params))
    client = mlflow.tracking.MlflowClient()
    parent = client.get_run(run_id)
    children = client.search_runs([parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{run_id}'")
    latest: dict[tuple, object] = {}  # a retried step counts by its last attempt
    for child in sorted(children, key=lambda r: r.info.start_time or 0):
        if child.info.status == "RUNNING":  # its container died without closing it
            client.set_terminated(child.info.run_id, "KILLED")
        latest[(child.info.run_name, child.data.tags.get(UNIT_TAG, ""))] = child
    states = {"/".join(filter(None, key)): client.get_run(c.info.run_id).info.status for key, c in latest.items()}
    ok = bool(states) and all(s == "FINISHED" for s in states.values()) and not failed
    status = "FINISHED" if ok else "FAILED"
    tracking.end_parent(root, run_id, status)
    return {"parent_run_id": run_id, "status": status, "children": states, "failed_tasks": list(failed or [])}
