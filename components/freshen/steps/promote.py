"""Step 6, promote: log the trained encoder (plus corrector) as an MLflow pyfunc, register
it, point alias `challenger` at it, and move `champion` only when it beats both the current
champion and the pre-trained (zero-shot) encoder on the chosen metric (the first model
becomes champion when it beats zero-shot). Why is kept in tags and metrics/promotion.json.

Idempotent: a model whose weights are already registered reuses that version, and
promoting the same version twice changes nothing."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

from freshen.atomic import write_json
from freshen.cache import MANIFEST
from freshen.config import get_dotted
from freshen.errors import DataError, FreshenError
from freshen.integrity import check_measured, checkpoint_digest, file_sha256
from freshen.jsonfile import read_json
from freshen.locks import hold
from freshen.params import Params
from freshen.saturation import promotion_note, split_of
from freshen.steps.common import NullLog, path

logger = logging.getLogger(__name__)

SECTIONS = ["promote", "mlflow"]
TAG_DIGEST, TAG_METRIC, TAG_VALUE = "freshen.model_digest", "freshen.metric", "freshen.metric_value"
TAG_DECISION, TAG_REASON = "freshen.promotion.decision", "freshen.promotion.reason"
TAG_VS_CHAMPION, TAG_VS_ZERO_SHOT = "freshen.promotion.vs_champion", "freshen.promotion.vs_zero_shot"
TAG_ZERO_SHOT_METRIC, TAG_ZERO_SHOT_VALUE = "freshen.zero_shot_metric", "freshen.zero_shot_value"


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


def logged_model(digest: str):
    """A pyfunc of these weights logged by an earlier promote that died before registering it."""
    import mlflow

    found = mlflow.search_logged_models(
        filter_string=f"tags.`{TAG_DIGEST}` = '{digest}'", max_results=1, output_format="list"
    )
    return found[0] if found else None


def log_and_register(model_dir: Path, name: str, digest: str, dim: int):
    """Register the weights as a new version, tagged with their digest in the same call: a
    promote killed at any point leaves either no version or a tagged one, which the rerun finds
    (`find_version`) instead of registering the same weights again."""
    import mlflow
    import numpy as np
    from mlflow.models import infer_signature

    import freshen
    from freshen import serving_model

    model = logged_model(digest)
    if model is not None:
        uri = model.model_uri
    else:
        artifacts = {"encoder": str(model_dir / "encoder")}
        if (model_dir / "corrector").is_dir():
            artifacts["corrector"] = str(model_dir / "corrector")
        # an unnamed string column: accepts a list of strings or a one-column DataFrame
        signature = infer_signature(["a query"], np.zeros((1, dim), dtype=np.float32), params={"kind": "query"})
        with warnings.catch_warnings():  # advice for models that infer their signature: this one states it
            warnings.filterwarnings("ignore", message=".*(type hints|input example).*", category=UserWarning)
            uri = mlflow.pyfunc.log_model(
                name="retriever",
                python_model=serving_model.__file__,
                artifacts=artifacts,
                signature=signature,
                code_paths=[str(Path(freshen.__file__).parent)],
                tags={TAG_DIGEST: digest},
                pip_requirements=["torch", "transformers", "safetensors", "numpy", "pandas", "tqdm", "pyyaml"],
            ).model_uri
    return mlflow.register_model(uri, name, tags={TAG_DIGEST: digest})


def comparison(value: float, other: float, margin: float) -> str:
    """`value` against `other + margin` as a short text, e.g. "0.7057 > 0.6512 + 0.0"."""
    return f"{value:.4f} {'>' if value > other + margin else '<='} {other:.4f} + {margin}"


def decide(
    client,
    name: str,
    version: str,
    metric: str,
    value: float,
    zero_shot_metric: str,
    zero_shot: float,
    min_improvement: float = 0.0,
    min_improvement_over_zero_shot: float = 0.0,
    split_queries: int | None = None,
) -> dict:
    """Set `challenger`; move `champion` only on a strict improvement over both the champion
    and the zero-shot encoder. Returns the decision; its `saturated` says when the split `metric`
    is measured on (of `split_queries` queries) can no longer separate models (freshen.saturation)."""
    from mlflow.exceptions import MlflowException

    try:
        champion = client.get_model_version_by_alias(name, "champion")
    except MlflowException:
        champion = None
    best = None if champion is None else float(champion.tags.get(TAG_VALUE, "-inf"))
    beats_zero_shot = value > zero_shot + min_improvement_over_zero_shot
    out = {"version": version, "beats_zero_shot": beats_zero_shot, "beats_champion": None, "champion_value": best}
    out["saturated"] = promotion_note(
        metric, value, None if champion is None else champion.version, best, zero_shot, split_queries
    )
    if champion is not None and str(champion.version) == str(version):
        return {
            **out,
            "promoted": False,
            "champion": version,
            "reason": f"v{version} is already champion: nothing to do",
        }
    client.set_registered_model_alias(name, "challenger", version)
    beats_champion = None if best is None else value > best + min_improvement
    promoted = beats_zero_shot and beats_champion is not False
    vs_zero_shot = (
        f"the pre-trained (zero-shot) encoder ({zero_shot_metric}={zero_shot:.4f}, "
        f"margin {min_improvement_over_zero_shot})"
    )
    vs_champion = None if best is None else f"champion v{champion.version} ({best:.4f}, margin {min_improvement})"
    if promoted and champion is None:
        reason = f"first model: no champion yet ({metric}={value:.4f} beats {vs_zero_shot})"
    elif promoted:
        reason = f"{metric}={value:.4f} beats {vs_champion} and {vs_zero_shot}"
    else:
        lost = [
            text for text, beats in ((vs_champion, beats_champion), (vs_zero_shot, beats_zero_shot)) if beats is False
        ]
        unchanged = "no champion yet" if champion is None else f"champion v{champion.version} unchanged"
        reason = f"{metric}={value:.4f} does not beat {' or '.join(lost)}: {unchanged}"
    if out["saturated"]:
        reason = f"{reason}; {out['saturated']}"
    tags = {
        TAG_METRIC: metric,
        TAG_VALUE: repr(float(value)),
        TAG_ZERO_SHOT_METRIC: zero_shot_metric,
        TAG_ZERO_SHOT_VALUE: repr(float(zero_shot)),
        TAG_VS_CHAMPION: "no champion" if best is None else comparison(value, best, min_improvement),
        TAG_VS_ZERO_SHOT: comparison(value, zero_shot, min_improvement_over_zero_shot),
        TAG_DECISION: "champion" if promoted else "challenger",
        TAG_REASON: reason,
    }
    for key, tag in tags.items():  # before the alias: a champion always carries its value
        client.set_model_version_tag(name, version, key, tag)
    if promoted:
        client.set_registered_model_alias(name, "champion", version)
    return {
        **out,
        "promoted": promoted,
        "beats_champion": beats_champion,
        "reason": reason,
        "champion": version if promoted else (None if champion is None else str(champion.version)),
    }


def read_metric(metrics: dict, metrics_file: Path, key: str, param: str) -> float:
    try:
        return float(get_dotted(metrics, key))
    except (KeyError, TypeError):
        raise FreshenError(f"{metrics_file}: field '{key}' ({param}) not found") from None


def cache_digests(params: Params, root: Path) -> dict[str, str]:
    """The digests (as eval.json's `measured` records them, see Cache.digest) of the caches
    evaluate ranked with, as they are now: a cache rebuilt since (another precision, `reembed.corrector`)
    makes the figures stale. A cache no longer there is not compared: nothing can be ranked with it."""
    out = {}
    for key, folder in (("stale_cache", params.cache.out_dir), ("fresh_cache", params.reembed.out_dir)):
        manifest = path(root, folder) / MANIFEST
        if manifest.is_file():
            out[key] = file_sha256(manifest)
    return out


def encoder_dim(config: Path) -> int:
    """The embedding size the pyfunc's signature states: the encoder's `hidden_size`."""
    dim = read_json(config).get("hidden_size")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise DataError(config, f"must be an integer >= 1, got {dim!r}", field="hidden_size")
    return dim


def is_registered(params: Params, root: Path) -> bool:
    """Whether the registry this machine tracks to holds the trained model (by its weights'
    digest). The registry lives in MLflow (`mlflow.db` by default), not in DVC: on a fresh clone
    that reproduced the same model, `dvc repro` finds promote up to date and skips it, and
    scripts/run_pipeline.sh asks this to promote anyway."""
    import mlflow

    from freshen import tracking

    model_dir = path(root, params.train.out_dir)
    if not (model_dir / "encoder").is_dir():
        return False
    tracking.setup(root, params.mlflow.experiment)
    client = mlflow.tracking.MlflowClient()
    return find_version(client, params.promote.registered_model, checkpoint_digest(model_dir)) is not None


def run(params: Params, root: Path, log=NullLog()) -> dict:
    with hold(path(root, params.promote.out)):  # one promote of this project at a time
        return register_and_decide(params, root, log)


def register_and_decide(params: Params, root: Path, log) -> dict:
    """Register the trained model (once), move the aliases, write metrics/promotion.json."""
    import mlflow

    from freshen import tracking

    cfg = params.promote
    metrics_file = path(root, params.evaluate.metrics)
    if not metrics_file.is_file():
        raise DataError(metrics_file, "not found: run evaluate first (freshen evaluate, or dvc repro)")
    metrics = read_json(metrics_file)
    value = read_metric(metrics, metrics_file, cfg.metric, "promote.metric")
    zero_shot_metric = cfg.zero_shot_metric
    zero_shot = read_metric(metrics, metrics_file, zero_shot_metric, "promote.zero_shot_metric")
    model_dir = path(root, params.train.out_dir)
    digest = checkpoint_digest(model_dir)
    # before the registry is touched: the figures are of these weights, on these caches
    check_measured(metrics, metrics_file, {"model_digest": digest, **cache_digests(params, root)})
    tracking.setup(root, params.mlflow.experiment)
    name = cfg.registered_model
    client = mlflow.tracking.MlflowClient()
    existing = find_version(client, name, digest)
    if existing is None:
        dim = encoder_dim(model_dir / "encoder" / "config.json")
        existing = log_and_register(model_dir, name, digest, dim)
    decision = decide(
        client,
        name,
        str(existing.version),
        cfg.metric,
        value,
        zero_shot_metric,
        zero_shot,
        cfg.min_improvement,
        cfg.min_improvement_over_zero_shot,
        metrics.get(split_of(cfg.metric), {}).get("queries"),
    )
    decision.update(
        registered_model=name,
        metric=cfg.metric,
        value=value,
        model_digest=digest,
        zero_shot_metric=zero_shot_metric,
        zero_shot_value=zero_shot,
    )
    write_json(path(root, cfg.out), decision)
    is_champion = decision["champion"] == decision["version"]
    log.tags(
        {
            "promotion.decision": "champion" if is_champion else "challenger",
            "promotion.reason": decision["reason"],
            "registered_version": decision["version"],
        }
    )
    log.metrics({"promoted": int(decision["promoted"]), "promoted_metric": value, "zero_shot_value": zero_shot})
    if decision["saturated"]:
        logger.warning(f"promote: {decision['saturated']}")
    if is_champion:
        logger.info(f"promote: {name} v{decision['version']}: {decision['reason']}")
    else:  # the last stage of `dvc repro`: this is the line the user sees last
        logger.info(f"promote: NOT promoted: {name} v{decision['version']} stays challenger: {decision['reason']}")
    return decision
