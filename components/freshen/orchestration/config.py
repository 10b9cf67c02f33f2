"""The `orchestration:` section of params.yaml, read once where DAGs are parsed.

Where the project lives: $FRESHEN_PROJECT_DIR, else the folder given by the caller (the DAG
files pass the repository root); the params file: $FRESHEN_PARAMS, else params.yaml in it;
$FRESHEN_SET (a JSON object of dotted keys) adjusts it for one deployment without editing it.
Every bad value is reported with the file and the dotted field."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from freshen.config import set_dotted
from freshen.errors import DataError, FreshenError

RUNNERS = ("local", "docker", "kubernetes")
LOCAL_MODES = ("inprocess", "subprocess")
PROJECT_ENV, PARAMS_ENV = "FRESHEN_PROJECT_DIR", "FRESHEN_PARAMS"
SET_ENV = "FRESHEN_SET"  # JSON object of dotted overrides for this deployment, e.g. the compose stack's runner
HOST_PROJECT_ENV = "FRESHEN_HOST_PROJECT_DIR"


@dataclass(frozen=True)
class Project:
    """A project folder, its params file and the orchestration settings in it."""

    root: Path
    params_file: str
    params: dict = field(repr=False, hash=False, compare=False)
    # $FRESHEN_SET of this deployment: already in `params`, and handed to every step of a run
    overrides: dict = field(default_factory=dict, repr=False, hash=False, compare=False)

    @property
    def params_path(self) -> Path:
        return self.root / self.params_file if not Path(self.params_file).is_absolute() else Path(self.params_file)

    @property
    def orch(self) -> dict:
        return self.params["orchestration"]

    @property
    def runner(self) -> str:
        return self.orch["runner"]

    @property
    def registered_model(self) -> str:
        return self.params["promote"]["registered_model"]

    def cli_root(self) -> str:
        """The project folder as the step sees it: the worker's own, or the container mount."""
        return str(self.root) if self.runner == "local" else self.orch["container_root"]

    def image_for(self, step: str) -> str:
        return self.orch["gpu_image"] if self.gpus_for(step) else self.orch["image"]

    def gpus_for(self, step: str) -> int:
        gpu = self.orch["gpu"]
        return int(gpu["count"]) if step in gpu["steps"] else 0

    def host_project_dir(self) -> str:
        return self.orch["docker"]["host_project_dir"] or os.environ.get(HOST_PROJECT_ENV) or str(self.root)

    def container_env(self) -> dict[str, str]:
        """Environment handed to step containers: the tracking URI plus the pass_env names that are set."""
        env = {name: os.environ[name] for name in self.orch["pass_env"] if name in os.environ}
        uri = self.orch["mlflow_tracking_uri"] or os.environ.get("MLFLOW_TRACKING_URI")
        if uri:
            env["MLFLOW_TRACKING_URI"] = uri
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        return env


def _require(node: dict, key: str, path: Path, prefix: str):
    if not isinstance(node, dict) or key not in node:
        raise DataError(path, "missing (see params.yaml in the repository)", field=f"{prefix}{key}")
    return node[key]


def validate(orch: dict, path: Path) -> None:
    """Check the keys the DAGs read at parse time; the steps check theirs when they run."""
    p = "orchestration."
    runner = _require(orch, "runner", path, p)
    if runner not in RUNNERS:
        raise DataError(path, f"must be one of {', '.join(RUNNERS)}, got {runner!r}", field=p + "runner")
    mode = _require(orch, "local_mode", path, p)
    if mode not in LOCAL_MODES:
        raise DataError(path, f"must be one of {', '.join(LOCAL_MODES)}, got {mode!r}", field=p + "local_mode")
    for key in ("retries", "num_shards"):
        value = _require(orch, key, path, p)
        if not isinstance(value, int) or isinstance(value, bool) or value < (1 if key == "num_shards" else 0):
            raise DataError(path, f"must be an integer >= {1 if key == 'num_shards' else 0}, got {value!r}",
                            field=p + key)
    for key in ("retry_delay_s", "refresh_cron", "champion_dir", "shards_dir", "refresh_dir", "serving_dir",
                "keep_serving", "dvc", "mlflow_tracking_uri", "pass_env", "container_root", "image", "gpu_image",
                "gpu", "resources", "docker", "kubernetes"):
        _require(orch, key, path, p)
    cron = orch["refresh_cron"]
    if cron is not None:
        try:
            from croniter import croniter  # comes with Airflow; containers never parse DAGs
        except ImportError:
            croniter = None
        if not isinstance(cron, str) or (croniter is not None and not croniter.is_valid(cron)):
            raise DataError(path, f"not a valid cron expression: {cron!r}", field=p + "refresh_cron")
    for key in ("count", "steps"):
        _require(orch["gpu"], key, path, p + "gpu.")
    for key in ("enabled", "push"):
        _require(orch["dvc"], key, path, p + "dvc.")
    for key in ("url", "host_project_dir", "network"):
        _require(orch["docker"], key, path, p + "docker.")
    for key in ("namespace", "pvc", "service_account", "env_secret", "image_pull_policy"):
        _require(orch["kubernetes"], key, path, p + "kubernetes.")


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
    params = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(params, dict) or not isinstance(params.get("orchestration"), dict):
        raise DataError(path, "section missing (see params.yaml in the repository)", field="orchestration")
    overrides = deployment_overrides()
    for key, value in overrides.items():
        try:
            set_dotted(params, key, value)
        except FreshenError as exc:
            raise FreshenError(f"${SET_ENV}: {exc}") from None
    validate(params["orchestration"], path)
    return Project(root, params_file, params, overrides)


def deployment_overrides() -> dict:
    """$FRESHEN_SET as a dict of dotted keys ({} when unset)."""
    raw = os.environ.get(SET_ENV)
    if not raw:
        return {}
    try:
        values = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise FreshenError(f"${SET_ENV}: not valid JSON ({exc})") from None
    if not isinstance(values, dict):
        raise FreshenError(f"${SET_ENV}: must be a JSON object of dotted keys, got {raw!r}")
    return values
