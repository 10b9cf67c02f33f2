"""Orchestration step corrected_index: the moment a new champion exists, serve it without
waiting for the full re-embedding: its corrector maps the OLD cache (cache.out_dir, the stale
cache it was trained against) to estimates of the new embeddings, which become a cache
(manifest "corrected": true) and an index in the serving folder. publish_index replaces it
when the real re-embedding lands; this step skips once that happened for this champion."""

from __future__ import annotations

import logging
from pathlib import Path

from freshen.cache import load_cache, write_corrected_cache
from freshen.index_store import publish, read_pointer, write_index
from freshen.locks import hold
from freshen.modeling.corrector import Corrector
from freshen.modeling.encoder import model_digest
from freshen.params import Params
from freshen.retrieval import index_settings
from freshen.steps.common import NullLog, path
from freshen.steps.fetch_champion import champion_identity, read_champion

logger = logging.getLogger(__name__)

SECTIONS = ["cache", "orchestration", "evaluate"]
OPTIONS = ()


def skip_reason(params: Params, root: Path) -> str | None:
    champ = read_champion(params, root)
    if not champ.get("has_corrector"):
        return f"champion v{champ['version']} has no corrector"
    current = read_pointer(path(root, params.orchestration.serving_dir)) or {}
    if current.get("corrected") is False and current.get("encoder_digest") == champ["encoder_digest"]:
        return f"the re-embedded index of champion v{champ['version']} is already serving ({current['folder']})"
    return None


def run(params: Params, root: Path, log=NullLog()) -> dict:
    champ = read_champion(params, root)
    stale = load_cache(path(root, params.cache.out_dir))
    corrector = Corrector.load(champ["corrector_dir"], expect_dim=stale.dim).eval()
    serving = path(root, params.orchestration.serving_dir)
    folder = serving / f"corrected-v{champ['version']}-{champ['encoder_digest'][:12]}"
    # the serving folder has one writer at a time, this step or publish_index; holding the new
    # folder's lock too clears what a killed attempt left beside it, inside the serving folder
    with hold(serving, folder):
        cache = write_corrected_cache(
            folder,
            stale,
            corrector,
            {
                "model": f"models:/{champ['registered_model']}/{champ['version']}",
                "model_digest": champ["encoder_digest"],
                "corrector_digest": model_digest(champ["corrector_dir"]),
                "source": "corrected_index",
                "stale_cache": str(stale.path),
                "champion_version": champ["version"],
            },
        )
        write_index(cache, settings=index_settings(params.evaluate))
        pointer = publish(
            serving, folder, {"corrected": True, **champion_identity(champ)}, keep=params.orchestration.keep_serving
        )
    log.metrics({"docs": len(cache)})
    logger.info(f"corrected-index: champion v{champ['version']} serves {folder} (corrected from {stale.path})")
    return pointer
