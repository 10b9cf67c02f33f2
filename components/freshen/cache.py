"""The embedding cache: a memory-mappable float16 array, its doc ids in the same order, and a
manifest saying which model made it. Written atomically; validated whenever it is opened."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from freshen.atomic import atomic_dir, replace_dir, write_json
from freshen.errors import DataError
from freshen.integrity import check_finite_rows, file_sha256
from freshen.locks import hold

EMBEDDINGS, IDS, MANIFEST, PROGRESS = "embeddings.npy", "ids.json", "manifest.json", "progress.json"
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

    def digest(self) -> str:
        """What identifies this cache's contents: its manifest holds the digests of its ids and
        of its array, and says which model, corpus and settings made it."""
        return file_sha256(self.path / MANIFEST)


def ids_digest(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


def _write_ids_and_manifest(folder: Path, ids: list[str], dim: int, manifest: dict) -> None:
    """The two small files beside embeddings.npy, the same for every way a cache is written."""
    (folder / IDS).write_text(json.dumps(ids))
    full = {**manifest, "format": FORMAT, "count": len(ids), "dim": dim, "dtype": "float16",
            "ids_sha256": ids_digest(ids), "embeddings_sha256": file_sha256(folder / EMBEDDINGS)}
    (folder / MANIFEST).write_text(json.dumps(full, indent=2, sort_keys=True))


def write_cache(out_dir: str | Path, ids: list[str], dim: int, fill: Callable[[np.ndarray], None],
                manifest: dict) -> Cache:
    """Create the array as a memmap, let `fill` write its rows, then publish the folder whole."""
    with atomic_dir(out_dir) as tmp:
        arr = np.lib.format.open_memmap(tmp / EMBEDDINGS, mode="w+", dtype=np.float16, shape=(len(ids), dim))
        fill(arr)
        check_finite_rows(arr, out_dir, ids, hint="the model that computed it gave NaN or Inf; nothing was written")
        arr.flush()
        del arr
        _write_ids_and_manifest(tmp, ids, dim, manifest)
    return load_cache(out_dir)


def write_corrected_cache(out_dir: str | Path, stale: Cache, corrector, manifest: dict) -> Cache:
    """h(C): `corrector` applied to every row of `stale`, chunk by chunk, written as a cache of
    its own (manifest `"corrected": true`): an estimate of a re-embedding at no encoder pass."""
    return write_cache(out_dir, stale.ids, stale.dim, lambda arr: corrector.correct_into(stale.embeddings, arr),
                       {**manifest, "corrected": True, "stale_model_digest": stale.manifest.get("model_digest"),
                        "corpus_sha256": stale.manifest.get("corpus_sha256")})


class NpyRowWriter:
    """Rows written into an existing .npy file with plain file writes at their offsets. Unlike a
    memmap, written pages do not stay in the process's memory, so RSS does not grow with the corpus."""

    def __init__(self, path: Path):
        self.fh = open(path, "r+b")
        major, _ = np.lib.format.read_magic(self.fh)
        read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(self.fh)
        self.offset, self.shape, self.dtype = self.fh.tell(), shape, dtype
        self.row_bytes = int(shape[1]) * dtype.itemsize

    def write(self, first: int, block: np.ndarray) -> None:
        if first + len(block) > self.shape[0] or block.shape[1] != self.shape[1]:
            raise ValueError(f"rows {first}..{first + len(block)} x {block.shape[1]} do not fit {self.shape}")
        self.fh.seek(self.offset + first * self.row_bytes)
        self.fh.write(np.ascontiguousarray(block, dtype=self.dtype).tobytes())

    def sync(self) -> None:
        self.fh.flush()
        os.fsync(self.fh.fileno())

    def close(self) -> None:
        self.fh.close()


def build_cache(out_dir: str | Path, ids: list[str], dim: int, encode_rows, manifest: dict,
                resume_key: str) -> tuple[Cache, int]:
    """Write a cache chunk by chunk into `.<name>.partial/`, resumably, then publish it whole.

    `encode_rows(start_row, sink, checkpoint)` writes rows from `start_row` on with
    `sink(first_row, block)` and calls `checkpoint(rows_done)` after each chunk. A run that dies
    leaves the partial folder with progress.json; the next run with the same `resume_key` (same
    ids, model and encode settings) continues after the last completed chunk, any other key
    starts again. Returns the cache and the row it started from.

    The partial folder has one name per output, so it is taken over only under the output's
    lock (freshen.locks): a second run at the same time fails instead of writing into it."""
    out_dir = Path(out_dir)
    with hold(out_dir):
        return _build_cache(out_dir, ids, dim, encode_rows, manifest, resume_key)


def _build_cache(out_dir: Path, ids: list[str], dim: int, encode_rows, manifest: dict,
                 resume_key: str) -> tuple[Cache, int]:
    part = out_dir.with_name(f".{out_dir.name}.partial")
    progress = part / PROGRESS
    start = 0
    if progress.is_file() and (part / EMBEDDINGS).is_file():
        state = json.loads(progress.read_text())
        if state.get("resume_key") == resume_key and 0 <= int(state.get("rows_done", -1)) <= len(ids):
            start = int(state["rows_done"])
    if start == 0:
        shutil.rmtree(part, ignore_errors=True)
        part.mkdir(parents=True)
        np.lib.format.open_memmap(part / EMBEDDINGS, mode="w+", dtype=np.float16, shape=(len(ids), dim)).flush()
        write_json(progress, {"resume_key": resume_key, "rows_done": 0, "rows": len(ids)})
    writer = NpyRowWriter(part / EMBEDDINGS)
    try:
        def checkpoint(rows_done: int) -> None:
            writer.sync()  # rows on disk before progress says so
            write_json(progress, {"resume_key": resume_key, "rows_done": rows_done, "rows": len(ids)})

        encode_rows(start, writer.write, checkpoint)
        writer.sync()
    finally:
        writer.close()
    _write_ids_and_manifest(part, ids, dim, manifest)
    progress.unlink()
    replace_dir(part, out_dir)
    return load_cache(out_dir), start


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
