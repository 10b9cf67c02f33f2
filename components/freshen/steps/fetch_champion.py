"""Orchestration step fetch_champion: copy the registry's `champion` (its encoder, and its
corrector when it has one) into orchestration.champion_dir, with champion.json saying which
version it is. Every refresh task reads the champion from there, so one refresh run uses one
model even if the alias moves meanwhile. A no-op when that version is already there."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import yaml

from freshen.atomic import atomic_dir, write_json
from freshen.errors import FreshenError
from freshen.locks import hold
from freshen.modeling.encoder import model_digest
from freshen.params import Params
from freshen.steps.common import NullLog, path

logger = logging.getLogger(__name__)

SECTIONS = ["promote", "mlflow", "orchestration"]
OPTIONS = ()
INFO = "champion.json"


def champion_identity(champ: dict) -> dict:
    """How the serving pointer and the Asset events name a champion: its version, the registry's
    digest of the whole checkpoint (`model_digest`, as in promotion.json and the version's tag)
    and its encoder's alone (`encoder_digest`, what a cache manifest's `model_digest` names)."""
    return {
        "champion_version": champ["version"],
        "model_digest": champ["checkpoint_digest"],
        "encoder_digest": champ["encoder_digest"],
    }


def read_champion(params: Params, root: Path) -> dict:
    """champion.json of the fetched champion, with absolute encoder/corrector paths."""
    folder = path(root, params.orchestration.champion_dir)
    info_file = folder / INFO
    if not info_file.is_file():
        raise FreshenError(f"{info_file}: not found (run `freshen fetch-champion` first)")
    info = json.loads(info_file.read_text())
    info["encoder_dir"] = str(folder / "encoder")
    info["corrector_dir"] = str(folder / "corrector") if info.get("has_corrector") else None
    return info


def skip_reason(params: Params, root: Path) -> str | None:
    """Nothing to refresh before the first promotion: unpausing the refresh DAG runs its latest
    cron tick at once, which must not leave a failed run (and three failed attempts) behind."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from freshen import tracking

    tracking.setup(root, params.mlflow.experiment)
    name = params.promote.registered_model
    try:
        mlflow.tracking.MlflowClient().get_model_version_by_alias(name, "champion")
    except MlflowException:
        return f"registered model '{name}' has no 'champion' yet: nothing to refresh (run freshen_train first)"
    return None


def run(params: Params, root: Path, log=NullLog()) -> dict:
    import mlflow
    from mlflow.exceptions import MlflowException

    name = params.promote.registered_model
    client = mlflow.tracking.MlflowClient()
    try:
        version = client.get_model_version_by_alias(name, "champion")
    except MlflowException:
        raise FreshenError(
            f"registered model '{name}' (promote.registered_model) has no 'champion' alias yet: "
            "run the freshen_train DAG or `freshen promote` first"
        ) from None
    dest = path(root, params.orchestration.champion_dir)
    with hold(dest):  # one fetch into this folder at a time
        return download_champion(name, version, dest, log)


def download_champion(name: str, version, dest: Path, log) -> dict:
    """Download model `version` into `dest` with champion.json, unless that version is already there."""
    import mlflow

    digest_tag = version.tags.get("freshen.model_digest")
    if (dest / INFO).is_file():
        have = json.loads((dest / INFO).read_text())
        if have.get("version") == str(version.version) and have.get("checkpoint_digest") == digest_tag:
            logger.info(f"fetch-champion: {name} v{version.version} already in {dest}")
            log.tags({"champion_version": version.version})
            return have
    with atomic_dir(dest) as tmp:
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{name}/{version.version}", dst_path=str(tmp / "_download")
            )
        )
        flavor = yaml.safe_load((local / "MLmodel").read_text())["flavors"]["python_function"]
        artifacts = flavor.get("artifacts", {})
        if "encoder" not in artifacts:
            raise FreshenError(f"models:/{name}/{version.version}: MLmodel field 'artifacts.encoder' missing")
        for key in ("encoder", "corrector"):
            if key in artifacts:
                shutil.move(str(local / artifacts[key]["path"]), str(tmp / key))
        shutil.rmtree(tmp / "_download")
        info = {
            "registered_model": name,
            "version": str(version.version),
            "checkpoint_digest": digest_tag,
            "encoder_digest": model_digest(tmp / "encoder"),
            "has_corrector": (tmp / "corrector").is_dir(),
            "source_run_id": version.run_id,
        }
        write_json(tmp / INFO, info)
    logger.info(f"fetch-champion: {name} v{version.version} -> {dest}")
    log.tags({"champion_version": version.version})
    return info
