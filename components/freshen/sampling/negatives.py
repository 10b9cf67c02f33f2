"""Exact search of the training-time index: every cached row scored through the corrector,
s(q, d) = <f(q), h(C[d])>, chunk by chunk so no score matrix larger than a chunk is ever held,
keeping the top k keys per query (the scores, or their Gumbel-perturbed version: see
`selection.py`). Excluded rows (a query's positives) never qualify."""

from __future__ import annotations

import numpy as np
import torch

from freshen.sampling.selection import gumbel_keys


def corrected_chunk(cache: np.ndarray | torch.Tensor, start: int, stop: int, corrector, device=None) -> torch.Tensor:
    """h(C[start:stop]) as float32 on `device` (None: where the rows are), the rows moved there first."""
    chunk = cache[start:stop]
    chunk = torch.from_numpy(np.asarray(chunk)) if not torch.is_tensor(chunk) else chunk
    chunk = chunk.to(device if device is not None else chunk.device, non_blocking=True).float()
    return corrector(chunk) if corrector is not None else chunk


@torch.no_grad()
def chunked_topk(
    queries: torch.Tensor,
    cache,
    k: int,
    exclude: list[list[int]],
    corrector=None,
    chunk_size: int = 65536,
    noise: torch.Generator | None = None,
    beta: float = 1.0,
):
    """Top-k rows per query of `beta * <q, h(C)>` (Gumbel-perturbed when `noise` is a generator:
    one draw per scored row, chunk by chunk).

    Scored where `queries` are (a cache elsewhere is moved there chunk by chunk); returns, on the
    CPU, (rows [b, k] int64, scores [b, k] of the *noise-free* scaled scores)."""
    b, n = queries.shape[0], cache.shape[0]
    k = min(k, n)
    device = queries.device
    best_keys = torch.full((b, k), float("-inf"), device=device)
    best_rows = torch.full((b, k), -1, dtype=torch.long, device=device)
    best_scores = torch.full((b, k), float("-inf"), device=device)
    q = queries.float()
    for start in range(0, n, chunk_size):
        stop = min(n, start + chunk_size)
        scores = beta * (q @ corrected_chunk(cache, start, stop, corrector, device).T)
        keys = gumbel_keys(scores, noise) if noise is not None else scores.clone()
        for i, rows in enumerate(exclude):
            local = [r - start for r in rows if start <= r < stop]
            if local:
                keys[i, local] = float("-inf")
        cand_keys = torch.cat([best_keys, keys], dim=1)
        cand_rows = torch.cat([best_rows, torch.arange(start, stop, device=device).expand(b, -1)], dim=1)
        cand_scores = torch.cat([best_scores, scores], dim=1)
        best_keys, pos = cand_keys.topk(k, dim=1)
        best_rows, best_scores = cand_rows.gather(1, pos), cand_scores.gather(1, pos)
    return best_rows.cpu(), best_scores.cpu()
