"""Where one `freshen <step>` call runs, chosen by orchestration.runner: the worker's own
Python (in-process or `python -m freshen`), a DockerOperator, or a KubernetesPodOperator.
Every runner executes the same argument list against the same CLI; the providers are
imported only when their runner is chosen, so the DAGs import without them."""

from __future__ import annotations

import re
import subprocess
import sys

from freshen.errors import FreshenError
from freshen.orchestration.commands import SKIP_EXIT, StepFailed, StepSkipped
from freshen.orchestration.config import Project

# what a container operator's argument list says instead of a value only known at run time
XCOM_FIELD = "{{{{ ti.xcom_pull(task_ids='start_run')['{key}'] }}}}"
# /dev/shm of a container whose training ranks (one per GPU) talk through it: NCCL's transport
# within a machine needs more than the 64 MiB containers get by default
RANKS_SHM_BYTES = 2 * 1024**3


def run_local(argv: list[str], mode: str = "inprocess") -> None:
    """Run the CLI here; raise StepSkipped / StepFailed on a skip / failure exit code."""
    if mode == "inprocess":
        from freshen.cli import main

        code = main(list(argv))
    else:
        code = subprocess.run([sys.executable, "-m", "freshen", *argv], check=False).returncode
    if code == SKIP_EXIT:
        raise StepSkipped(f"freshen {argv[0]}: skipped (see the log above for why)")
    if code:
        raise StepFailed(f"freshen {' '.join(argv)} exited with {code}; its error is in the log above", code)


def docker_memory(value: str | None) -> str | None:
    """Kubernetes quantities (16Gi) as Docker understands them (16g)."""
    if value is None:
        return None
    match = re.fullmatch(r"(\d+)([KMGT])i?", str(value))
    return f"{match.group(1)}{match.group(2).lower()}" if match else str(value)


def docker_operator(project: Project, step: str, argv: list[str] | None = None, plan=None, **task_kwargs):
    try:
        from airflow.providers.docker.operators.docker import DockerOperator
        from docker.types import DeviceRequest, Mount
    except ImportError as exc:
        raise FreshenError(
            "orchestration.runner is 'docker' but apache-airflow-providers-docker is not installed "
            "(pip install apache-airflow-providers-docker)"
        ) from exc
    orch, gpus = project.orch, project.gpus_for(step)
    kwargs = dict(
        image=project.image_for(step),
        docker_url=orch["docker"]["url"],
        network_mode=orch["docker"]["network"],
        mounts=[Mount(target=orch["container_root"], source=project.host_project_dir(), type="bind")],
        mount_tmp_dir=False,
        auto_remove="success",
        private_environment=project.container_env(),
        mem_limit=docker_memory(orch["resources"].get("limits", {}).get("memory")),
        skip_on_exit_code=SKIP_EXIT,
        device_requests=[DeviceRequest(count=gpus, capabilities=[["gpu"]])] if gpus else None,
        shm_size=RANKS_SHM_BYTES if project.step_options(step) else None,
        **task_kwargs,
    )
    if plan is None:
        return DockerOperator(command=argv, **kwargs)
    return DockerOperator.partial(**kwargs).expand(command=plan)


def kubernetes_operator(project: Project, step: str, argv: list[str] | None = None, plan=None, **task_kwargs):
    try:
        from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
        from kubernetes.client import models as k8s
    except ImportError as exc:
        raise FreshenError(
            "orchestration.runner is 'kubernetes' but apache-airflow-providers-cncf-kubernetes is "
            "not installed (pip install apache-airflow-providers-cncf-kubernetes)"
        ) from exc
    orch, kube, gpus = project.orch, project.orch["kubernetes"], project.gpus_for(step)
    ranks = bool(project.step_options(step))  # --nproc: ranks talk through /dev/shm
    limits = dict(orch["resources"].get("limits") or {})
    if gpus:
        limits["nvidia.com/gpu"] = str(gpus)
    uri = orch["mlflow_tracking_uri"]
    kwargs = dict(
        namespace=kube["namespace"],
        image=project.image_for(step),
        name=f"freshen-{step.replace('_', '-')}",
        env_vars={"TOKENIZERS_PARALLELISM": "false", **({"MLFLOW_TRACKING_URI": uri} if uri else {})},
        env_from=[k8s.V1EnvFromSource(secret_ref=k8s.V1SecretEnvSource(name=kube["env_secret"]))]
        if kube["env_secret"]
        else None,
        container_resources=k8s.V1ResourceRequirements(
            requests=dict(orch["resources"].get("requests") or {}), limits=limits
        ),
        volumes=[
            k8s.V1Volume(
                name="project", persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(claim_name=kube["pvc"])
            ),
            *([shm_volume(k8s)] if ranks else []),
        ],
        volume_mounts=[
            k8s.V1VolumeMount(name="project", mount_path=orch["container_root"]),
            *([k8s.V1VolumeMount(name="dshm", mount_path="/dev/shm")] if ranks else []),
        ],
        service_account_name=kube["service_account"],
        image_pull_policy=kube["image_pull_policy"],
        get_logs=True,
        on_finish_action="delete_succeeded_pod",
        skip_on_exit_code=SKIP_EXIT,
        **task_kwargs,
    )
    if kwargs["service_account_name"] is None:
        del kwargs["service_account_name"]
    if plan is None:
        return KubernetesPodOperator(arguments=argv, **kwargs)
    return KubernetesPodOperator.partial(**kwargs).expand(arguments=plan)


def shm_volume(k8s):
    """A memory-backed /dev/shm for a pod whose ranks talk through it (a pod's default is 64 MiB)."""
    return k8s.V1Volume(
        name="dshm", empty_dir=k8s.V1EmptyDirVolumeSource(medium="Memory", size_limit=str(RANKS_SHM_BYTES))
    )


def container_operator(project: Project, step: str, argv: list[str] | None = None, plan=None, **task_kwargs):
    """The operator running `freshen <argv>` in the component image; `plan` maps it (one per item)."""
    make = {"docker": docker_operator, "kubernetes": kubernetes_operator}[project.runner]
    return make(project, step, argv=argv, plan=plan, **task_kwargs)
