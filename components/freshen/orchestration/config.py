"""The project a DAG or a Kubeflow pipeline runs, read once where they are parsed.

Where the project lives: $FRESHEN_PROJECT_DIR, else the folder given by the caller (the DAG
files pass the repository root); the params file: $FRESHEN_PARAMS, else params.yaml in it.
Its params are loaded like every `freshen <step>` loads them (freshen.params: the file, then
$FRESHEN_SET), so the DAGs and the steps validate the same values the same way."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from freshen.errors import FreshenError
from freshen.params import SET_ENV, Params, load_params
from freshen.params.loading import env_overrides, read_file, where_set
from freshen.training.launch import DISTRIBUTED_STEP, check_nproc

PROJECT_ENV, PARAMS_ENV = "FRESHEN_PROJECT_DIR", "FRESHEN_PARAMS"
HOST_PROJECT_ENV = "FRESHEN_HOST_PROJECT_DIR"
__all__ = [
    "HOST_PROJECT_ENV",
    "PARAMS_ENV",
    "PROJECT_ENV",
    "SET_ENV",
    "Project",
    "deployment_overrides",
    "load_project",
]


@dataclass(frozen=True)
class Project:
    """A project folder, its params file and the validated params in it."""

    root: Path
    params_file: str
    params: Params = field(repr=False, hash=False, compare=False)
    # $FRESHEN_SET of this deployment: already in `params`, and handed to every step of a run
    overrides: dict = field(default_factory=dict, repr=False, hash=False, compare=False)

    @property
    def params_path(self) -> Path:
        return self.root / self.params_file if not Path(self.params_file).is_absolute() else Path(self.params_file)

    @property
    def orch(self) -> dict:
        """The orchestration section as plain values (the operators take dicts and lists)."""
        return self.params.orchestration.model_dump()

    @property
    def runner(self) -> str:
        return self.params.orchestration.runner

    @property
    def registered_model(self) -> str:
        return self.params.promote.registered_model

    def cli_root(self) -> str:
        """The project folder as the step sees it: the worker's own, or the container mount."""
        return str(self.root) if self.runner == "local" else self.params.orchestration.container_root

    def image_for(self, step: str) -> str:
        orch = self.params.orchestration
        return orch.gpu_image if self.gpus_for(step) else orch.image

    def gpus_for(self, step: str) -> int:
        gpu = self.params.orchestration.gpu
        return gpu.count if step in gpu.steps else 0

    def step_options(self, step: str) -> dict:
        """Options of `freshen <step>` that the deployment decides: the training step runs as one
        process per GPU (`--nproc N`) when orchestration.gpu gives it N > 1 GPUs."""
        gpus = self.gpus_for(step)
        return {"nproc": gpus} if step == DISTRIBUTED_STEP and gpus > 1 else {}

    def check_ranks(self) -> None:
        """What one rank per GPU needs of `train` (`check_nproc`: a batch they split evenly, no
        teacher): said when the DAG or pipeline is parsed, not first by the train task (which
        checks it again, with a run's overrides)."""
        nproc = self.step_options(DISTRIBUTED_STEP).get("nproc", 1)
        try:
            check_nproc(self.params.train, nproc, bool(self.params.train.teacher.scores))
        except FreshenError as exc:
            field, (_, lines) = "orchestration.gpu.count", read_file(self.params_path)
            where = where_set(field, env_overrides(os.environ), str(self.params_path), lines)
            raise FreshenError(f"{where}: {nproc} GPUs for {DISTRIBUTED_STEP} (one process each): {exc}") from None

    def host_project_dir(self) -> str:
        return self.params.orchestration.docker.host_project_dir or os.environ.get(HOST_PROJECT_ENV) or str(self.root)

    def container_env(self) -> dict[str, str]:
        """Environment handed to step containers: the tracking URI plus the pass_env names that are set."""
        orch = self.params.orchestration
        env = {name: os.environ[name] for name in orch.pass_env if name in os.environ}
        uri = orch.mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if uri:
            env["MLFLOW_TRACKING_URI"] = uri
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        return env


def load_project(default_root: str | Path | None = None, prefer_env: bool = True) -> Project:
    """The project at $FRESHEN_PROJECT_DIR (unless prefer_env is false), else at default_root."""
    root = (os.environ.get(PROJECT_ENV) if prefer_env else None) or default_root
    if root is None:
        raise FreshenError(f"no project folder: set ${PROJECT_ENV}")
    root = Path(root).expanduser().resolve()
    params_file = os.environ.get(PARAMS_ENV) or "params.yaml"
    path = root / params_file if not Path(params_file).is_absolute() else Path(params_file)
    if not path.is_file():
        raise FreshenError(f"{path}: params file not found (set ${PROJECT_ENV} to the project folder)")
    project = Project(root, params_file, load_params(path), deployment_overrides())
    project.check_ranks()
    return project


def deployment_overrides() -> dict:
    """$FRESHEN_SET as a dict of dotted keys ({} when unset)."""
    return {o.key: o.value for o in env_overrides(os.environ)}
