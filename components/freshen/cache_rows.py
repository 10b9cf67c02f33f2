"""The per-row facts of a cache (see freshen.cache): the hash of the text each row was
embedded from (`doc_hashes.npy`, `data.corpus_file.text_hash`) and where the row came from
(`row_origin.npy`: encoded by the cache's model, reused from another cache of the same model,
or corrected: h(stale row)). The manifest records both files' digests and the count per origin;
a cache whose files disagree with its manifest is refused, naming the field."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from freshen.data.corpus_file import HASH_DTYPE
from freshen.errors import DataError
from freshen.integrity import file_sha256

HASHES, ORIGIN = "doc_hashes.npy", "row_origin.npy"
ORIGINS = ("encoded", "reused", "corrected")  # row_origin.npy holds the index of one of these


@dataclass
class Rows:
    """Per-row facts written beside the array: text hashes (S16) and origins (uint8, ORIGINS)."""

    hashes: np.ndarray
    origin: np.ndarray

    @classmethod
    def all(cls, hashes: np.ndarray, origin: str) -> Rows:
        return cls(np.asarray(hashes, dtype=HASH_DTYPE), np.full(len(hashes), ORIGINS.index(origin), dtype=np.uint8))

    def counts(self) -> dict[str, int]:
        found = np.bincount(self.origin, minlength=len(ORIGINS))
        return {name: int(found[i]) for i, name in enumerate(ORIGINS)}


def write_rows(folder: Path, rows: Rows, count: int) -> dict:
    """Write both files into `folder`; returns what the manifest records about them."""
    if len(rows.hashes) != count or len(rows.origin) != count:
        raise ValueError(f"{len(rows.hashes)} hashes and {len(rows.origin)} origins for {count} rows")
    np.save(folder / HASHES, np.asarray(rows.hashes, dtype=HASH_DTYPE))
    np.save(folder / ORIGIN, np.asarray(rows.origin, dtype=np.uint8))
    return {
        "origin": rows.counts(),
        "doc_hashes_sha256": file_sha256(folder / HASHES),
        "row_origin_sha256": file_sha256(folder / ORIGIN),
    }


def load_rows(path: Path, manifest: dict, count: int) -> Rows | None:
    """The per-row hashes and origins, checked against the manifest; None for a cache without them."""
    if "doc_hashes_sha256" not in manifest:
        return None
    mpath = path / "manifest.json"
    arrays = {}
    for name, field, dtype in ((HASHES, "doc_hashes_sha256", HASH_DTYPE), (ORIGIN, "row_origin_sha256", "uint8")):
        if not (path / name).is_file():
            raise DataError(path / name, f"missing, but the manifest records its digest ({field})")
        if file_sha256(path / name) != manifest.get(field):
            raise DataError(mpath, f"{name} does not match the manifest's digest", field=field)
        try:
            arr = np.load(path / name, allow_pickle=False)
        except (ValueError, EOFError, OSError) as exc:
            raise DataError(path / name, f"not a readable .npy array ({exc})") from None
        if arr.shape != (count,) or str(arr.dtype) != str(np.dtype(dtype)):
            raise DataError(path / name, f"expected {count} rows of {np.dtype(dtype)}, has {arr.shape} {arr.dtype}")
        arrays[name] = arr
    rows = Rows(arrays[HASHES], arrays[ORIGIN])
    if rows.origin.size and int(rows.origin.max()) >= len(ORIGINS):
        raise DataError(path / ORIGIN, f"origin code {int(rows.origin.max())} is not one of {list(ORIGINS)}")
    if manifest.get("origin") != rows.counts():
        raise DataError(
            mpath,
            f"says {manifest.get('origin')} rows by origin, {ORIGIN} has {rows.counts()}",
            field="origin",
        )
    return rows
