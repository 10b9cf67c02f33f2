"""The Kubeflow pipelines executed: train, then refresh, with kfp.local's DockerRunner.

    DOCKER_HOST=unix:///run/freshen-podman.sock \
        python -m benchmarks.kfp_local --image localhost/freshen:cpu --out benchmarks/results/deployment

The pipelines are the ones `python -m freshen.orchestration.kfp_pipeline` compiles
(`build_pipeline`), run on a tiny project (tests/tiny.py) that is bind-mounted at
orchestration.container_root, the way the compiled YAML mounts the PersistentVolumeClaim: kfp.local
ignores kubernetes platform settings (kfp-kubernetes' mount_pvc), resources and retries, so the
mount is given to the DockerRunner instead. kfp.local runs the exit handler (end-run) and the
ParallelFor over the shards. Steps run as uid 1000, as they would in a cluster with the image's
USER.

Checks after each pipeline: every task succeeded, the MLflow parent run of the Kubeflow run is
FINISHED with one FINISHED child run per step; after train, the champion exists; after refresh,
the serving index is the re-embedded cache. Writes kfp.json and kfp.md under --out."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from benchmarks.common import ROOT, command_line, machine, write_summary
from tests.tiny import make_project


def prepare(work: Path, image: str) -> Path:
    """A tiny DVC project owned by uid 1000, its params naming `image` for every step."""
    if work.exists():
        shutil.rmtree(work)
    project = make_project(work / "project")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["orchestration"].update(image=image, gpu_image=image)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=project, check=True)
    subprocess.run(["chown", "-R", "1000:1000", str(project)], check=True)
    return project


def runs_of(project: Path, kind: str) -> tuple[dict, list[dict]]:
    """The last MLflow parent run of `kind` and its child runs, as {name, status, tags}."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    exp = client.get_experiment_by_name("freshen")
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"]) if exp else []
    parent = next((r for r in runs if r.data.tags.get("freshen.kind") == "pipeline" and r.info.run_name == kind), None)
    if parent is None:  # the pipeline failed before its first step opened the run
        return {}, []
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]

    def row(r):
        return {"name": r.info.run_name, "status": r.info.status, "kfp_run_id": r.data.tags.get("kfp.run_id")}

    return row(parent), sorted((row(c) for c in children), key=lambda c: c["name"])


def run_pipeline(project: Path, kind: str) -> dict:
    from freshen.orchestration.config import load_project
    from freshen.orchestration.kfp_pipeline import build_pipeline
    from freshen.orchestration.pipeline import PIPELINES

    proj = load_project(project, prefer_env=False)
    pipeline = build_pipeline(proj, PIPELINES[kind])
    start = time.perf_counter()
    error = None
    try:
        pipeline(root=proj.orch["container_root"], params_file=proj.params_file, set_json="{}")
    except Exception as exc:  # kfp.local raises RuntimeError naming the failed task
        error = f"{type(exc).__name__}: {exc}"
    seconds = time.perf_counter() - start
    parent, children = runs_of(project, kind) if (project / "mlflow.db").exists() else ({}, [])
    steps = set(PIPELINES[kind].names)
    finished = {c["name"] for c in children if c["status"] == "FINISHED"}
    ok = error is None and parent.get("status") == "FINISHED" and steps <= finished
    return {"pipeline": kind, "seconds": seconds, "error": error, "parent": parent, "children": children, "ok": ok}


def markdown(summary: dict) -> str:
    lines = [
        "# Kubeflow pipelines executed with kfp.local (DockerRunner on podman)",
        "",
        f"Command: `{summary['command']}`  ",
        f"Machine: {summary['machine']}  ",
        f"Image: `{summary['image']}`; kfp {summary['kfp']}; Docker API at `{summary['docker_host']}`.",
        "",
        "| pipeline | seconds | MLflow parent run | child runs FINISHED | result |",
        "|---|---|---|---|---|",
    ]
    for r in summary["runs"]:
        done = sum(c["status"] == "FINISHED" for c in r["children"])
        lines.append(
            f"| `{r['pipeline']}` | {r['seconds']:.0f} | {r['parent'].get('status', '-')} "
            f"| {done} of {len(r['children'])} | {'pass' if r['ok'] else 'FAIL'} |"
        )
        if r["error"]:
            lines.append(f"|  | error: {r['error'][:300]} | | | |")
    lines += ["", *(f"- {c}" for c in summary["checks"]), "", f"Result: **{'PASS' if summary['ok'] else 'FAIL'}**", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.kfp_local", description=__doc__.splitlines()[0])
    parser.add_argument("--image", default="localhost/freshen:cpu")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "deployment")
    parser.add_argument("--work", type=Path, default=None, help="keep the project here (default: a temp dir)")
    args = parser.parse_args(argv)

    import docker
    import kfp
    from kfp import local

    work = Path(args.work or tempfile.mkdtemp(prefix="freshen-kfp-"))
    project = prepare(work, args.image)
    outputs = work / "kfp-outputs"
    outputs.mkdir()
    outputs.chmod(0o777)  # the steps (uid 1000) write their output parameters here
    container_root = yaml.safe_load((project / "params.yaml").read_text())["orchestration"]["container_root"]
    runner = local.DockerRunner(
        mounts=[docker.types.Mount(target=container_root, source=str(project), type="bind")],
        user="1000:1000",
        working_dir=container_root,
        # kfp.local passes a component's command + args as the container's CMD, keeping the image's
        # ENTRYPOINT (`freshen`); Kubernetes replaces it. `env` runs the command as given.
        entrypoint=["/usr/bin/env"],
        network_mode="none",
    )
    local.init(runner=runner, pipeline_root=str(outputs), raise_on_error=True)

    runs = [run_pipeline(project, "train")]
    checks = []
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    registered = yaml.safe_load((project / "params.yaml").read_text())["promote"]["registered_model"]
    try:
        champion = client.get_model_version_by_alias(registered, "champion").version
        checks.append(f"after train: `{registered}@champion` is version {champion}")
    except Exception as exc:  # no champion: the check fails below
        champion = None
        checks.append(f"after train: no champion ({exc})")
    runs.append(run_pipeline(project, "refresh"))
    current = project / "artifacts" / "serving" / "current.json"
    serving = json.loads(current.read_text()) if current.is_file() else {}
    checks.append(f"after refresh: artifacts/serving/current.json = {json.dumps(serving)[:300]}")
    ok = all(r["ok"] for r in runs) and champion is not None and bool(serving)

    summary = {
        "command": command_line("kfp_local", argv),
        "machine": machine(),
        "image": args.image,
        "kfp": kfp.__version__,
        "docker_host": os.environ.get("DOCKER_HOST", "(docker default)"),
        "work": str(work),
        "runs": runs,
        "checks": checks,
        "ok": ok,
    }
    return 0 if write_summary(args.out, "kfp", summary, markdown) else 1


if __name__ == "__main__":
    raise SystemExit(main())
