"""The `orchestration` section: how the Airflow DAGs (dags/) and the Kubeflow pipeline run the
same `freshen <step>` commands (docs/orchestration.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import field_validator

from freshen.orchestration.pipeline import all_steps, default_gpu_steps
from freshen.params.base import Section, doc, section

GPU_STEPS = default_gpu_steps()  # the steps the pipeline definition marks as GPU work
PASS_ENV = ["MLFLOW_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "HF_HUB_OFFLINE"]


class DvcParams(Section):
    enabled: bool = doc(True, "`dvc add` the refreshed cache (false: the version_cache task is skipped).")
    push: bool = doc(False, "Also `dvc push` it to the default remote.")


class GpuParams(Section):
    count: int = doc(0, "GPUs per GPU step (0: every step runs on `image`, without GPUs).", ge=0)
    steps: list[str] = doc(GPU_STEPS, "The steps that get GPUs and gpu_image.")

    @field_validator("steps")
    @classmethod
    def _known_steps(cls, steps: list[str]) -> list[str]:
        """A typo would silently run that step on the CPU."""
        known = {s.name for s in all_steps()}
        unknown = [name for name in steps if name not in known]
        if unknown:
            raise ValueError(f"unknown step {unknown[0]!r} (steps: {', '.join(sorted(known))})")
        return steps


class ResourcesParams(Section):
    requests: dict[str, str | int | float] = doc({"cpu": "2", "memory": "8Gi"}, "Kubernetes resource requests.")
    limits: dict[str, str | int | float] = doc(
        {"memory": "16Gi"}, "Kubernetes resource limits; docker uses limits.memory."
    )


class DockerParams(Section):
    url: str = doc("unix://var/run/docker.sock", "The Docker daemon.")
    host_project_dir: str | None = doc(
        None, "Host folder mounted at container_root; null: $FRESHEN_HOST_PROJECT_DIR, else the project folder."
    )
    network: str | None = doc(
        None, "Network of the step containers, e.g. the compose network (to reach MLflow and MinIO)."
    )


class KubernetesParams(Section):
    namespace: str = doc("freshen", "Namespace of the step pods.")
    pvc: str = doc("freshen-project", "PersistentVolumeClaim with the project folder, mounted at container_root.")
    service_account: str | None = doc(None, "Service account of the step pods.")
    env_secret: str | None = doc(None, "A Secret whose keys become env vars (MLflow and S3 credentials).")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = doc("IfNotPresent", "Image pull policy.")


class RefreshParams(Section):
    policy: Literal["always", "never", "drift"] = doc(
        "always",
        "When the refresh re-embeds the corpus with the champion: always; never (serve h(stale cache) plus "
        "the added and edited documents encoded); drift (re-embed when a probe says h(cache) drifted).",
    )
    min_cosine: float = doc(
        0.95,
        "drift, signal cosine: re-embed when the mean cosine between h(stale row) and the champion's "
        "embedding of the probe documents is below this.",
        ge=0,
        le=1,
    )
    probe_docs: int = doc(512, "drift, signal cosine: documents of the probe sample, encoded by the champion.", ge=2)
    signal: Literal["dev_ndcg", "cosine"] = doc(
        "dev_ndcg",
        "drift: what decides. dev_ndcg: dev nDCG@10 of the champion's queries over h(stale cache), against the "
        "dev figure it was promoted on (no passage encoded); cosine: min_cosine on the probe.",
    )
    max_dev_drop: float = doc(
        0.01,
        "drift, signal dev_ndcg: re-embed when h(stale cache) scores more than this below the promoted dev figure.",
        ge=0,
    )


class OrchestrationParams(Section):
    runner: Literal["local", "docker", "kubernetes"] = doc(
        "local", "Where steps run: the Airflow worker's own Python, DockerOperator or KubernetesPodOperator."
    )
    local_mode: Literal["inprocess", "subprocess"] = doc(
        "inprocess", "local runner: the CLI called in the task, or `python -m freshen`."
    )
    retries: int = doc(2, "Retries per task; steps are idempotent, a retry overwrites only its own output.", ge=0)
    retry_delay_s: int = doc(60, "Seconds between retries.", ge=0)
    refresh_cron: str | None = doc(
        "0 3 * * 0", "Cache refresh on this cron (null: never), and whenever the champion or the corpus changes."
    )
    corpus_cron: str | None = doc(
        None,
        "freshen_corpus_update: prepare the dataset again on this cron and announce a new corpus version "
        "(null: when triggered).",
    )
    num_shards: int = doc(4, "Cache refresh: corpus shards re-embedded in parallel.", ge=1)
    champion_dir: str = doc("artifacts/champion", "The champion's encoder and corrector, fetched from the registry.")
    shards_dir: str = doc("artifacts/cache/shards", "shard-III-of-KKK/ folders, one per shard.")
    refresh_dir: str = doc("artifacts/cache/refreshed", "The merged cache (+ index.faiss), the version DVC tracks.")
    serving_dir: str = doc("artifacts/serving", "Immutable index folders + current.json, what consumers read.")
    keep_serving: int = doc(2, "Serving folders kept (the current one and the one before it).", ge=1)
    refresh: RefreshParams = section(RefreshParams, "Whether a cache refresh re-embeds the corpus.")
    dvc: DvcParams = section(DvcParams, "Versioning of the refreshed cache.")
    mlflow_tracking_uri: str | None = doc(
        None, "Containers: the tracking server; null: the worker's $MLFLOW_TRACKING_URI."
    )
    pass_env: list[str] = doc(PASS_ENV, "Worker environment variables copied into step containers.")
    container_root: str = doc("/project", "Where the project folder is mounted inside the containers.")
    image: str = doc("freshen:cpu", "Image of the steps.")
    gpu_image: str = doc("freshen:gpu", "Image of the GPU steps when gpu.count > 0.")
    gpu: GpuParams = section(GpuParams, "GPUs for the heavy steps.")
    resources: ResourcesParams = section(ResourcesParams, "Kubernetes requests/limits (Kubeflow too).")
    docker: DockerParams = section(DockerParams, "The docker runner.")
    kubernetes: KubernetesParams = section(KubernetesParams, "The kubernetes runner.")

    @field_validator("refresh_cron", "corpus_cron")
    @classmethod
    def _cron(cls, cron: str | None) -> str | None:
        if cron is None:
            return cron
        try:
            from croniter import croniter  # comes with Airflow; containers never parse DAGs
        except ImportError:
            return cron
        if not croniter.is_valid(cron):
            raise ValueError(f"not a valid cron expression: {cron!r}")
        return cron
