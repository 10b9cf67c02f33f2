"""The training-time index: the stale (or last refreshed) cache seen through the corrector.

- small caches: every row scored through the corrector, chunk by chunk (exact);
- linear corrector: exact search on the raw cache with the transformed query W^T f(q);
- past `ann_threshold` rows: candidates from a faiss index over the raw cache
  (`ann_index`, built by `retrieval.build_index`; searched with the transformed query for a
  linear corrector, the plain query otherwise), rescored exactly through the corrector (all
  candidates of all queries at once, each distinct row once), then selected from (top-k,
  Gumbel-top-k or balanced).

With false-negative control (`sampling/false_negatives.py`) every path yields the top
`candidates` rows, rescored exactly through the corrector with the positive, and the filter
picks among those that pass its rules."""

from __future__ import annotations

import time

import numpy as np
import torch

from freshen.retrieval import build_index
from freshen.sampling.negatives import balanced_pick, chunked_topk, select_negatives

ANN_INDEX = "IVF4096,Flat"


class CacheScorer:
    def __init__(self, table: torch.Tensor, neg_p: dict):
        self.neg_p = neg_p
        self.chunk = int(neg_p.get("chunk_size", 65536))
        self.ann_threshold = int(neg_p.get("ann_threshold", 0) or 0)
        self.ann_candidates = int(neg_p.get("ann_candidates", 1000))
        self.ann_index = str(neg_p.get("ann_index") or ANN_INDEX)
        self.ann_nprobe = int(neg_p.get("ann_nprobe") or 64)
        self.ann_ef_search = int(neg_p.get("ann_ef_search") or max(self.ann_candidates, 64))
        self.index, self.index_build_s = None, 0.0
        self.set_table(table)

    def set_table(self, table: torch.Tensor) -> None:
        """Use a new cache (after a refresh); rebuild the ANN index when one is used."""
        self.table = table
        self.index = None
        if self.ann_threshold and len(table) > self.ann_threshold:
            start = time.perf_counter()
            self.index = build_index(table.detach().cpu().numpy(), self.ann_index, nprobe=self.ann_nprobe,
                                     ef_search=self.ann_ef_search, param="train.negatives.ann_index")
            self.index_build_s = time.perf_counter() - start

    def query_for(self, q: torch.Tensor, corrector):
        """The query to search the raw table with, and the corrector its rows still need (None
        when the corrector folds into the query, or there is none)."""
        if corrector is not None and getattr(corrector, "exact_on_stale", False):
            return corrector.transform_query(q)[0], None  # exact on the raw cache
        return q.float(), corrector

    def rows_through(self, rows, corrector) -> torch.Tensor:
        emb = self.table[torch.as_tensor(rows)].float()
        with torch.no_grad():
            return corrector(emb) if corrector is not None else emb

    @torch.no_grad()
    def select_filtered(self, q: torch.Tensor, k: int, exclude: list[list[int]], positive_rows: list[int],
                        fn_filter, corrector=None, generator=None, rng=None) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """Negatives through the false-negative filter: (rows [b, k], unusable [b, k], counts)."""
        p = self.neg_p
        m = min(max(int(p.get("candidates", 100)), k + fn_filter.range_min), len(self.table))
        rows = self._candidates(q, m, exclude, corrector)
        live = rows.clamp(min=0)
        emb = self.rows_through(live.flatten(), corrector).view(*rows.shape, -1)
        scores = (emb * q.float()[:, None, :]).sum(-1).masked_fill(rows < 0, float("-inf"))
        positive = (self.rows_through(positive_rows, corrector) * q.float()).sum(-1)
        return fn_filter.pick(rows, scores, positive, k, p.get("selection", "topk"), float(p.get("beta", 20.0)),
                              int(p.get("bins", 10)), generator, rng)

    def _candidates(self, q: torch.Tensor, m: int, exclude: list[list[int]], corrector) -> torch.Tensor:
        """The top `m` rows [b, m] of the training-time index per query, excluded rows never
        among them (-1 where fewer qualify); from the ANN index past `ann_threshold`."""
        if self.index is not None:
            q_search, _ = self.query_for(q.float(), corrector)
            _, cand = self.index.search(np.ascontiguousarray(q_search.numpy(), dtype=np.float32),
                                        max(m, self.ann_candidates))
            cand = torch.from_numpy(cand).long()
            scores = (self.rows_through(cand.clamp(min=0).flatten(), corrector).view(*cand.shape, -1)
                      * q.float()[:, None, :]).sum(-1)
        else:
            q_eff, cor = self.query_for(q, corrector)
            cand, scores = chunked_topk(q_eff, self.table, min(m + max(map(len, exclude), default=0), len(self.table)),
                                        [[]] * len(q), cor, self.chunk)
        banned = torch.stack([torch.isin(cand[i], torch.tensor(rows, dtype=torch.long)) for i, rows in enumerate(exclude)])
        scores = scores.masked_fill(banned | (cand < 0), float("-inf"))
        top = scores.topk(min(m, scores.shape[1]), dim=1)
        return cand.gather(1, top.indices).masked_fill(~torch.isfinite(top.values), -1)

    @torch.no_grad()
    def select(self, q: torch.Tensor, k: int, exclude: list[list[int]], positive_rows: list[int],
               corrector=None, generator=None, rng=None) -> torch.Tensor:
        p = self.neg_p
        selection, beta = p.get("selection", "topk"), float(p.get("beta", 20.0))
        if self.index is None:
            return self._select_exact(q, k, exclude, positive_rows, corrector, selection, beta, generator, rng)
        return self._select_ann(q, k, exclude, positive_rows, corrector, selection, beta, generator, rng)

    def _select_exact(self, q, k, exclude, positive_rows, corrector, selection, beta, generator, rng):
        p = self.neg_p
        q_eff, cor = self.query_for(q, corrector)
        return select_negatives(q_eff, self.table, k, exclude, corrector=cor, selection=selection, beta=beta,
                                candidates=int(p.get("candidates", 100)), bins=int(p.get("bins", 10)),
                                positive_rows=positive_rows, chunk_size=self.chunk, generator=generator, rng=rng)

    def _select_ann(self, q, k, exclude, positive_rows, corrector, selection, beta, generator, rng):
        q = q.float()
        q_search, _ = self.query_for(q, corrector)
        _, cand = self.index.search(np.ascontiguousarray(q_search.numpy(), dtype=np.float32), self.ann_candidates)
        cand = torch.from_numpy(cand).long()  # [b, C]; -1 where the index found fewer
        b, n = cand.shape[0], len(self.table)
        valid = cand >= 0
        banned = [i * n + r for i, rows in enumerate(exclude) for r in rows]
        if banned:  # a query's positives / excluded rows never qualify
            valid &= ~torch.isin(torch.arange(b)[:, None] * n + cand, torch.tensor(banned, dtype=torch.long))
        short = (valid.sum(1) < k).nonzero().flatten().tolist()
        if short:  # too few candidates left for some queries: those are selected exactly
            ok = [i for i in range(b) if i not in short]
            out = torch.empty((b, k), dtype=torch.long)
            out[short] = self._select_exact(q[short], k, [exclude[i] for i in short],
                                            [positive_rows[i] for i in short] if positive_rows is not None else None,
                                            corrector, selection, beta, generator, rng)
            if ok:
                out[ok] = self._select_ann(q[ok], k, [exclude[i] for i in ok],
                                           [positive_rows[i] for i in ok] if positive_rows is not None else None,
                                           corrector, selection, beta, generator, rng)
            return out
        # every distinct candidate row through the corrector once, scored against every query
        rows, inverse = torch.unique(cand[valid], return_inverse=True)
        scores = torch.zeros(cand.shape)
        scores[valid] = (self.rows_through(rows, corrector) @ q.T)[inverse, valid.nonzero()[:, 0]]
        if selection == "balanced":
            keys = scores.masked_fill(~valid, float("-inf"))
            top = keys.topk(min(max(int(self.neg_p.get("candidates", 100)), k), keys.shape[1]), dim=1)
            s_pos = (self.rows_through(positive_rows, corrector) * q).sum(-1)
            bins, out = int(self.neg_p.get("bins", 10)), []
            for i in range(b):
                live = torch.isfinite(top.values[i])
                margins = (s_pos[i] - top.values[i][live]).numpy()
                out.append(cand[i, top.indices[i][live]][balanced_pick(margins, k, bins, rng)])
            return torch.stack(out)
        if selection == "gumbel":
            u = torch.rand(scores.shape, generator=generator).clamp_(1e-20, 1.0 - 1e-7)
            keys = scores * beta - torch.log(-torch.log(u))
        else:
            keys = scores
        keys = keys.masked_fill(~valid, float("-inf"))
        return cand.gather(1, keys.topk(k, dim=1).indices)
