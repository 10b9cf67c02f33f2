"""The training-time index, the stale (or last refreshed) cache seen through the corrector, and
the negatives drawn from it: candidates (exact or ANN), then a `Selection` among them.

- small caches: every row scored through the corrector, chunk by chunk (exact);
- linear corrector: exact search on the raw cache with the transformed query W^T f(q);
- past `ann_threshold` rows: candidates from a faiss index over the raw cache
  (`ann_index`, built by `retrieval.build_index`; searched with the transformed query for a
  linear corrector, the plain query otherwise), rescored exactly through the corrector (all
  candidates of all queries at once, each distinct row once), then selected from (top-k,
  Gumbel-top-k or balanced).

Where: on `device`, the training device (a GPU) unless `device_memory_gb` is 0. The table is
copied there when it is held in memory and fits `device_memory_gb`, else its chunks and rows are
moved there as they are scored; the corrector must live there too. What leaves the scorer
(rows, scores for the filter and the selection) is on the CPU.

With false-negative control (`sampling/false_negatives.py`) every path yields the top
`candidates` rows, rescored exactly through the corrector with the positive, and the filter
picks among those that pass its rules. The two forms draw their randomness over different sets:
without the filter, Gumbel noise over every scored row (exact: chunk by chunk) or every ANN
candidate; with it, over each query's kept candidates. Selection itself (`selection.py`) is the
same code in every path."""

from __future__ import annotations

import time

import numpy as np
import torch

from freshen.params.train import NegativesParams
from freshen.retrieval import build_index
from freshen.sampling.false_negatives import FalseNegativeFilter
from freshen.sampling.negatives import chunked_topk
from freshen.sampling.selection import Selection, balanced


class CacheScorer:
    """The cache `table` [n, dim] (float16) and, past `ann_threshold` rows, an ANN index over it
    (built from `source`, the same rows read from the cache file, when given); scored on `device`."""

    def __init__(self, table: torch.Tensor, neg: NegativesParams, source=None, device=None):
        self.selection = Selection.from_params(neg)
        self.device = torch.device(device or "cpu")
        self.device_bytes = neg.device_memory_gb * 2**30
        self.chunk = neg.chunk_size
        self.ann_threshold, self.ann_candidates = neg.ann_threshold, neg.ann_candidates
        self.ann_index, self.ann_nprobe = neg.ann_index, neg.ann_nprobe
        self.ann_ef_search = neg.ann_ef_search if neg.ann_ef_search is not None else max(self.ann_candidates, 64)
        self.index, self.index_build_s = None, 0.0
        self.set_table(table, source)

    def set_table(self, table: torch.Tensor, source=None) -> None:
        """Use a new cache (after a refresh); rebuild the ANN index when one is used, from
        `source` (rows read from the cache file) when given, else from `table`."""
        self.source = source  # the rows in the cache file (table: read from it)
        self.table = self._placed(table)
        self.index = None
        if self.ann_threshold and len(table) > self.ann_threshold:
            start = time.perf_counter()
            self.index = build_index(
                source if source is not None else table.detach().cpu().numpy(),
                self.ann_index,
                nprobe=self.ann_nprobe,
                ef_search=self.ann_ef_search,
                param="train.negatives.ann_index",
            )
            self.index_build_s = time.perf_counter() - start

    def _placed(self, table):
        """`table` on the scoring device when it is a tensor in memory that fits its budget
        (on the CPU: as it is)."""
        if self.device.type == "cpu" or not torch.is_tensor(table):
            return table
        return table.to(self.device) if table.numel() * table.element_size() <= self.device_bytes else table

    def stale(self, rows) -> torch.Tensor:
        """The cached rows `rows` as float32 on the scoring device."""
        index = torch.as_tensor(rows, dtype=torch.long).to(self.table.device)
        return self.table[index].float().to(self.device)

    def query_for(self, q: torch.Tensor, corrector):
        """The query to search the raw table with, and the corrector its rows still need (None
        when the corrector folds into the query, or there is none)."""
        if corrector is not None and getattr(corrector, "exact_on_stale", False):
            return corrector.transform_query(q)[0], None  # exact on the raw cache
        return q.float(), corrector

    def rows_through(self, rows, corrector) -> torch.Tensor:
        """The cached rows `rows` through the corrector (no gradient): h(C[rows]) as float32 on the
        scoring device."""
        emb = self.stale(rows)
        with torch.no_grad():
            return corrector(emb) if corrector is not None else emb

    def negatives(
        self,
        q: torch.Tensor,
        k: int,
        exclude: list[list[int]],
        positive_rows: list[int],
        fn_filter: FalseNegativeFilter,
        corrector=None,
        generator=None,
        rng=None,
    ) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """k negatives per query: (rows [b, k], unusable [b, k], false-negative counts); through
        the false-negative filter when it is active, else `select`'s (all usable, no counts)."""
        q = q.to(self.device)
        if fn_filter.active:
            return self.select_filtered(q, k, exclude, positive_rows, fn_filter, corrector, generator, rng)
        rows = self.select(q, k, exclude, positive_rows, corrector, generator, rng)
        return rows, torch.zeros(rows.shape, dtype=torch.bool), {}

    @torch.no_grad()
    def select_filtered(
        self,
        q: torch.Tensor,
        k: int,
        exclude: list[list[int]],
        positive_rows: list[int],
        fn_filter: FalseNegativeFilter,
        corrector=None,
        generator=None,
        rng=None,
    ) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """Negatives through the false-negative filter: (rows [b, k], unusable [b, k], counts)."""
        q = q.to(self.device)
        m = min(max(self.selection.candidates, k + fn_filter.range_min), len(self.table))
        rows = self._candidates(q, m, exclude, corrector)
        live = rows.clamp(min=0)
        emb = self.rows_through(live.flatten(), corrector).view(*rows.shape, -1)
        scores = (emb * q.float()[:, None, :]).sum(-1).cpu().masked_fill(rows < 0, float("-inf"))
        positive = (self.rows_through(positive_rows, corrector) * q.float()).sum(-1).cpu()
        return fn_filter.pick(rows, scores, positive, k, self.selection, generator, rng)

    def _search(self, q: torch.Tensor, corrector, n: int) -> torch.Tensor:
        """The ANN index's `n` nearest rows [b, n] per query (-1 where it found fewer), searched
        with the query that folds a linear corrector in."""
        q_search, _ = self.query_for(q.float(), corrector)
        _, cand = self.index.search(np.ascontiguousarray(q_search.cpu().numpy(), dtype=np.float32), n)
        return torch.from_numpy(cand).long()

    def _candidates(self, q: torch.Tensor, m: int, exclude: list[list[int]], corrector) -> torch.Tensor:
        """The top `m` rows [b, m] of the training-time index per query, excluded rows never
        among them (-1 where fewer qualify); from the ANN index past `ann_threshold`."""
        if self.index is not None:
            cand = self._search(q, corrector, max(m, self.ann_candidates))
            scores = (
                (
                    self.rows_through(cand.clamp(min=0).flatten(), corrector).view(*cand.shape, -1)
                    * q.float()[:, None, :]
                )
                .sum(-1)
                .cpu()
            )
        else:
            q_eff, cor = self.query_for(q, corrector)
            cand, scores = chunked_topk(
                q_eff,
                self.table,
                min(m + max(map(len, exclude), default=0), len(self.table)),
                [[]] * len(q),
                cor,
                self.chunk,
            )
        banned = torch.stack(
            [torch.isin(cand[i], torch.tensor(rows, dtype=torch.long)) for i, rows in enumerate(exclude)]
        )
        scores = scores.masked_fill(banned | (cand < 0), float("-inf"))
        top = scores.topk(min(m, scores.shape[1]), dim=1)
        return cand.gather(1, top.indices).masked_fill(~torch.isfinite(top.values), -1)

    @torch.no_grad()
    def select(
        self,
        q: torch.Tensor,
        k: int,
        exclude: list[list[int]],
        positive_rows: list[int] | None,
        corrector=None,
        generator=None,
        rng=None,
    ) -> torch.Tensor:
        """Rows of k negatives per query [b, k] by the selection, never an excluded row (no
        false-negative filter): exactly, or from the ANN index past `ann_threshold`."""
        q = q.to(self.device)
        if self.index is None:
            return self._select_exact(q, k, exclude, positive_rows, corrector, generator, rng)
        return self._select_ann(q, k, exclude, positive_rows, corrector, generator, rng)

    def _select_exact(self, q, k, exclude, positive_rows, corrector, generator, rng) -> torch.Tensor:
        """Top-k (or Gumbel-top-k) keys over every row, streamed; balanced: over the top `candidates`."""
        sel = self.selection
        q_eff, cor = self.query_for(q, corrector)
        if sel.kind == "balanced":
            rows, scores = chunked_topk(q_eff, self.table, max(sel.candidates, k), exclude, cor, self.chunk)
            positive = (q_eff * self.rows_through(positive_rows, cor)).sum(-1).cpu()
            return balanced(rows, scores, positive, k, sel.bins, rng)
        gumbel = sel.kind == "gumbel"
        return chunked_topk(
            q_eff,
            self.table,
            k,
            exclude,
            cor,
            self.chunk,
            noise=generator if gumbel else None,
            beta=sel.beta if gumbel else 1.0,
        )[0]

    def _select_ann(self, q, k, exclude, positive_rows, corrector, generator, rng) -> torch.Tensor:
        """The ANN index's `ann_candidates` per query, rescored exactly through the corrector (each
        distinct row once), selected from; queries left with fewer than k are selected exactly."""
        q = q.float()
        cand = self._search(q, corrector, self.ann_candidates)  # [b, C]; -1 where the index found fewer
        b, n = cand.shape[0], len(self.table)
        valid = cand >= 0
        banned = [i * n + r for i, rows in enumerate(exclude) for r in rows]
        if banned:  # a query's positives / excluded rows never qualify
            valid &= ~torch.isin(torch.arange(b)[:, None] * n + cand, torch.tensor(banned, dtype=torch.long))
        short = (valid.sum(1) < k).nonzero().flatten().tolist()
        if short:  # too few candidates left for some queries: those are selected exactly
            ok = [i for i in range(b) if i not in short]
            out = torch.empty((b, k), dtype=torch.long)
            out[short] = self._select_exact(
                q[short], k, [exclude[i] for i in short], _subset(positive_rows, short), corrector, generator, rng
            )
            if ok:
                out[ok] = self._select_ann(
                    q[ok], k, [exclude[i] for i in ok], _subset(positive_rows, ok), corrector, generator, rng
                )
            return out
        rows, inverse = torch.unique(cand[valid], return_inverse=True)
        scores = torch.zeros(cand.shape)
        scores[valid] = (self.rows_through(rows, corrector) @ q.T).cpu()[inverse, valid.nonzero()[:, 0]]
        sel = self.selection
        if sel.kind == "balanced":
            top = scores.masked_fill(~valid, float("-inf")).topk(min(max(sel.candidates, k), cand.shape[1]), dim=1)
            positive = (self.rows_through(positive_rows, corrector) * q).sum(-1).cpu()
            return balanced(cand.gather(1, top.indices), top.values, positive, k, sel.bins, rng)
        keys = sel.keys(scores, generator).masked_fill(~valid, float("-inf"))
        return cand.gather(1, keys.topk(k, dim=1).indices)


def _subset(rows: list[int] | None, which: list[int]) -> list[int] | None:
    return [rows[i] for i in which] if rows is not None else None
