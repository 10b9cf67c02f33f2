"""Orchestration step reembed_shard: re-embed shard i of K of the corpus with the champion
(or --model-dir) into orchestration.shards_dir/shard-III-of-KKK, atomically; see freshen.sharding."""

from __future__ import annotations

import logging
from pathlib import Path

from freshen.config import params_hash
from freshen.embed_corpus import place
from freshen.encoding import set_threads
from freshen.errors import FreshenError
from freshen.locks import hold
from freshen.modeling.encoder import Encoder, model_digest
from freshen.params import Params
from freshen.sharding import embed_shard, shard_bounds, shard_name
from freshen.steps.common import NullLog, path, shown
from freshen.steps.embed_cache import prepared_corpus
from freshen.steps.fetch_champion import read_champion, reembed_skip_reason

logger = logging.getLogger(__name__)

SECTIONS = ["encode", "reembed", "orchestration"]
OPTIONS = ("shard", "num_shards", "model_dir")
UNIT_TAG = "freshen.unit"


def skip_reason(params: Params, root: Path) -> str | None:
    return reembed_skip_reason(params, root)  # orchestration.refresh decided against re-embedding


def model_dir_for(params: Params, root: Path, model_dir: str | None) -> Path:
    return path(root, model_dir) if model_dir else Path(read_champion(params, root)["encoder_dir"])


def reusable_caches(params: Params, root: Path) -> list[Path]:
    """Where a shard's rows may already be: the train pipeline's `reembed` output (the champion
    re-embedded the corpus there just before it was promoted) and the last refreshed cache."""
    return [path(root, params.reembed.out_dir), path(root, params.orchestration.refresh_dir)]


def pick(stats: dict, *keys: str) -> dict:
    return {k: stats[k] for k in keys}


def run(
    params: Params,
    root: Path,
    log=NullLog(),
    shard: int | None = None,
    num_shards: int | None = None,
    model_dir: str | None = None,
) -> dict:
    if shard is None:
        raise FreshenError("reembed-shard needs --shard I (0-based)")
    count = num_shards or params.orchestration.num_shards
    log.tags({UNIT_TAG: f"{shard}-of-{count}"})
    set_threads()
    corpus = prepared_corpus(params, root)
    ids = corpus.ids
    start, stop = shard_bounds(len(ids), shard, count)  # fail on a bad shard before loading the model
    shards_dir = path(root, params.orchestration.shards_dir)
    with hold(shards_dir / shard_name(shard, count)):  # other shards run in parallel; this one, once
        mdir = model_dir_for(params, root, model_dir)
        encoder = place(Encoder.load(mdir), params.encode.device)
        cache, embedded = embed_shard(
            encoder,
            corpus,
            shard,
            count,
            shards_dir,
            params.encode,
            {
                "model": shown(mdir, root),
                "model_digest": model_digest(mdir),
                "params_hash": params_hash(params, ["encode"]),
                "source": "reembed_shard",
                "corpus": params.data.name,
                "corrected": False,
            },
            reuse_from=reusable_caches(params, root),
        )
    stats = {"shard": shard, "num_shards": count, "docs": stop - start, **pick(embedded, "passes", "passes_saved")}
    log.metrics(stats)
    logger.info(f"reembed-shard: rows {start}..{stop} of {len(ids)} -> {cache.path} ({stats['passes']} encoded)")
    return stats
