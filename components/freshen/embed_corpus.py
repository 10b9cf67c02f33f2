"""Embedding a corpus into a cache folder, the job behind embed_cache, reembed and
reembed_shard: texts streamed from corpus.jsonl a chunk at a time, rows written straight to
disk, progress recorded after every chunk so a stopped run resumes where it left off.

A corpus is encoded only once per model: every cache records an `embedding_key` (the model's
digest, the corpus file's sha256 and the settings that change a row), and a step whose rows a
complete cache with the same key already holds copies them instead of encoding (`encode.reuse`).
That makes a repeated embed_cache a no-op, and lets the refresh shards take the rows `reembed`
wrote for the model that became champion. `dvc repro` removes a stage's outputs before running
it, so under DVC a stage that reruns always encodes."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np

from freshen.cache import EMBEDDINGS, Cache, build_cache, ids_digest, load_cache, write_cache
from freshen.encoding import encode_chunks, pick_device
from freshen.errors import DataError
from freshen.integrity import check_finite_rows, file_sha256
from freshen.params import EncodeParams

logger = logging.getLogger(__name__)
COPY_ROWS = 65536  # rows copied at once from a reused cache


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
    """What decides a cache's rows: the model (`model_digest`, plus the pooling and normalisation
    the encoder applies), the corpus (`corpus_sha256`), the token limit and the precision. The
    batch size, token budget and chunking only schedule the same work."""
    cfg = encoder.config
    identity = {
        "model_digest": manifest.get("model_digest"),
        "corpus_sha256": manifest.get("corpus_sha256"),
        "pooling": cfg.pooling,
        "normalize": cfg.normalize,
        "towers": cfg.towers,
        "max_len": cfg.passage_max_len,
        "precision": encode.precision,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def find_reusable(folders: list[Path], key: str, ids: list[str]) -> Cache | None:
    """The first of `folders` holding a complete, intact cache with embedding key `key` and a row
    for every id of `ids`; None when none does. A missing or damaged folder is passed over."""
    for folder in folders:
        try:
            cache = load_cache(folder)
        except (DataError, OSError):
            continue
        m = cache.manifest
        if m.get("embedding_key") != key or m.get("corrected") or len(cache) < len(ids):
            continue
        if m.get("embeddings_sha256") != file_sha256(cache.path / EMBEDDINGS):
            continue  # changed or damaged since it was written: encode instead
        if set(ids) <= set(cache.ids):
            return cache
    return None


def copy_rows(source: Cache, ids: list[str], out_dir: Path, manifest: dict) -> Cache:
    """A cache of `ids` at `out_dir`, its rows copied from `source` (atomically, chunk by chunk)."""
    if Path(out_dir).resolve() == source.path.resolve() and source.ids == ids:
        return source  # the very cache that would be written: nothing to do
    row_of = source.row_of()
    rows = np.fromiter((row_of[i] for i in ids), dtype=np.int64, count=len(ids))

    def fill(arr: np.ndarray) -> None:
        for s in range(0, len(rows), COPY_ROWS):
            arr[s : s + COPY_ROWS] = source.embeddings[rows[s : s + COPY_ROWS]]

    return write_cache(out_dir, ids, source.dim, fill, {**manifest, "reused_from": source.manifest.get("source")})


def embed_to_cache(
    encoder,
    corpus,
    out_dir: Path,
    encode: EncodeParams,
    manifest: dict,
    desc: str,
    reuse_from: list[Path] = (),
) -> tuple[Cache, dict]:
    """Embed every document of `corpus` (a CorpusFile or a list of texts with `ids`) into a cache
    at `out_dir`. Same corpus, model and settings as a stopped run: resume after its last chunk.

    With `encode.reuse`, a complete cache in `out_dir` or `reuse_from` with the same embedding key
    (and a row for every document) is used instead: its rows are copied, no text is encoded, and
    the stats count the encoder passes this saved (`passes_saved`)."""
    max_len = encoder.config.passage_max_len
    manifest = {**manifest, "embedding_key": embedding_key(encoder, manifest, encode)}
    source = (
        find_reusable([Path(out_dir), *reuse_from], manifest["embedding_key"], corpus.ids) if encode.reuse else None
    )
    if source is not None:
        started = time.perf_counter()
        cache = copy_rows(source, corpus.ids, Path(out_dir), {**manifest, "max_len": max_len})
        logger.info(f"{desc}: {len(corpus.ids)} rows reused from {source.path} (same model, corpus and settings)")
        seconds = round(time.perf_counter() - started, 2)
        return cache, {"docs": len(corpus.ids), "passes": 0, "passes_saved": len(corpus.ids), "seconds": seconds}
    opts = encode_options(encode)
    resume_key = hashlib.sha256(
        json.dumps(
            {"ids": ids_digest(corpus.ids), "model": manifest.get("model_digest"), "max_len": max_len, **opts},
            sort_keys=True,
        ).encode()
    ).hexdigest()
    seen: dict = {}

    def encode_rows(start, sink, checkpoint):
        def checked(first: int, block) -> None:  # a NaN row never reaches the cache
            check_finite_rows(
                block,
                out_dir,
                corpus.ids,
                first_row=first,
                hint="the encoder gave NaN or Inf (with encode.precision fp16, try fp32)",
            )
            sink(first, block)

        seen["start"] = start
        seen["stats"] = encode_chunks(
            encoder,
            corpus,
            "passage",
            checked,
            max_len=max_len,
            start_row=start,
            on_chunk=checkpoint,
            desc=desc,
            **opts,
        )

    started = time.perf_counter()
    cache, start = build_cache(
        out_dir, corpus.ids, encoder.dim, encode_rows, {**manifest, "max_len": max_len}, resume_key
    )
    seconds = time.perf_counter() - started
    st = seen["stats"]
    stats = {
        "docs": len(corpus.ids),
        "passes": st.texts,
        "passes_saved": 0,
        "resumed_from_row": start,
        "seconds": round(seconds, 2),
        "docs_per_second": round(st.texts / seconds, 2) if seconds > 0 else 0.0,
        "truncated": st.truncated,
        "blank": st.blank,
        "batches": st.batches,
    }
    return cache, stats
