"""Where each row of a new cache comes from: a row of a cache of the same model holding the same
text (copied), a row of a stale cache mapped by the corrector, or the encoder (see
`embed_corpus.embed_to_cache`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from freshen.cache import Cache
from freshen.cache_rows import ORIGINS

COPY_ROWS = 65536  # rows copied at once from a reused cache


@dataclass
class RowPlan:
    """Where each row of the new cache comes from: `source[i]` indexes `sources` (-1: encode it),
    `row[i]` is its row there; `corrected` marks sources whose rows go through the corrector."""

    sources: list[Cache]
    corrected: list[bool]
    source: np.ndarray
    row: np.ndarray

    def missing(self) -> np.ndarray:
        return np.flatnonzero(self.source < 0)

    def origin(self) -> np.ndarray:
        out = np.full(len(self.source), ORIGINS.index("encoded"), dtype=np.uint8)
        for k, corrected in enumerate(self.corrected):
            out[self.source == k] = ORIGINS.index("corrected" if corrected else "reused")
        return out


def plan_rows(hashes: np.ndarray, sources: list[Cache], corrected: list[bool]) -> RowPlan:
    """For each text hash, the first source holding a row of that text: genuine rows of the
    model only (a row another cache corrected is no embedding of it), h(stale) from a corrected
    source."""
    source = np.full(len(hashes), -1, dtype=np.int64)
    row = np.full(len(hashes), -1, dtype=np.int64)
    for k, cache in enumerate(sources):
        todo = np.flatnonzero(source < 0)
        if not todo.size:
            break
        usable = np.flatnonzero(cache.rows.origin != ORIGINS.index("corrected")) if not corrected[k] else None
        have = cache.rows.hashes if usable is None else cache.rows.hashes[usable]
        if not len(have):
            continue
        order = np.argsort(have, kind="stable")
        at = np.minimum(np.searchsorted(have[order], hashes[todo]), len(have) - 1)
        hit = have[order][at] == hashes[todo]
        found = order[at[hit]]
        source[todo[hit]] = k
        row[todo[hit]] = found if usable is None else usable[found]
    return RowPlan(sources, corrected, source, row)


def runs(positions: np.ndarray):
    """(start, stop) slices of `positions` whose values are consecutive integers."""
    if not len(positions):
        return
    breaks = np.flatnonzero(np.diff(positions) != 1) + 1
    edges = [0, *breaks.tolist(), len(positions)]
    yield from zip(edges[:-1], edges[1:])


def scatter(sink, positions: np.ndarray, block: np.ndarray) -> None:
    """Rows of `block` written at `positions` of the output, one sink call per consecutive run."""
    for a, b in runs(positions):
        sink(int(positions[a]), block[a:b])


def copy_planned(plan: RowPlan, sink, check, corrector=None) -> None:
    """Write every row the plan takes from a source: copied, or corrected by `corrector`."""
    for k, cache in enumerate(plan.sources):
        dest = np.flatnonzero(plan.source == k)
        for s in range(0, len(dest), COPY_ROWS):
            at = dest[s : s + COPY_ROWS]
            src = plan.row[at]
            order = np.argsort(src, kind="stable")  # read the source in row order
            block = np.asarray(cache.embeddings[src[order]], dtype=np.float32)
            if plan.corrected[k]:
                with torch.inference_mode():
                    block = corrector(torch.from_numpy(block)).numpy()
                check(at[order], block)
            scatter(sink, at[order], block)
