"""Orchestration step merge_shards: the K shard folders into one cache at
orchestration.refresh_dir, in the format `freshen reembed` writes. Refuses a set that is
incomplete or mixes corpora or models, naming the shard, before writing anything."""

from __future__ import annotations

import logging
from pathlib import Path

from freshen.config import params_hash
from freshen.locks import hold
from freshen.modeling.encoder import model_digest
from freshen.params import Params
from freshen.sharding import check_shards, merge
from freshen.steps.common import NullLog, path, prepared
from freshen.steps.fetch_champion import reembed_skip_reason
from freshen.steps.reembed_shard import model_dir_for

logger = logging.getLogger(__name__)

SECTIONS = ["encode", "orchestration"]
OPTIONS = ("num_shards", "model_dir")


def skip_reason(params: Params, root: Path) -> str | None:
    return reembed_skip_reason(params, root)  # orchestration.refresh decided against re-embedding


def run(params: Params, root: Path, log=NullLog(), num_shards: int | None = None, model_dir: str | None = None) -> dict:
    orch = params.orchestration
    count = num_shards or orch.num_shards
    corpus_ids = prepared(params, root).doc_ids()
    expected = model_digest(model_dir_for(params, root, model_dir))
    shards = check_shards(path(root, orch.shards_dir), count, corpus_ids, expected)
    refreshed = path(root, orch.refresh_dir)
    with hold(refreshed):  # the refreshed cache has one writer at a time: this step, build_index, version_cache
        cache = merge(shards, refreshed, {"params_hash": params_hash(params, SECTIONS)})
    stats = {"docs": len(cache), "num_shards": count}
    log.metrics(stats)
    logger.info(f"merge-shards: {count} shards, {len(cache)} rows -> {cache.path}")
    return stats
