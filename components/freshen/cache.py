"""The embedding cache: a memory-mappable float16 array, its doc ids in the same order, and a
manifest saying which model made it. Written atomically; validated whenever it is opened.

A cache also records, per row, the hash of the text the row was embedded from (`doc_hashes.npy`,
see `data.corpus_file.text_hash`) and where the row came from (`row_origin.npy`: encoded by
this cache's model, reused from another cache of the same model, or corrected: h(stale row)).
That is what lets a new corpus version be diffed against a cache, and only the documents whose
text changed be embedded again (`embed_corpus`)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from freshen.atomic import atomic_dir, replace_dir, write_json
from freshen.cache_rows import Rows, load_rows, write_rows
from freshen.errors import DataError
from freshen.integrity import check_finite_rows, file_sha256
from freshen.jsonfile import read_json
from freshen.locks import hold

EMBEDDINGS, IDS, MANIFEST, PROGRESS = "embeddings.npy", "ids.json", "manifest.json", "progress.json"
FORMAT = "freshen-cache/1"


@dataclass
class Cache:
    path: Path
    ids: list[str]
    embeddings: np.ndarray  # (count, dim) float16, memory-mapped
    manifest: dict
    rows: Rows | None = None  # None: a cache written before row hashes were recorded

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


def _write_ids_and_manifest(folder: Path, ids: list[str], dim: int, manifest: dict, rows: Rows | None) -> None:
    """The files beside embeddings.npy, the same for every way a cache is written."""
    (folder / IDS).write_text(json.dumps(ids))
    if rows is not None:
        manifest = {**manifest, **write_rows(folder, rows, len(ids))}
    full = {
        **manifest,
        "format": FORMAT,
        "count": len(ids),
        "dim": dim,
        "dtype": "float16",
        "ids_sha256": ids_digest(ids),
        "embeddings_sha256": file_sha256(folder / EMBEDDINGS),
    }
    (folder / MANIFEST).write_text(json.dumps(full, indent=2, sort_keys=True))


def write_cache(
    out_dir: str | Path,
    ids: list[str],
    dim: int,
    fill: Callable[[np.ndarray], None],
    manifest: dict,
    rows: Rows | None = None,
) -> Cache:
    """Create the array as a memmap, let `fill` write its rows, then publish the folder whole."""
    with atomic_dir(out_dir) as tmp:
        arr = np.lib.format.open_memmap(tmp / EMBEDDINGS, mode="w+", dtype=np.float16, shape=(len(ids), dim))
        fill(arr)
        check_finite_rows(arr, out_dir, ids, hint="the model that computed it gave NaN or Inf; nothing was written")
        arr.flush()
        del arr
        _write_ids_and_manifest(tmp, ids, dim, manifest, rows)
    return load_cache(out_dir)


def write_corrected_cache(out_dir: str | Path, stale: Cache, corrector, manifest: dict) -> Cache:
    """h(C): `corrector` applied to every row of `stale`, chunk by chunk, written as a cache of
    its own (manifest `"corrected": true`): an estimate of a re-embedding at no encoder pass."""
    rows = Rows.all(stale.rows.hashes, "corrected") if stale.rows is not None else None
    return write_cache(
        out_dir,
        stale.ids,
        stale.dim,
        lambda arr: corrector.correct_into(stale.embeddings, arr),
        {
            **manifest,
            "corrected": True,
            "stale_model_digest": stale.manifest.get("model_digest"),
            "corpus_sha256": stale.manifest.get("corpus_sha256"),
        },
        rows,
    )


def _open_npy(path: Path, mode: str):
    """The open .npy file at its first row, its shape, dtype and the rows' offset."""
    fh = open(path, mode)
    major, _ = np.lib.format.read_magic(fh)
    read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
    shape, _, dtype = read_header(fh)
    return fh, shape, dtype, fh.tell()


class NpyRowReader:
    """A 2-d .npy array's rows read with plain file reads: `reader[start:stop]` and
    `reader[rows]` give arrays, `shape` and `len` as the array's. Unlike a memmap, rows read do
    not stay mapped in the process, so a pass over a large cache leaves RSS where it was."""

    def __init__(self, path: Path):
        self.path = Path(path)
        fh, self.shape, self.dtype, self.offset = _open_npy(self.path, "rb")
        fh.close()
        self.row_bytes = int(self.shape[1]) * self.dtype.itemsize

    def __len__(self) -> int:
        return int(self.shape[0])

    def __getitem__(self, key) -> np.ndarray:
        dim = int(self.shape[1])
        if isinstance(key, slice):
            start, stop, _ = key.indices(len(self))
            count = max(0, stop - start)
            offset = self.offset + start * self.row_bytes
            return np.fromfile(self.path, self.dtype, count * dim, offset=offset).reshape(count, dim)
        rows = np.asarray(key, dtype=np.int64)
        out = np.empty((len(rows), dim), dtype=self.dtype)
        with open(self.path, "rb") as fh:
            for i, r in enumerate(rows.tolist()):  # each row read straight into its place
                if os.preadv(fh.fileno(), [out[i]], self.offset + r * self.row_bytes) != self.row_bytes:
                    raise DataError(self.path, f"row {r} lies past the end of the file (truncated?)")
        return out


class NpyRowWriter:
    """Rows written into an existing .npy file with plain file writes at their offsets. Unlike a
    memmap, written pages do not stay in the process's memory, so RSS does not grow with the corpus."""

    def __init__(self, path: Path):
        self.fh, shape, dtype, self.offset = _open_npy(path, "r+b")
        self.shape, self.dtype = shape, dtype
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


def build_cache(
    out_dir: str | Path,
    ids: list[str],
    dim: int,
    encode_rows,
    manifest: dict,
    resume_key: str,
    rows: Rows | None = None,
) -> tuple[Cache, int]:
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
        return _build_cache(out_dir, ids, dim, encode_rows, manifest, resume_key, rows)


def _build_cache(
    out_dir: Path, ids: list[str], dim: int, encode_rows, manifest: dict, resume_key: str, rows: Rows | None
) -> tuple[Cache, int]:
    part = out_dir.with_name(f".{out_dir.name}.partial")
    progress = part / PROGRESS
    start = _resume_row(part, resume_key, len(ids))
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
    _write_ids_and_manifest(part, ids, dim, manifest, rows)
    progress.unlink()
    replace_dir(part, out_dir)
    return load_cache(out_dir), start


def _resume_row(part: Path, resume_key: str, rows: int) -> int:
    """The row a partial build continues from: its progress.json's, when that file is readable and
    was written for the same `resume_key`; else 0 (the build starts again)."""
    progress = part / PROGRESS
    if not (progress.is_file() and (part / EMBEDDINGS).is_file()):
        return 0
    try:
        state = read_json(progress)
        done = int(state.get("rows_done", -1))
        partial_rows = np.load(part / EMBEDDINGS, mmap_mode="r").shape[0]
    except (DataError, TypeError, ValueError, EOFError, OSError):
        return 0  # a damaged partial build costs a restart, nothing else
    same = state.get("resume_key") == resume_key and partial_rows == rows
    return done if same and 0 <= done <= rows else 0


def _read_ids(path: Path) -> list[str]:
    ids = read_json(path, expect=None)
    if not isinstance(ids, list):
        raise DataError(path, f"must be a JSON list of document ids, got a {type(ids).__name__}")
    for i, doc_id in enumerate(ids, start=1):
        if not isinstance(doc_id, str):
            raise DataError(path, f"must be a JSON list of document ids (strings), item {i} is {doc_id!r}")
    return ids


def _open_embeddings(path: Path) -> np.ndarray:
    """embeddings.npy memory-mapped; an empty, truncated or damaged file is named."""
    if path.stat().st_size == 0:
        raise DataError(path, "the file is empty (0 bytes): rebuild the cache (embed_cache or reembed)")
    try:
        return np.load(path, mmap_mode="r")
    except (ValueError, EOFError, OSError) as exc:
        raise DataError(
            path, f"not a readable .npy array, truncated or damaged ({exc}): rebuild the cache (embed_cache or reembed)"
        ) from None


def load_cache(path: str | Path) -> Cache:
    path = Path(path)
    for name in (EMBEDDINGS, IDS, MANIFEST):
        if not (path / name).is_file():
            raise DataError(path / name, "cache file missing (run embed_cache or reembed first)")
    mpath = path / MANIFEST
    manifest = read_json(mpath)
    for name in ("format", "count", "dim", "dtype"):
        if name not in manifest:
            raise DataError(mpath, "missing", field=name)
    ids = _read_ids(path / IDS)
    emb = _open_embeddings(path / EMBEDDINGS)
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
    return Cache(path, ids, emb, manifest, load_rows(path, manifest, len(ids)))
