"""The embedding cache: a memory-mappable float16 array, its doc ids in the same order, and a
manifest saying which model made it. Written atomically; validated whenever it is opened."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from freshen.atomic import atomic_dir
from freshen.errors import DataError

EMBEDDINGS, IDS, MANIFEST = "embeddings.npy", "ids.json", "manifest.json"
FORMAT = "freshen-cache/1"


@dataclass
class Cache:
    path: Path
    ids: list[str]
    embeddings: np.ndarray  # (count, dim) float16, memory-mapped
    manifest: dict

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def __len__(self) -> int:
        return len(self.ids)

    def row_of(self) -> dict[str, int]:
        return {doc_id: i for i, doc_id in enumerate(self.ids)}


def ids_digest(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


def write_cache(out_dir: str | Path, ids: list[str], dim: int, fill: Callable[[np.ndarray], None],
                manifest: dict) -> Cache:
    """Create the array as a memmap, let `fill` write its rows, then publish the folder whole."""
    with atomic_dir(out_dir) as tmp:
        arr = np.lib.format.open_memmap(tmp / EMBEDDINGS, mode="w+", dtype=np.float16, shape=(len(ids), dim))
        fill(arr)
        arr.flush()
        del arr
        (tmp / IDS).write_text(json.dumps(ids))
        full = {**manifest, "format": FORMAT, "count": len(ids), "dim": dim, "dtype": "float16",
                "ids_sha256": ids_digest(ids)}
        (tmp / MANIFEST).write_text(json.dumps(full, indent=2, sort_keys=True))
    return load_cache(out_dir)


def load_cache(path: str | Path) -> Cache:
    path = Path(path)
    for name in (EMBEDDINGS, IDS, MANIFEST):
        if not (path / name).is_file():
            raise DataError(path / name, "cache file missing (run embed_cache or reembed first)")
    manifest = json.loads((path / MANIFEST).read_text())
    ids = json.loads((path / IDS).read_text())
    try:
        emb = np.load(path / EMBEDDINGS, mmap_mode="r")
    except ValueError as exc:
        raise DataError(path / EMBEDDINGS, f"not a readable .npy array ({exc})") from None
    mpath = path / MANIFEST
    if manifest.get("format") != FORMAT:
        raise DataError(mpath, f"expected '{FORMAT}', got {manifest.get('format')!r}", field="format")
    if emb.ndim != 2:
        raise DataError(path / EMBEDDINGS, f"array must be 2-D, has shape {emb.shape}")
    if str(emb.dtype) != manifest.get("dtype"):
        raise DataError(mpath, f"manifest says {manifest.get('dtype')}, array is {emb.dtype}", field="dtype")
    if emb.shape[0] != manifest.get("count"):
        raise DataError(mpath, f"manifest says {manifest.get('count')} rows, array has {emb.shape[0]}", field="count")
    if emb.shape[1] != manifest.get("dim"):
        raise DataError(mpath, f"manifest says dim {manifest.get('dim')}, array has {emb.shape[1]}", field="dim")
    if len(ids) != emb.shape[0]:
        raise DataError(path / IDS, f"{len(ids)} ids for {emb.shape[0]} rows")
    if manifest.get("ids_sha256") and manifest["ids_sha256"] != ids_digest(ids):
        raise DataError(mpath, "ids.json does not match the manifest's digest", field="ids_sha256")
    return Cache(path, ids, emb, manifest)
