"""The same pipelines for Kubeflow Pipelines (kfp v2): one container component per step, all
running `freshen <step>` in the component image, with the edges of the Airflow DAGs.

    python -m freshen.orchestration.kfp_pipeline --out freshen_train.yaml
    python -m freshen.orchestration.kfp_pipeline --pipeline refresh --out freshen_cache_refresh.yaml

Images, resources, GPUs and the project volume come from `orchestration:` in params.yaml. Steps
share files through the PersistentVolumeClaim orchestration.kubernetes.pvc, mounted at
orchestration.container_root (needs the kfp-kubernetes package; without it the YAML has no
volume and a warning says so). start-run opens the MLflow parent run; an exit handler closes
it, finding it by the Kubeflow run id it was tagged with.

No `from __future__ import annotations` here: kfp reads the components' annotations as types."""

import argparse
import functools
import os
import sys
import warnings
from pathlib import Path

from kfp import compiler, dsl

from freshen.orchestration.config import PROJECT_ENV, Project, load_project

RUN_TAG = "kfp.run_id"
TRAIN_STEPS = ("prepare", "cluster_queries", "embed_cache", "train", "reembed", "evaluate", "promote")
REFRESH_STEPS = ("fetch_champion", "corrected_index", "reembed_shard", "merge_shards", "build_index",
                 "version_cache", "publish_index")


def step_component(project: Project, step: str):
    """A container component running `freshen <step>`; named after the step."""
    image, verb = project.image_for(step), step.replace("_", "-")

    def component(root: str, params_file: str, parent_run_id: str, set_json: str):
        return dsl.ContainerSpec(image=image, command=["freshen"], args=[
            verb, "--root", root, "--params", params_file, "--parent-run-id", parent_run_id, "--set-json", set_json,
            "--skip-exit-code", "0"])

    component.__name__ = component.__qualname__ = step
    return dsl.container_component(component)


def shard_component(project: Project):
    image = project.image_for("reembed_shard")

    def reembed_shard(root: str, params_file: str, parent_run_id: str, set_json: str, shard: int, num_shards: int):
        return dsl.ContainerSpec(image=image, command=["freshen"], args=[
            "reembed-shard", "--root", root, "--params", params_file, "--parent-run-id", parent_run_id,
            "--set-json", set_json, "--shard", shard, "--num-shards", num_shards])

    return dsl.container_component(reembed_shard)


def run_components(project: Project):
    image = project.orch["image"]

    @dsl.container_component
    def start_run(root: str, params_file: str, set_json: str, kind: str, kfp_run_id: str,
                  parent_run_id: dsl.OutputPath(str)):
        return dsl.ContainerSpec(image=image, command=["freshen"], args=[
            "start-run", "--root", root, "--params", params_file, "--set-json", set_json, "--kind", kind,
            "--tag", dsl.ConcatPlaceholder([f"{RUN_TAG}=", kfp_run_id]), "--out", parent_run_id])

    @dsl.container_component
    def end_run(root: str, params_file: str, kfp_run_id: str):
        return dsl.ContainerSpec(image=image, command=["freshen"], args=[
            "end-run", "--root", root, "--params", params_file,
            "--tag", dsl.ConcatPlaceholder([f"{RUN_TAG}=", kfp_run_id])])

    return start_run, end_run


def configure(project: Project, task, step: str):
    """Resources, GPUs, the project volume; no caching (steps write to the shared volume)."""
    orch = project.orch
    task.set_caching_options(False)
    requests, limits = orch["resources"].get("requests") or {}, orch["resources"].get("limits") or {}
    if "cpu" in requests:
        task.set_cpu_request(str(requests["cpu"]))
    if "memory" in requests:
        task.set_memory_request(str(requests["memory"]))
    if "cpu" in limits:
        task.set_cpu_limit(str(limits["cpu"]))
    if "memory" in limits:
        task.set_memory_limit(str(limits["memory"]))
    if project.gpus_for(step):
        task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(project.gpus_for(step))
    mount = _mount_pvc()
    if mount is not None:
        mount(task, pvc_name=orch["kubernetes"]["pvc"], mount_path=orch["container_root"])
    return task


@functools.cache
def _mount_pvc():
    try:
        from kfp import kubernetes
    except ImportError:
        warnings.warn("kfp-kubernetes is not installed: the compiled pipeline mounts no project volume "
                      "(pip install kfp-kubernetes)", stacklevel=1)
        return None
    return kubernetes.mount_pvc


def frame(project: Project, kind: str, steps: dict, root, params_file, set_json):
    """start-run, and an exit handler (end-run) to put the steps in; `run(step)` adds a step task."""
    start_run, end_run = run_components(project)
    job = dsl.PIPELINE_JOB_ID_PLACEHOLDER
    start = configure(project, start_run(root=root, params_file=params_file, set_json=set_json, kind=kind,
                                         kfp_run_id=job), "start_run")
    handler = dsl.ExitHandler(configure(project, end_run(root=root, params_file=params_file, kfp_run_id=job),
                                        "end_run"))

    def run(step: str, **extra):
        task = steps[step](root=root, params_file=params_file, set_json=set_json,
                           parent_run_id=start.outputs["parent_run_id"], **extra)
        return configure(project, task, step)

    return handler, run


def train_pipeline(project: Project):
    steps = {s: step_component(project, s) for s in TRAIN_STEPS}

    @dsl.pipeline(name="freshen-train", description="freshen_train: the Airflow DAG's steps as containers")
    def freshen_train(root: str = project.orch["container_root"], params_file: str = project.params_file,
                      set_json: str = "{}"):
        handler, run = frame(project, "train", steps, root, params_file, set_json)
        with handler:
            prepare = run("prepare")
            clusters = run("cluster_queries").after(prepare)
            stale_cache = run("embed_cache").after(prepare)
            trained = run("train").after(clusters, stale_cache)
            fresh_cache = run("reembed").after(trained)
            scores = run("evaluate").after(fresh_cache)
            run("promote").after(scores)

    return freshen_train


def refresh_pipeline(project: Project):
    steps = {s: step_component(project, s) for s in REFRESH_STEPS if s != "reembed_shard"}
    steps["reembed_shard"] = shard_component(project)
    count = int(project.orch["num_shards"])

    @dsl.pipeline(name="freshen-cache-refresh", description="freshen_cache_refresh: sharded re-embedding")
    def freshen_cache_refresh(root: str = project.orch["container_root"], params_file: str = project.params_file,
                              set_json: str = "{}"):
        handler, run = frame(project, "refresh", steps, root, params_file, set_json)
        with handler:
            champion = run("fetch_champion")
            corrected = run("corrected_index").after(champion)
            with dsl.ParallelFor(items=list(range(count)), name="shards") as i:
                shards = run("reembed_shard", shard=i, num_shards=count).after(champion)
            merged = run("merge_shards").after(shards)
            index = run("build_index").after(merged)
            versioned = run("version_cache").after(index)
            run("publish_index").after(versioned, corrected)

    return freshen_cache_refresh


PIPELINES = {"train": train_pipeline, "refresh": refresh_pipeline}


def compile_pipeline(project: Project, out: str | Path, which: str = "train") -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(PIPELINES[which](project), str(out))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m freshen.orchestration.kfp_pipeline",
                                     description="Compile the Freshen pipelines for Kubeflow Pipelines (v2 YAML).")
    parser.add_argument("--pipeline", choices=sorted(PIPELINES), default="train")
    parser.add_argument("--out", required=True, help="YAML file to write")
    parser.add_argument("--project-dir", default=None,
                        help="project folder whose params.yaml sets images and resources "
                             "(default: $FRESHEN_PROJECT_DIR, else .)")
    args = parser.parse_args(argv)
    project = load_project(args.project_dir or os.environ.get(PROJECT_ENV) or ".", prefer_env=False)
    out = compile_pipeline(project, args.out, args.pipeline)
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
