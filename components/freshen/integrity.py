"""Nothing silently wrong: digests that bind an artifact to what it was made from, and checks
that the numbers flowing between steps are finite.

- A cache's manifest carries the digest of the prepared corpus it embedded (`corpus_sha256`)
  and of its own array (`embeddings_sha256`); `train` and `evaluate` refuse a cache of another
  corpus.
- `metrics/eval.json` records the digests of the model and caches it measured (`measured`);
  `promote` refuses to register a model with another model's figures.
- NaN or Inf in a cache, an encoded block, a loss or a metric stops the step, naming where."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np

from freshen.errors import DataError, FreshenError

CHUNK_BYTES = 1 << 20
CHUNK_ROWS = 65536


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK_BYTES):
            h.update(block)
    return h.hexdigest()


def checkpoint_digest(model_dir: str | Path) -> str:
    """A trained model folder's identity: its encoder's weights and, when saved, its corrector's."""
    from freshen.modeling.encoder import model_digest

    model_dir = Path(model_dir)
    h = hashlib.sha256(model_digest(model_dir / "encoder").encode())
    if (model_dir / "corrector").is_dir():
        h.update(model_digest(model_dir / "corrector").encode())
    return h.hexdigest()


def first_nonfinite_row(array: np.ndarray, chunk: int = CHUNK_ROWS) -> int | None:
    """The first row of a 2-D array (a memmap is read a chunk at a time) holding NaN or Inf."""
    for start in range(0, len(array), chunk):
        bad = ~np.isfinite(np.asarray(array[start : start + chunk])).all(axis=1)
        if bad.any():
            return start + int(np.argmax(bad))
    return None


CORRUPT = "the embeddings are corrupt: delete the folder and rerun the step that wrote it"


def check_finite_rows(
    array: np.ndarray, where: str | Path, ids: list[str] | None = None, first_row: int = 0, hint: str = CORRUPT
) -> None:
    """Refuse an array with a NaN or Inf, naming the row (and its document id)."""
    row = first_nonfinite_row(array)
    if row is not None:
        row += first_row
        doc = f" (document '{ids[row]}')" if ids is not None else ""
        raise DataError(where, f"row {row}{doc} holds NaN or Inf: {hint}")


def diverged(what: str) -> FreshenError:
    return FreshenError(f"{what}: training diverged (lower train.lr, or check the cache for NaN rows)")


def check_finite_value(value: float, what: str) -> None:
    if not math.isfinite(value):
        raise diverged(f"{what} is {value}")


def nonfinite_key(obj, prefix: str = "") -> str | None:
    """The dotted key of the first NaN or Inf inside a JSON-like object, None when all finite."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return prefix or "(top level)"
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    for key, value in items:
        found = nonfinite_key(value, f"{prefix}.{key}" if prefix else str(key))
        if found is not None:
            return found
    return None


def check_cache_corpus(cache, corpus_ids, corpus_file: Path) -> None:
    """A cache embeds exactly the prepared corpus: the same documents (ids) and, where the
    manifest records it, the same bytes (`corpus_sha256`). Otherwise the step would rank a
    subset of the corpus or fail later on an unknown id."""
    manifest = Path(cache.path) / "manifest.json"
    recorded = cache.manifest.get("corpus_sha256")
    if recorded is not None and recorded != file_sha256(corpus_file):
        raise DataError(
            manifest,
            f"the cache was embedded from another corpus than {corpus_file} (its digest "
            "differs): rebuild the cache (freshen embed-cache, or dvc repro)",
            field="corpus_sha256",
        )
    cached, known = set(cache.ids), set(corpus_ids)
    if cached != known:
        extra, missing = sorted(cached - known), sorted(known - cached)
        parts = ([f"{len(missing)} corpus documents are not cached, e.g. '{missing[0]}'"] if missing else []) + (
            [f"{len(extra)} cached ids are not in the corpus, e.g. '{extra[0]}'"] if extra else []
        )
        raise DataError(
            Path(cache.path) / "ids.json",
            f"the cache does not match {corpus_file}: {'; '.join(parts)}: "
            "rebuild the cache (freshen embed-cache, or dvc repro)",
        )


def check_measured(metrics: dict, metrics_file: Path, current: dict[str, str]) -> None:
    """`metrics_file` (eval.json) must have measured the artifacts that are there now: its
    `measured` section names their digests. Figures of another model must never be registered."""
    measured = metrics.get("measured")
    if not isinstance(measured, dict):
        raise DataError(
            metrics_file,
            "does not say which model it measured (written by an older Freshen): "
            "run evaluate again (freshen evaluate, or dvc repro)",
            field="measured",
        )
    for key, digest in current.items():
        if measured.get(key) != digest:
            raise DataError(
                metrics_file,
                f"measured another {key.replace('_', ' ')} ({str(measured.get(key))[:12]}) "
                f"than the one there now ({digest[:12]}): run evaluate again "
                "(freshen evaluate, or dvc repro)",
                field=f"measured.{key}",
            )
