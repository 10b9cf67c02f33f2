"""The same pipelines for Kubeflow Pipelines (kfp v2), built from freshen.orchestration.pipeline:
one container component per step, all running `freshen <step>` in the component image, with the
definition's edges (as the Airflow DAGs have them).

    python -m freshen.orchestration.kfp_pipeline --out freshen_train.yaml
    python -m freshen.orchestration.kfp_pipeline --pipeline refresh --out freshen_cache_refresh.yaml

Images, resources, GPUs and the project volume come from `orchestration:` in params.yaml. Steps
share files through the PersistentVolumeClaim orchestration.kubernetes.pvc, mounted at
orchestration.container_root (kfp-kubernetes, in the [kfp] extra; without it the YAML has no
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
from freshen.orchestration.pipeline import PIPELINES, Pipeline, Step, cli_argv

RUN_TAG = "kfp.run_id"
# a step with nothing to do exits 0 here: Kubeflow has no "skipped" state to turn SKIP_EXIT into
KFP_SKIP_EXIT = 0


def step_component(project: Project, step: Step):
    """A container component running `freshen <step>`; named after the step. A mapped step's
    component also takes its shard and the shard count."""
    image, deployed = project.image_for(step.name), project.step_options(step.name)  # --nproc N

    def spec(root, params_file, parent_run_id, set_json, options=None):
        argv = cli_argv(
            step.name, root, params_file, parent_run_id, set_json, {**deployed, **(options or {})}, KFP_SKIP_EXIT
        )
        return dsl.ContainerSpec(image=image, command=["freshen"], args=argv)

    if step.mapped:

        def component(root: str, params_file: str, parent_run_id: str, set_json: str, shard: int, num_shards: int):
            return spec(root, params_file, parent_run_id, set_json, {"shard": shard, "num_shards": num_shards})
    else:

        def component(root: str, params_file: str, parent_run_id: str, set_json: str):
            return spec(root, params_file, parent_run_id, set_json)

    component.__name__ = component.__qualname__ = step.name
    return dsl.container_component(component)


def run_components(project: Project):
    image = project.orch["image"]

    @dsl.container_component
    def start_run(
        root: str, params_file: str, set_json: str, kind: str, kfp_run_id: str, parent_run_id: dsl.OutputPath(str)
    ):
        return dsl.ContainerSpec(
            image=image,
            command=["freshen"],
            args=[
                "start-run",
                "--root",
                root,
                "--params",
                params_file,
                "--set-json",
                set_json,
                "--kind",
                kind,
                "--tag",
                dsl.ConcatPlaceholder([f"{RUN_TAG}=", kfp_run_id]),
                "--out",
                parent_run_id,
            ],
        )

    @dsl.container_component
    def end_run(root: str, params_file: str, kfp_run_id: str):
        return dsl.ContainerSpec(
            image=image,
            command=["freshen"],
            args=[
                "end-run",
                "--root",
                root,
                "--params",
                params_file,
                "--tag",
                dsl.ConcatPlaceholder([f"{RUN_TAG}=", kfp_run_id]),
            ],
        )

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
        warnings.warn(
            "kfp-kubernetes is not installed: the compiled pipeline mounts no project volume "
            "(pip install kfp-kubernetes)",
            stacklevel=1,
        )
        return None
    return kubernetes.mount_pvc


def frame(project: Project, kind: str, steps: dict, root, params_file, set_json):
    """start-run, and an exit handler (end-run) to put the steps in; `run(step)` adds a step task."""
    start_run, end_run = run_components(project)
    job = dsl.PIPELINE_JOB_ID_PLACEHOLDER
    start = configure(
        project,
        start_run(root=root, params_file=params_file, set_json=set_json, kind=kind, kfp_run_id=job),
        "start_run",
    )
    handler = dsl.ExitHandler(
        configure(project, end_run(root=root, params_file=params_file, kfp_run_id=job), "end_run")
    )

    def run(step: str, **extra):
        task = steps[step](
            root=root, params_file=params_file, set_json=set_json, parent_run_id=start.outputs["parent_run_id"], **extra
        )
        return configure(project, task, step)

    return handler, run


def build_pipeline(project: Project, pipeline: Pipeline):
    """The kfp pipeline of `pipeline`: its steps inside start-run's exit handler, with its edges;
    a mapped step runs once per shard in a ParallelFor (K = orchestration.num_shards when compiled)."""
    components = {s.name: step_component(project, s) for s in pipeline.steps}
    count = int(project.orch["num_shards"])

    @dsl.pipeline(name=pipeline.kfp_name, description=f"{pipeline.dag_id}: {pipeline.about}")
    def run_pipeline(
        root: str = project.orch["container_root"], params_file: str = project.params_file, set_json: str = "{}"
    ):
        handler, run = frame(project, pipeline.kind, components, root, params_file, set_json)
        with handler:
            tasks = {}
            for step in pipeline.steps:
                upstream = [tasks[name] for name in step.after]
                if step.mapped:
                    with dsl.ParallelFor(items=list(range(count)), name="shards") as i:
                        task = run(step.name, shard=i, num_shards=count)
                        if upstream:
                            task.after(*upstream)
                else:
                    task = run(step.name)
                    if upstream:
                        task.after(*upstream)
                tasks[step.name] = task

    return run_pipeline


def compile_pipeline(project: Project, out: str | Path, which: str = "train") -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(project, PIPELINES[which]), str(out))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m freshen.orchestration.kfp_pipeline",
        description="Compile the Freshen pipelines for Kubeflow Pipelines (v2 YAML).",
    )
    parser.add_argument("--pipeline", choices=sorted(PIPELINES), default="train")
    parser.add_argument("--out", required=True, help="YAML file to write")
    parser.add_argument(
        "--project-dir",
        default=None,
        help="project folder whose params.yaml sets images and resources (default: $FRESHEN_PROJECT_DIR, else .)",
    )
    args = parser.parse_args(argv)
    project = load_project(args.project_dir or os.environ.get(PROJECT_ENV) or ".", prefer_env=False)
    out = compile_pipeline(project, args.out, args.pipeline)
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
