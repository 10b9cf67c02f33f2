"""The training-time index: the stale (or last refreshed) cache seen through the corrector.

- small caches: every row scored through the corrector, chunk by chunk (exact);
- linear corrector: exact search on the raw cache with the transformed query W^T f(q);
- past `ann_threshold` rows: candidates from a faiss index over the raw cache (searched with
  the transformed query for a linear corrector, the plain query otherwise), rescored exactly
  through the corrector, then selected from (top-k, Gumbel-top-k or balanced)."""

from __future__ import annotations

import faiss
import numpy as np
import torch

from freshen.sampling.negatives import balanced_pick, select_negatives


class CacheScorer:
    def __init__(self, table: torch.Tensor, neg_p: dict):
        self.neg_p = neg_p
        self.chunk = int(neg_p.get("chunk_size", 65536))
        self.ann_threshold = int(neg_p.get("ann_threshold", 0) or 0)
        self.ann_candidates = int(neg_p.get("ann_candidates", 1000))
        self.index = None
        self.set_table(table)

    def set_table(self, table: torch.Tensor) -> None:
        """Use a new cache (after a refresh); rebuild the ANN index when one is used."""
        self.table = table
        self.index = None
        if self.ann_threshold and len(table) > self.ann_threshold:
            self.index = faiss.index_factory(table.shape[1], self.neg_p.get("ann_index", "HNSW32"),
                                             faiss.METRIC_INNER_PRODUCT)
            if hasattr(self.index, "hnsw"):
                self.index.hnsw.efSearch = max(self.ann_candidates, 64)
            for s in range(0, len(table), 65536):
                block = table[s:s + 65536].float().numpy()
                if not self.index.is_trained:
                    self.index.train(block)
                self.index.add(block)

    def _query(self, q: torch.Tensor, corrector):
        if corrector is not None and getattr(corrector, "arch", None) == "linear":
            return corrector.transform_query(q)[0], None  # exact on the raw cache
        return q.float(), corrector

    def rows_through(self, rows, corrector) -> torch.Tensor:
        emb = self.table[torch.as_tensor(rows)].float()
        with torch.no_grad():
            return corrector(emb) if corrector is not None else emb

    @torch.no_grad()
    def select(self, q: torch.Tensor, k: int, exclude: list[list[int]], positive_rows: list[int],
               corrector=None, generator=None, rng=None) -> torch.Tensor:
        p = self.neg_p
        selection, beta = p.get("selection", "topk"), float(p.get("beta", 20.0))
        if self.index is None:
            q_eff, cor = self._query(q, corrector)
            return select_negatives(q_eff, self.table, k, exclude, corrector=cor, selection=selection, beta=beta,
                                    candidates=int(p.get("candidates", 100)), bins=int(p.get("bins", 10)),
                                    positive_rows=positive_rows, chunk_size=self.chunk, generator=generator, rng=rng)
        return self._select_ann(q, k, exclude, positive_rows, corrector, selection, beta, generator, rng)

    def _select_ann(self, q, k, exclude, positive_rows, corrector, selection, beta, generator, rng):
        q_search, _ = self._query(q, corrector)
        _, cand = self.index.search(np.ascontiguousarray(q_search.numpy(), dtype=np.float32), self.ann_candidates)
        cand = torch.from_numpy(cand).long()
        out = []
        for i in range(q.shape[0]):
            rows = cand[i][cand[i] >= 0]
            rows = rows[~torch.isin(rows, torch.tensor(exclude[i], dtype=torch.long))]
            scores = (self.rows_through(rows, corrector) @ q[i].float())
            if selection == "balanced":
                top = scores.topk(min(int(self.neg_p.get("candidates", 100)), len(rows)))
                s_pos = float(self.rows_through([positive_rows[i]], corrector)[0] @ q[i].float())
                picked = balanced_pick((s_pos - top.values).numpy(), k, int(self.neg_p.get("bins", 10)), rng)
                out.append(rows[top.indices[picked]])
                continue
            keys = scores * beta if selection == "gumbel" else scores.clone()
            if selection == "gumbel":
                u = torch.rand(keys.shape, generator=generator).clamp_(1e-20, 1.0 - 1e-7)
                keys -= torch.log(-torch.log(u))
            out.append(rows[keys.topk(min(k, len(rows))).indices])
        return torch.stack(out)
