"""The fresh overlay (`train.negatives.fresh_overlay_steps`): passages embedded fresh for training
in the last N steps are scored with that embedding instead of h(C[d]) when the corrected top
candidates are re-ranked. It reuses what the steps computed anyway, so it costs no pass."""

from __future__ import annotations

import torch


class FreshOverlay:
    def __init__(self, steps: int, table: torch.Tensor):
        self.steps = steps
        self.table = torch.zeros(tuple(table.shape), dtype=torch.float16)  # each row's latest fresh embedding
        self.step = torch.full((len(table),), -(10**9), dtype=torch.long)  # the step that computed it

    def record(self, step: int, rows: list[int], fresh: torch.Tensor) -> None:
        """The step's fresh embeddings of `rows`."""
        rows_t = torch.tensor(rows)
        self.table[rows_t], self.step[rows_t] = fresh.detach().to(self.table.dtype), step

    def rerank(self, step: int, q_emb: torch.Tensor, cand: torch.Tensor, k: int, scorer, corrector) -> torch.Tensor:
        """The k best of the corrected top candidates [b, m], each scored with its own fresh
        embedding when the last `steps` steps embedded it, through h otherwise."""
        b, m = cand.shape
        flat = cand.flatten()
        emb = scorer.rows_through(flat, corrector).cpu()
        recent = (step - self.step[flat]) <= self.steps
        emb[recent] = self.table[flat[recent]].float()
        scores = (emb.view(b, m, -1) * q_emb[:, None, :].float()).sum(-1)
        return cand.gather(1, scores.topk(min(k, m), dim=1).indices)
