"""Step 6, promote: log the trained encoder (plus corrector) as an MLflow pyfunc, register
it, point alias `challenger` at it, and move `champion` only when it beats the current
champion on the chosen metric (the first model becomes champion). Why is kept in tags.

Idempotent: a model whose weights are already registered reuses that version, and
promoting the same version twice changes nothing."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from freshen.atomic import write_json
from freshen.config import get_dotted
from freshen.errors import FreshenError
from freshen.modeling.encoder import model_digest
from freshen.steps.common import NullLog, path

SECTIONS = ["promote", "mlflow"]
TAG_DIGEST, TAG_METRIC, TAG_VALUE = "freshen.model_digest", "freshen.metric", "freshen.metric_value"
TAG_DECISION, TAG_REASON = "freshen.promotion.decision", "freshen.promotion.reason"


def checkpoint_digest(model_dir: Path) -> str:
    h = hashlib.sha256(model_digest(model_dir / "encoder").encode())
    if (model_dir / "corrector").is_dir():
        h.update(model_digest(model_dir / "corrector").encode())
    return h.hexdigest()


def find_version(client, name: str, digest: str):
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(f"name='{name}'")
    except MlflowException:
        return None
    for v in versions:
        if v.tags.get(TAG_DIGEST) == digest:
            return v
    return None


def log_and_register(model_dir: Path, name: str, digest: str, dim: int):
    import mlflow
    import numpy as np
    from mlflow.models import infer_signature

    import freshen
    from freshen.serving import FreshenEmbedder

    artifacts = {"encoder": str(model_dir / "encoder")}
    if (model_dir / "corrector").is_dir():
        artifacts["corrector"] = str(model_dir / "corrector")
    # an unnamed string column: accepts a list of strings or a one-column DataFrame
    signature = infer_signature(["a query"], np.zeros((1, dim), dtype=np.float32), params={"kind": "query"})
    info = mlflow.pyfunc.log_model(
        name="retriever", python_model=FreshenEmbedder(), artifacts=artifacts, signature=signature,
        code_paths=[str(Path(freshen.__file__).parent)],
        pip_requirements=["torch", "transformers", "safetensors", "numpy", "pandas", "tqdm", "pyyaml"],
        registered_model_name=name)
    client = mlflow.tracking.MlflowClient()
    version = str(info.registered_model_version)
    client.set_model_version_tag(name, version, TAG_DIGEST, digest)
    return client.get_model_version(name, version)


def decide(client, name: str, version: str, metric: str, value: float, min_improvement: float = 0.0) -> dict:
    """Set `challenger`; move `champion` only on a strict improvement. Returns the decision."""
    from mlflow.exceptions import MlflowException

    try:
        champion = client.get_model_version_by_alias(name, "champion")
    except MlflowException:
        champion = None
    if champion is not None and str(champion.version) == str(version):
        return {"promoted": False, "version": version, "champion": version,
                "reason": f"v{version} is already champion: nothing to do"}
    client.set_registered_model_alias(name, "challenger", version)
    client.set_model_version_tag(name, version, TAG_METRIC, metric)
    client.set_model_version_tag(name, version, TAG_VALUE, repr(float(value)))
    if champion is None:
        promoted, reason = True, f"first model: no champion yet ({metric}={value:.4f})"
    else:
        best = float(champion.tags.get(TAG_VALUE, "-inf"))
        promoted = value > best + min_improvement
        verb = "beats" if promoted else "does not beat"
        reason = f"{metric}={value:.4f} {verb} champion v{champion.version} ({best:.4f}, margin {min_improvement})"
    if promoted:
        client.set_registered_model_alias(name, "champion", version)
    client.set_model_version_tag(name, version, TAG_DECISION, "champion" if promoted else "challenger")
    client.set_model_version_tag(name, version, TAG_REASON, reason)
    return {"promoted": promoted, "version": version, "reason": reason,
            "champion": version if promoted else str(champion.version)}


def is_registered(params: dict, root: Path) -> bool:
    """Whether the registry this machine tracks to holds the trained model (by its weights'
    digest). The registry lives in MLflow (`mlflow.db` by default), not in DVC: on a fresh clone
    that reproduced the same model, `dvc repro` finds promote up to date and skips it, and
    scripts/run_pipeline.sh asks this to promote anyway."""
    import mlflow

    from freshen import tracking

    model_dir = path(root, params["train"]["out_dir"])
    if not (model_dir / "encoder").is_dir():
        return False
    tracking.setup(root, params.get("mlflow", {}).get("experiment", "freshen"))
    client = mlflow.tracking.MlflowClient()
    return find_version(client, params["promote"]["registered_model"], checkpoint_digest(model_dir)) is not None


def run(params: dict, root: Path, log=NullLog()) -> dict:
    import mlflow

    from freshen import tracking

    cfg = params["promote"]
    tracking.setup(root, params.get("mlflow", {}).get("experiment", "freshen"))
    metrics_file = path(root, params["evaluate"]["metrics"])
    metrics = json.loads(metrics_file.read_text())
    try:
        value = float(get_dotted(metrics, cfg["metric"]))
    except (KeyError, TypeError):
        raise FreshenError(f"{metrics_file}: field '{cfg['metric']}' (promote.metric) not found") from None
    model_dir = path(root, params["train"]["out_dir"])
    digest = checkpoint_digest(model_dir)
    name = cfg["registered_model"]
    client = mlflow.tracking.MlflowClient()
    existing = find_version(client, name, digest)
    if existing is None:
        dim = json.loads((model_dir / "encoder" / "config.json").read_text())["hidden_size"]
        existing = log_and_register(model_dir, name, digest, dim)
    decision = decide(client, name, str(existing.version), cfg["metric"], value, float(cfg.get("min_improvement", 0)))
    decision.update(registered_model=name, metric=cfg["metric"], value=value, model_digest=digest)
    write_json(path(root, cfg["out"]), decision)
    log.tags({"promotion.decision": "champion" if decision["promoted"] else "challenger",
              "promotion.reason": decision["reason"], "registered_version": decision["version"]})
    log.metrics({"promoted": int(decision["promoted"]), "promoted_metric": value})
    print(f"promote: {name} v{decision['version']}: {decision['reason']}")
    return decision
