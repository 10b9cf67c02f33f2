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
from freshen.errors import FreshenError
from freshen.integrity import check_finite_rows

ENCODE_KEYS = ("batch_size", "precision", "max_tokens", "chunk_rows")


def encode_options(encode_p: dict) -> dict:
    """encode.* settings as keyword arguments of encode_chunks, checked: a bad one fails here,
    before a cache's partial folder exists, not inside its first chunk."""
    max_tokens = encode_p.get("max_tokens")  # null or 0: no token budget
    return {"batch_size": _positive_int(encode_p.get("batch_size", 64), "batch_size"),
            "precision": encode_p.get("precision", "auto"),
            "max_tokens": _positive_int(max_tokens, "max_tokens") if max_tokens not in (None, 0) else None,
            "chunk_rows": _positive_int(encode_p.get("chunk_rows", 4096), "chunk_rows")}


def _positive_int(value, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise FreshenError(f"params.yaml: field 'encode.{key}': must be an integer >= 1, got {value!r}")
    return value


def place(encoder, encode_p: dict):
    """Move the encoder to encode.device (auto: the GPU when there is one)."""
    return encoder.to(pick_device(encode_p.get("device", "auto")))


def embed_to_cache(encoder, corpus, out_dir: Path, encode_p: dict, manifest: dict, desc: str) -> tuple[Cache, dict]:
    """Embed every document of `corpus` (a CorpusFile or a list of texts with `ids`) into a cache
    at `out_dir`. Same corpus, model and settings as a stopped run: resume after its last chunk."""
    opts = encode_options(encode_p)
    max_len = encoder.config.passage_max_len
    resume_key = hashlib.sha256(json.dumps(
        {"ids": ids_digest(corpus.ids), "model": manifest.get("model_digest"), "max_len": max_len, **opts},
        sort_keys=True).encode()).hexdigest()
    seen: dict = {}

    def encode_rows(start, sink, checkpoint):
        def checked(first: int, block) -> None:  # a NaN row never reaches the cache
            check_finite_rows(block, out_dir, corpus.ids, first_row=first,
                              hint="the encoder gave NaN or Inf (with encode.precision fp16, try fp32)")
            sink(first, block)

        seen["start"] = start
        seen["stats"] = encode_chunks(encoder, corpus, "passage", checked, max_len=max_len, start_row=start,
                                      on_chunk=checkpoint, desc=desc, **opts)

    started = time.perf_counter()
    cache, start = build_cache(out_dir, corpus.ids, encoder.dim, encode_rows,
                               {**manifest, "max_len": max_len}, resume_key)
    seconds = time.perf_counter() - started
    st = seen["stats"]
    stats = {"docs": len(corpus.ids), "passes": st.texts, "resumed_from_row": start, "seconds": round(seconds, 2),
             "docs_per_second": round(st.texts / seconds, 2) if seconds > 0 else 0.0,
             "truncated": st.truncated, "blank": st.blank, "batches": st.batches}
    return cache, stats
