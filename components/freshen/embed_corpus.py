"""Embedding a corpus into a cache folder, the job behind embed_cache, reembed and
reembed_shard: texts streamed from corpus.jsonl a chunk at a time, rows written straight to
disk, progress recorded after every chunk so a stopped run resumes where it left off."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from freshen.cache import Cache, build_cache, ids_digest
from freshen.encoding import encode_chunks, pick_device
from freshen.integrity import check_finite_rows
from freshen.params import EncodeParams


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


def embed_to_cache(
    encoder, corpus, out_dir: Path, encode: EncodeParams, manifest: dict, desc: str
) -> tuple[Cache, dict]:
    """Embed every document of `corpus` (a CorpusFile or a list of texts with `ids`) into a cache
    at `out_dir`. Same corpus, model and settings as a stopped run: resume after its last chunk."""
    opts = encode_options(encode)
    max_len = encoder.config.passage_max_len
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
        "resumed_from_row": start,
        "seconds": round(seconds, 2),
        "docs_per_second": round(st.texts / seconds, 2) if seconds > 0 else 0.0,
        "truncated": st.truncated,
        "blank": st.blank,
        "batches": st.batches,
    }
    return cache, stats
