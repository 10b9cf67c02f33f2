"""Orchestration step build_index: a faiss inner-product index over a cache (default: the
refreshed one), written atomically to <cache>/index.faiss or --out, with index.json beside it.
Its kind is `evaluate.index` (default Flat: exact IndexFlatIP), with `evaluate.nprobe` /
`evaluate.ef_search` for IVF / HNSW."""

from __future__ import annotations

import logging
from pathlib import Path

from freshen.cache import load_cache
from freshen.index_store import write_index
from freshen.locks import hold
from freshen.params import Params
from freshen.retrieval import index_settings
from freshen.steps.common import NullLog, path
from freshen.steps.fetch_champion import reembed_skip_reason

logger = logging.getLogger(__name__)

SECTIONS = ["orchestration", "evaluate"]
OPTIONS = ("cache_dir", "out")


def skip_reason(params: Params, root: Path) -> str | None:
    return reembed_skip_reason(params, root)  # orchestration.refresh decided against re-embedding


def run(params: Params, root: Path, log=NullLog(), cache_dir: str | None = None, out: str | None = None) -> dict:
    cache = load_cache(path(root, cache_dir or params.orchestration.refresh_dir))
    target = path(root, out) if out else None
    # by default the index goes inside the cache folder: then that folder is what this step writes
    with hold(target or cache.path):
        meta = write_index(cache, target, index_settings(params.evaluate))
    log.metrics({"docs": meta["count"], "dim": meta["dim"]})
    logger.info(f"build-index: {meta['count']} rows of {cache.path} -> {meta['file']}")
    return meta
