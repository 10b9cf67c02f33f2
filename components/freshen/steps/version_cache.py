"""Orchestration step version_cache: `dvc add` the refreshed cache (and `dvc push` it when
orchestration.dvc.push), so every cache version can be checked out again. Skipped when
orchestration.dvc.enabled is false. Nothing is staged in git, whatever core.autostage says:
commit the .dvc file it writes (`git add artifacts/cache/refreshed.dvc`) to keep the version."""

from __future__ import annotations

import logging
from pathlib import Path

import yaml

from freshen.dvc_repo import add
from freshen.errors import FreshenError
from freshen.locks import hold
from freshen.params import Params
from freshen.steps.common import NullLog, path
from freshen.steps.fetch_champion import reembed_skip_reason

logger = logging.getLogger(__name__)

SECTIONS = ["orchestration"]
OPTIONS = ()


def skip_reason(params: Params, root: Path) -> str | None:
    if not params.orchestration.dvc.enabled:
        return "orchestration.dvc.enabled is false"
    return reembed_skip_reason(params, root)  # orchestration.refresh decided against re-embedding


def run(params: Params, root: Path, log=NullLog()) -> dict:
    orch = params.orchestration
    if not (root / ".dvc").is_dir():
        raise FreshenError(f"{root}: not a DVC repository (run `dvc init`), or set orchestration.dvc.enabled=false")
    target = path(root, orch.refresh_dir)
    if not target.is_dir():
        raise FreshenError(f"{target}: no refreshed cache to version (run merge-shards first)")
    rel = str(target.resolve().relative_to(root.resolve()))
    with hold(target):  # no merge-shards or build-index changes the folder while DVC hashes it
        dvc_file = add(root, target, push=orch.dvc.push)
        out = (yaml.safe_load(dvc_file.read_text()) or {}).get("outs", [{}])[0]
    info = {"dvc_file": str(dvc_file.relative_to(root)), "md5": out.get("md5"), "pushed": bool(orch.dvc.push)}
    log.tags({"dvc.refreshed.md5": info["md5"]})
    logger.info(f"version-cache: {rel} -> {info['dvc_file']} (md5 {info['md5']})")
    return info
