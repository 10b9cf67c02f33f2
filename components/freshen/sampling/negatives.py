"""Choose hard negatives for a batch of queries by scoring every cached target through the
corrector, s(q, d) = <f(q), h(C[d])>, chunk by chunk so no score matrix larger than a chunk
is ever held. Selection: top-k, Gumbel-top-k (k draws without replacement from softmax(beta*s)),
or balanced margin sampling over equal-width bins (TAS-Balanced). Positives never qualify."""

from __future__ import annotations

import numpy as np
import torch

SELECTIONS = ("topk", "gumbel", "balanced")


def corrected_chunk(cache: np.ndarray | torch.Tensor, start: int, stop: int, corrector) -> torch.Tensor:
    chunk = cache[start:stop]
    chunk = torch.from_numpy(np.asarray(chunk)) if not torch.is_tensor(chunk) else chunk
    chunk = chunk.float()
    return corrector(chunk) if corrector is not None else chunk


@torch.no_grad()
def chunked_topk(queries: torch.Tensor, cache, k: int, exclude: list[list[int]], corrector=None,
                 chunk_size: int = 65536, noise: torch.Generator | None = None, beta: float = 1.0):
    """Top-k rows per query of `beta * <q, h(C)>` (+ Gumbel noise when `noise` is a generator).

    Returns (rows [b, k] int64, scores [b, k] of the *noise-free* scaled scores)."""
    b, n = queries.shape[0], cache.shape[0]
    k = min(k, n)
    best_keys = torch.full((b, k), float("-inf"))
    best_rows = torch.full((b, k), -1, dtype=torch.long)
    best_scores = torch.full((b, k), float("-inf"))
    q = queries.float()
    for start in range(0, n, chunk_size):
        stop = min(n, start + chunk_size)
        scores = beta * (q @ corrected_chunk(cache, start, stop, corrector).T)
        keys = scores.clone()
        if noise is not None:
            u = torch.rand(keys.shape, generator=noise).clamp_(1e-20, 1.0 - 1e-7)
            keys += -torch.log(-torch.log(u))
        for i, rows in enumerate(exclude):
            local = [r - start for r in rows if start <= r < stop]
            if local:
                keys[i, local] = float("-inf")
        cand_keys = torch.cat([best_keys, keys], dim=1)
        cand_rows = torch.cat([best_rows, torch.arange(start, stop).expand(b, -1)], dim=1)
        cand_scores = torch.cat([best_scores, scores], dim=1)
        best_keys, pos = cand_keys.topk(k, dim=1)
        best_rows, best_scores = cand_rows.gather(1, pos), cand_scores.gather(1, pos)
    return best_rows, best_scores


def balanced_pick(margins: np.ndarray, k: int, bins: int, rng: np.random.Generator) -> list[int]:
    """TAS-Balanced: split margins into `bins` equal-width bins over [min, max]; draw a bin
    uniformly (redraw if empty), then a candidate uniformly within it; k times, no repeats."""
    margins = np.asarray(margins, dtype=np.float64)
    lo, hi = float(margins.min()), float(margins.max())
    width = (hi - lo) / bins if hi > lo else 1.0
    which = np.minimum(((margins - lo) / width).astype(int), bins - 1)
    members = {b: list(np.flatnonzero(which == b)) for b in range(bins)}
    picked: list[int] = []
    while len(picked) < min(k, len(margins)):
        live = [b for b, m in members.items() if m]
        b = live[rng.integers(len(live))]  # uniform over non-empty bins == redraw when empty
        j = members[b].pop(int(rng.integers(len(members[b]))))
        picked.append(int(j))
    return picked


def select_negatives(queries: torch.Tensor, cache, k: int, exclude: list[list[int]], *, corrector=None,
                     selection: str = "topk", beta: float = 20.0, candidates: int = 100, bins: int = 10,
                     positive_rows: list[int] | None = None, chunk_size: int = 65536,
                     generator: torch.Generator | None = None, rng: np.random.Generator | None = None):
    """Rows of k negatives per query (int64 [b, k]), never one of that query's positives."""
    if selection == "topk":
        rows, _ = chunked_topk(queries, cache, k, exclude, corrector, chunk_size)
        return rows
    if selection == "gumbel":
        rows, _ = chunked_topk(queries, cache, k, exclude, corrector, chunk_size, noise=generator, beta=beta)
        return rows
    if selection == "balanced":
        rows, scores = chunked_topk(queries, cache, max(candidates, k), exclude, corrector, chunk_size)
        pos_scores = (queries.float() * corrected_chunk_rows(cache, positive_rows, corrector)).sum(-1)
        out = []
        for i in range(rows.shape[0]):
            margins = (pos_scores[i] - scores[i]).numpy()
            out.append(rows[i, balanced_pick(margins, k, bins, rng)])
        return torch.stack(out)
    raise ValueError(f"negative selection must be one of {SELECTIONS}, got '{selection}'")


def corrected_chunk_rows(cache, rows: list[int], corrector) -> torch.Tensor:
    emb = torch.from_numpy(np.asarray(cache[np.asarray(rows)])).float()
    with torch.no_grad():
        return corrector(emb) if corrector is not None else emb
