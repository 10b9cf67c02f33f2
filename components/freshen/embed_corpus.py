"""Embedding a corpus into a cache folder, the job behind embed_cache, reembed, reembed_shard
and corrected_index: texts streamed from corpus.jsonl a chunk at a time, rows written straight to
disk, progress recorded after every chunk so a stopped run resumes where it left off.

A text is encoded only once per model: every cache records an `embedding_key` (the model's
digest and the settings that change a row) and the hash of each row's text (see `cache`). A row
whose text a complete cache with the same key already holds is copied from it instead of being
encoded (`encode.reuse`); only the others go through the encoder. So a repeated embed_cache is a
no-op, the refresh shards take the rows `reembed` wrote for the model that became champion, and
a new corpus version costs encoder passes only for its added and edited documents; removed
documents simply have no row. `dvc repro` removes a stage's outputs before running it, so under
DVC a stage that reruns encodes everything it cannot find elsewhere.

Given a stale cache and a corrector (`corrected=`), rows that no cache of this model holds but
the stale cache does are h(stale row) instead of encoded: the serving index of a new champion,
or of a new corpus version, at encoder passes only for the texts the stale cache lacks."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np

from freshen.cache import EMBEDDINGS, Cache, build_cache, ids_digest, load_cache
from freshen.cache_rows import ORIGINS, Rows
from freshen.encoding import EncodeStats, encode_chunks, pick_device
from freshen.errors import DataError
from freshen.integrity import check_finite_rows, file_sha256, first_nonfinite_row
from freshen.params import EncodeParams
from freshen.row_plan import RowPlan, copy_planned, plan_rows, scatter

logger = logging.getLogger(__name__)


def encode_options(encode: EncodeParams) -> dict:
    """encode.* settings as keyword arguments of encode_chunks (max_tokens 0 or null: no budget)."""
    return {
        "batch_size": encode.batch_size,
        "precision": encode.precision,
        "max_tokens": encode.max_tokens or None,
        "chunk_rows": encode.chunk_rows,
    }


def place(encoder, device: str):
    """Move the encoder to `device` (auto: the GPU when there is one)."""
    return encoder.to(pick_device(device))


def embedding_key(encoder, manifest: dict, encode: EncodeParams) -> str:
    """What decides a row, given its text: the model (`model_digest`, plus the pooling and
    normalisation the encoder applies), the token limit and the precision. The batch size, token
    budget and chunking only schedule the same work."""
    cfg = encoder.config
    identity = {
        "model_digest": manifest.get("model_digest"),
        "pooling": cfg.pooling,
        "normalize": cfg.normalize,
        "towers": cfg.towers,
        "max_len": cfg.passage_max_len,
        "precision": encode.precision,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def reusable(folders: list[Path], key: str) -> list[Cache]:
    """The complete, intact caches among `folders` with embedding key `key` and row hashes;
    a missing, damaged or changed one is passed over."""
    found, seen = [], set()
    for folder in folders:
        try:
            cache = load_cache(folder)
        except (DataError, OSError):
            continue
        m = cache.manifest
        if m.get("embedding_key") != key or cache.rows is None or cache.path.resolve() in seen:
            continue
        if m.get("embeddings_sha256") != file_sha256(cache.path / EMBEDDINGS):
            continue  # changed or damaged since it was written: encode instead
        found.append(cache)
        seen.add(cache.path.resolve())
    return found


def embed_to_cache(
    encoder,
    corpus,
    out_dir: Path,
    encode: EncodeParams,
    manifest: dict,
    desc: str,
    reuse_from: list[Path] = (),
    corrected: tuple[Cache, object] | None = None,
) -> tuple[Cache, dict]:
    """Embed every document of `corpus` (a CorpusFile) into a cache at `out_dir`. Same corpus,
    model and settings as a stopped run: resume after its last chunk.

    With `encode.reuse`, rows whose text a cache in `out_dir` or `reuse_from` holds for the same
    embedding key are copied from it; with `corrected=(stale_cache, corrector)`, rows still missing
    whose text the stale cache holds are h(stale row); the rest are encoded. The stats count the
    encoder passes spent (`passes`) and saved (`passes_saved`: rows reused or corrected)."""
    out_dir = Path(out_dir)
    max_len = encoder.config.passage_max_len
    manifest = {**manifest, "embedding_key": embedding_key(encoder, manifest, encode), "max_len": max_len}
    hashes = corpus.hashes
    sources = reusable([out_dir, *reuse_from], manifest["embedding_key"]) if encode.reuse else []
    flags = [False] * len(sources)
    if corrected is not None:
        stale, corrector = corrected
        if stale.rows is None:
            raise DataError(
                stale.path / "manifest.json",
                "records no row hashes (written by an older Freshen): re-run embed_cache",
                field="doc_hashes_sha256",
            )
        sources, flags = [*sources, stale], [*flags, True]
    plan = plan_rows(hashes, sources, flags)
    if (
        sources
        and sources[0].path.resolve() == out_dir.resolve()
        and _is_whole(plan, corpus.ids)
        and all(sources[0].manifest.get(k) == manifest[k] for k in CORPUS_FIELDS if k in manifest)
    ):
        logger.info(f"{desc}: {out_dir} already holds every row (same model, texts and settings)")
        return sources[0], {"docs": len(hashes), "passes": 0, "passes_saved": len(hashes), "seconds": 0.0}
    missing = plan.missing()
    origin = plan.origin()
    used = sorted({str(plan.sources[k].manifest.get("source")) for k in np.unique(plan.source[plan.source >= 0])})
    if used:
        manifest["reused_from"] = used
    if corrected is not None:
        manifest["corrected"] = bool((origin == ORIGINS.index("corrected")).any())
    opts = encode_options(encode)
    resume_key = hashlib.sha256(
        json.dumps(
            {
                "ids": ids_digest(corpus.ids),
                "model": manifest.get("model_digest"),
                "max_len": max_len,
                "missing": hashlib.sha256(missing.tobytes()).hexdigest(),
                "sources": [c.manifest.get("embeddings_sha256") for c in sources],
                **opts,
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()
    seen: dict = {}

    def check(positions: np.ndarray, block: np.ndarray) -> None:  # a NaN row never reaches the cache
        bad = first_nonfinite_row(block)
        if bad is not None:
            check_finite_rows(
                block[bad : bad + 1],
                out_dir,
                corpus.ids,
                first_row=int(positions[bad]),
                hint="the model gave NaN or Inf (with encode.precision fp16, try fp32)",
            )

    def encode_rows(start, sink, checkpoint):
        copy_planned(plan, sink, check, corrected[1] if corrected is not None else None)

        def encoded(first: int, block) -> None:
            positions = missing[first : first + len(block)]
            check(positions, block)
            scatter(sink, positions, block)

        seen["start"] = start
        if not len(missing):
            seen["stats"] = EncodeStats()
            return
        seen["stats"] = encode_chunks(
            encoder,
            corpus.take(missing),
            "passage",
            encoded,
            max_len=max_len,
            start_row=start,
            on_chunk=checkpoint,
            desc=desc,
            **opts,
        )

    started = time.perf_counter()
    cache, start = build_cache(
        out_dir, corpus.ids, encoder.dim, encode_rows, manifest, resume_key, Rows(hashes, origin)
    )
    seconds = time.perf_counter() - started
    st = seen["stats"]
    counts = cache.rows.counts()
    stats = {
        "docs": len(corpus.ids),
        "passes": st.texts,
        "passes_saved": counts["reused"] + counts["corrected"],
        **{f"rows_{name}": n for name, n in counts.items()},
        "resumed_from_row": start,
        "seconds": round(seconds, 2),
        "docs_per_second": round(st.texts / seconds, 2) if seconds > 0 else 0.0,
        "truncated": st.truncated,
        "blank": st.blank,
        "batches": st.batches,
    }
    if stats["passes_saved"]:
        logger.info(f"{desc}: {stats['passes']} texts encoded, {stats['passes_saved']} rows taken from {used}")
    return cache, stats


# what a manifest says about the corpus a cache was made for (a shard: its place in it): a cache
# holding the right rows for another corpus version is written again (its rows copied), so that
# its manifest names the version it is part of
CORPUS_FIELDS = ("corpus", "corpus_sha256", "corpus_ids_sha256", "corpus_count", "start", "stop")


def _is_whole(plan: RowPlan, ids: list[str]) -> bool:
    """The plan takes every row, in order, from source 0 (its ids the corpus's): nothing to write."""
    first = plan.sources[0]
    return (
        bool((plan.source == 0).all())
        and np.array_equal(plan.row, np.arange(len(plan.row)))
        and first.ids == ids
        and not plan.corrected[0]
    )
