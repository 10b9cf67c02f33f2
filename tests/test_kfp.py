"""The Kubeflow pipelines compile to v2 YAML with one container component per step, all running
the `freshen` CLI in the component image, with the same edges as the Airflow DAGs."""

import sys
from pathlib import Path

import pytest
import yaml
from dag_shapes import REFRESH_EDGES, TRAIN_EDGES, TRAIN_STEPS

pytest.importorskip("kfp")

from freshen.cli import build_parser  # noqa: E402
from freshen.orchestration import kfp_pipeline  # noqa: E402
from freshen.orchestration.config import load_project  # noqa: E402
from freshen.orchestration.pipeline import PIPELINES, cli_argv  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def compiled_docs(tmp_path, which: str) -> list[dict]:
    """The compiled YAML's documents: the pipeline spec, then the Kubernetes platform spec."""
    out = tmp_path / f"{which}.yaml"
    assert kfp_pipeline.main(["--pipeline", which, "--out", str(out), "--project-dir", str(REPO)]) == 0
    return list(yaml.safe_load_all(out.read_text()))


def compiled(tmp_path, which: str) -> dict:
    return compiled_docs(tmp_path, which)[0]


@pytest.mark.parametrize("which", ["train", "refresh"])
def test_every_executor_mounts_the_project_volume(tmp_path, which):
    """kfp-kubernetes comes with the [kfp] extra: every container gets the project PVC at
    orchestration.container_root (without it, the pipeline would run on empty folders)."""
    spec, platform = compiled_docs(tmp_path, which)
    orch = load_project(REPO, prefer_env=False).params.orchestration
    executors = spec["deploymentSpec"]["executors"]
    mounts = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(mounts) == set(executors) and len(executors) >= 3
    for name, executor in mounts.items():
        [pvc] = executor["pvcMount"]
        assert pvc["mountPath"] == orch.container_root, name
        assert pvc["pvcNameParameter"]["runtimeValue"]["constant"] == orch.kubernetes.pvc, name


def task_name(kfp_name: str) -> str:
    return kfp_name.replace("-", "_")


def kfp_edges(spec: dict) -> set[tuple[str, str]]:
    """(upstream, downstream) over all DAG levels: explicit dependencies, data from start-run,
    and groups (exit handler, for-loop) stood in for by the tasks inside them."""
    comps = spec["components"]

    def members(comp_name: str) -> set[str]:
        out = set()
        for name, task in comps[comp_name].get("dag", {}).get("tasks", {}).items():
            ref = task["componentRef"]["name"]
            out |= members(ref) if "dag" in comps.get(ref, {}) else {task_name(name)}
        return out

    edges = set()

    def walk(dag: dict, parent_inputs: set[str]):
        for name, task in dag.get("tasks", {}).items():
            ref = task["componentRef"]["name"]
            inner = members(ref) if "dag" in comps.get(ref, {}) else {task_name(name)}
            for upstream in task.get("dependentTasks", []):
                up = comps.get(dag["tasks"][upstream]["componentRef"]["name"], {})
                ups = members(dag["tasks"][upstream]["componentRef"]["name"]) if "dag" in up else {task_name(upstream)}
                edges.update((u, d) for u in ups for d in inner)
            params = task.get("inputs", {}).get("parameters", {})
            if any("start-run-parent_run_id" in str(p) for p in params.values()) and "dag" not in comps.get(ref, {}):
                edges.add(("start_run", task_name(name)))
            if "dag" in comps.get(ref, {}):
                walk(comps[ref]["dag"], parent_inputs)

    walk(spec["root"]["dag"], set())
    return edges


def test_training_pipeline_has_every_step_and_the_airflow_edges(tmp_path):
    spec = compiled(tmp_path, "train")
    params = load_project(REPO, prefer_env=False).orch
    steps = set(build_parser()._actions[1].choices)
    for step in TRAIN_STEPS + ("start_run", "end_run"):
        comp = spec["components"][f"comp-{step.replace('_', '-')}"]
        container = spec["deploymentSpec"]["executors"][comp["executorLabel"]]["container"]
        assert container["command"] == ["freshen"]
        assert container["args"][0] == step.replace("_", "-") and container["args"][0] in steps
        assert container["image"] in (params["image"], params["gpu_image"])
        if step in TRAIN_STEPS:
            assert "--parent-run-id" in container["args"] and "--set-json" in container["args"]
    airflow_only = {"publish_champion", "record_outputs", "end_run"}  # tasks of the worker (end_run: below)
    ours = {(u, d) for u, d in TRAIN_EDGES if not airflow_only & {u, d}}
    got = kfp_edges(spec)
    assert {e for e in got if "end_run" not in e} == ours
    assert {u for u, d in got if d == "end_run"} == set(TRAIN_STEPS)
    # end-run runs whatever happens: it is the exit handler around every step
    exit_task = spec["root"]["dag"]["tasks"]["end-run"]
    assert exit_task["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"


def test_refresh_pipeline_shards_in_parallel_with_the_airflow_edges(tmp_path):
    spec = compiled(tmp_path, "refresh")
    for step in (
        "fetch-champion",
        "corrected-index",
        "reembed-shard",
        "merge-shards",
        "build-index",
        "version-cache",
        "publish-index",
    ):
        assert f"comp-{step}" in spec["components"]
    loop = next(c for name, c in spec["components"].items() if name.startswith("comp-for-loop"))
    assert "reembed-shard" in loop["dag"]["tasks"]
    ours = {(u, d) for u, d in REFRESH_EDGES if "end_run" not in (u, d) and "plan_shards" not in (u, d)}
    got = {e for e in kfp_edges(spec) if "end_run" not in e}
    assert got - {("start_run", "reembed_shard")} == ours  # Airflow: start_run -> plan_shards -> reembed_shard


@pytest.mark.parametrize("which", sorted(PIPELINES))
def test_every_step_runs_the_argv_the_airflow_tasks_run(tmp_path, which):
    """One argv builder: Kubeflow's container args are cli_argv's, with the pipeline's inputs in
    place of the values, and a step with nothing to do exits 0 (Kubeflow has no skipped state)."""
    spec = compiled(tmp_path, which)
    params = load_project(REPO, prefer_env=False).params

    def inp(name: str) -> str:
        return f"{{{{$.inputs.parameters['{name}']}}}}"

    for step in PIPELINES[which].steps:
        comp = spec["components"][f"comp-{step.verb}"]
        container = spec["deploymentSpec"]["executors"][comp["executorLabel"]]["container"]
        options = {"shard": inp("shard"), "num_shards": inp("num_shards")} if step.mapped else None
        assert container["args"] == cli_argv(
            step.name, inp("root"), inp("params_file"), inp("parent_run_id"), inp("set_json"), options, skip_exit_code=0
        )
        orch = params.orchestration
        gpu = step.name in orch.gpu.steps and orch.gpu.count
        assert container["image"] == (orch.gpu_image if gpu else orch.image)


def test_training_on_two_gpus_runs_two_ranks_in_one_pod(tmp_path):
    """orchestration.gpu.count 2: the train component asks for 2 GPUs and runs `--nproc 2`
    (a multi-GPU pod, no PyTorchJob); the encoding steps get the GPUs but one process."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["orchestration"]["gpu"]["count"] = 2
    project = tmp_path / "proj"
    project.mkdir()
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = tmp_path / "train.yaml"
    assert kfp_pipeline.main(["--pipeline", "train", "--out", str(out), "--project-dir", str(project)]) == 0
    spec = next(yaml.safe_load_all(out.read_text()))

    def container(verb: str) -> dict:
        comp = spec["components"][f"comp-{verb}"]
        return spec["deploymentSpec"]["executors"][comp["executorLabel"]]["container"]

    assert container("train")["args"][-4:] == ["--nproc", "2", "--skip-exit-code", "0"]
    assert container("train")["resources"]["accelerator"]["resourceCount"] == "2"
    assert "--nproc" not in container("embed-cache")["args"]
    assert container("embed-cache")["resources"]["accelerator"]["resourceCount"] == "2"


def test_compile_command_writes_yaml(tmp_path):
    import subprocess

    out = tmp_path / "p.yaml"
    res = subprocess.run(
        [sys.executable, "-m", "freshen.orchestration.kfp_pipeline", "--out", str(out), "--project-dir", str(REPO)],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    assert next(yaml.safe_load_all(out.read_text()))["pipelineInfo"]["name"] == "freshen-train"


def test_start_run_and_end_run_find_each_other_by_the_kubeflow_run_id(tmp_path, mlflow_uri, capsys):
    """What the pipeline's start-run and exit handler do: no XCom, only a tag on the parent run."""
    import json

    import mlflow
    from freshen.cli import main
    from mlflow.tracking import MlflowClient

    root = tmp_path / "proj"
    root.mkdir()
    (root / "params.yaml").write_text((REPO / "params.yaml").read_text())
    out = tmp_path / "out" / "parent_run_id"
    assert (
        main(["start-run", "--root", str(root), "--kind", "train", "--tag", "kfp.run_id=job-7", "--out", str(out)]) == 0
    )
    parent = out.read_text()
    mlflow.set_tracking_uri(mlflow_uri)
    client = MlflowClient()
    child = client.create_run(
        client.get_run(parent).info.experiment_id, run_name="prepare", tags={"mlflow.parentRunId": parent}
    )
    client.set_terminated(child.info.run_id, "FINISHED")
    capsys.readouterr()
    assert main(["end-run", "--root", str(root), "--tag", "kfp.run_id=job-7"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result == {
        "parent_run_id": parent,
        "status": "FINISHED",
        "children": {"prepare": "FINISHED"},
        "failed_tasks": [],
    }
    assert client.get_run(parent).info.status == "FINISHED"
