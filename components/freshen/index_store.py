"""faiss indexes next to caches, and the serving folder downstream consumers read.

An index is written to a temporary sibling and renamed into place, with `index.json` beside it
recording which cache rows it holds. The serving folder holds immutable index folders
(`corrected-v3-…`, `reembedded-v3-…`) and `current.json`, a pointer swapped atomically: a
consumer reads the pointer, then a folder that never changes under it."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np

from freshen.atomic import atomic_dir, atomic_file, write_json
from freshen.cache import Cache
from freshen.errors import DataError

INDEX_FILE, INDEX_META = "index.faiss", "index.json"
POINTER = "current.json"


def write_index(cache: Cache, out: str | Path | None = None, settings: dict | None = None) -> dict:
    """An inner-product index over every row of `cache` (exact IndexFlatIP unless `settings`, the
    build_index keywords from `retrieval.index_settings(params.evaluate)`, say otherwise),
    atomically at `out` (default: inside the cache). nprobe / efSearch are saved with the index."""
    import faiss

    from freshen.retrieval import build_index, to_cpu

    out = Path(out) if out is not None else cache.path / INDEX_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    settings = dict(settings or {})
    factory = str(settings.get("kind", "Flat")).strip()
    factory = "Flat" if factory.lower() == "flat" else factory
    index = to_cpu(build_index(cache.embeddings, **settings))
    with atomic_file(out) as tmp:
        faiss.write_index(index, str(tmp))
    meta = {
        "kind": "IndexFlatIP" if factory == "Flat" else factory,
        "count": int(index.ntotal),
        "dim": cache.dim,
        "file": out.name,
        "cache": os.path.relpath(cache.path, out.parent),  # relative: same bytes in any checkout
        "ids_sha256": cache.manifest.get("ids_sha256"),
        "model_digest": cache.manifest.get("model_digest"),
        "corrected": bool(cache.manifest.get("corrected")),
    }
    if factory != "Flat":
        meta.update(metric="inner_product", nprobe=settings.get("nprobe"), ef_search=settings.get("ef_search"))
    write_json(out.with_name(INDEX_META) if out.name == INDEX_FILE else out.with_suffix(".json"), meta)
    return meta


def check_index(cache: Cache, index_file: Path) -> dict:
    """The index beside a cache exists and holds exactly that cache's rows."""
    import json

    meta_file = index_file.with_name(INDEX_META) if index_file.name == INDEX_FILE else index_file.with_suffix(".json")
    if not index_file.is_file() or not meta_file.is_file():
        raise DataError(index_file, "index missing (run `freshen build-index` first)")
    meta = json.loads(meta_file.read_text())
    if meta.get("ids_sha256") != cache.manifest.get("ids_sha256") or meta.get("count") != len(cache):
        raise DataError(meta_file, f"index does not match the cache in {cache.path} (rebuild it)", field="ids_sha256")
    return meta


def serving_name(kind: str, champ: dict, corpus_sha256: str) -> str:
    """An immutable serving folder's name: what it is, which champion, which corpus version."""
    return f"{kind}-v{champ['version']}-{champ['encoder_digest'][:12]}-{corpus_sha256[:8]}"


def read_pointer(serving_dir: Path) -> dict | None:
    import json

    path = serving_dir / POINTER
    return json.loads(path.read_text()) if path.is_file() else None


def search_serving(serving_dir: Path, queries: np.ndarray, k: int) -> list[list[str]]:
    """What a consumer does: read the pointer, then search the folder it names (which never
    changes under it); the ids of the top `k` documents for each query vector."""
    import faiss

    from freshen.cache import load_cache

    pointer = read_pointer(serving_dir)
    if pointer is None:
        raise DataError(serving_dir / POINTER, "no serving index yet (run the refresh)")
    folder = serving_dir / pointer["folder"]
    ids = load_cache(folder).ids
    index = faiss.read_index(str(serving_dir / pointer["index"]))
    _, rows = index.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, len(ids)))
    return [[ids[r] for r in hits if r >= 0] for hits in rows]


def link_tree(src: Path, dst: Path) -> None:
    """Publish a copy of folder `src` at `dst`, hard-linking files (a copy across filesystems)."""
    with atomic_dir(dst) as tmp:
        for item in src.iterdir():
            if item.is_file() and not item.name.startswith("."):
                try:
                    os.link(item, tmp / item.name)
                except OSError:
                    shutil.copy2(item, tmp / item.name)


def publish(serving_dir: Path, folder: Path, info: dict, keep: int = 2) -> dict:
    """Point `current.json` at `folder` (inside serving_dir), then drop all but the newest `keep` folders."""
    pointer = {
        **info,
        "folder": folder.name,
        "index": f"{folder.name}/{INDEX_FILE}",
        "published_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    history = (read_pointer(serving_dir) or {}).get("history", [])
    pointer["history"] = ([folder.name] + [h for h in history if h != folder.name])[: max(1, keep)]
    write_json(serving_dir / POINTER, pointer)
    for old in serving_dir.iterdir():
        if old.is_dir() and not old.name.startswith(".") and old.name not in pointer["history"]:
            shutil.rmtree(old, ignore_errors=True)
    return pointer
