"""Each step's negatives, k per query, never a passage judged relevant to the query:

- with teacher scores, balanced margin sampling over the teacher's scored candidates;
- else from the training-time index (`CacheScorer`: the stale cache, through the corrector once
  it samples), false-negative filtered when the filter is active;
- with the fresh overlay, the corrected top `candidates` re-ranked by the steps' fresh embeddings.

Strategy 'in_batch' takes none (k 0). Gumbel noise and balanced picks each have their own random
stream, so an arm that samples its negatives trains on the same batches as one that does not."""

from __future__ import annotations

import numpy as np
import torch

from freshen.cache import EMBEDDINGS, NpyRowReader
from freshen.params.train import NegativesParams
from freshen.sampling.false_negatives import FalseNegativeFilter
from freshen.sampling.file_table import FileTable
from freshen.sampling.overlay import FreshOverlay
from freshen.sampling.scorer import CacheScorer


class StepNegatives:
    def __init__(self, data, cache, neg: NegativesParams, seed: int, device=None):
        self.data, strategy = data, neg.strategy
        self.k = 0 if strategy == "in_batch" else neg.k
        self.candidates, self.bins = neg.candidates, neg.bins
        self.fn_filter = FalseNegativeFilter.from_params(neg.false_negatives)
        self.generator = torch.Generator().manual_seed(seed)  # Gumbel noise
        self.rng = np.random.default_rng([seed, 2])  # balanced margin picks
        table, source = training_table(cache, neg.memory_gb)
        self.scorer = CacheScorer(table, neg, source=source, device=scoring_device(device, neg))
        overlay_steps = neg.fresh_overlay_steps if strategy == "corrected" else 0
        self.overlay = FreshOverlay(overlay_steps, self.scorer.table) if overlay_steps else None

    def pick(
        self, step: int, qids: list[str], pos_docs: list[str], q_emb: torch.Tensor, corrector
    ) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """(rows [b, k], unusable [b, k]: filled-up negatives to mask out of the loss, the
        false-negative filter's counts) for queries `qids` training on positives `pos_docs`;
        `corrector`: the one the index is scored through (None: the stale cache)."""
        b, data = len(qids), self.data
        if data.teacher is not None:
            rows = data.teacher.negatives(qids, pos_docs, self.k, self.bins, self.rng)
            return rows, torch.zeros((b, 0), dtype=torch.bool), {}
        if self.k == 0:
            return torch.empty((b, 0), dtype=torch.long), torch.zeros((b, 0), dtype=torch.bool), {}
        exclude, positive_rows = [data.pos_rows[q] for q in qids], [data.row_of[d] for d in pos_docs]
        if self.overlay is not None and corrector is not None:  # never with the filter: the params refuse both
            cand = self.scorer.select(
                q_emb, self.candidates, exclude, positive_rows, corrector, self.generator, self.rng
            )
            rows = self.overlay.rerank(step, q_emb, cand, self.k, self.scorer, corrector)
            return rows, torch.zeros(rows.shape, dtype=torch.bool), {}
        return self.scorer.negatives(
            q_emb, self.k, exclude, positive_rows, self.fn_filter, corrector, self.generator, self.rng
        )

    def mask_in_batch(self, q_emb: torch.Tensor, p_emb: torch.Tensor, mask: torch.Tensor) -> dict[str, int]:
        """Mask (in place) the step's passages the false-negative margin rule flags for a query
        (`false_negatives.in_batch`); its count `fn_in_batch`, or {} when the rule is off."""
        f = self.fn_filter
        if not (f.in_batch and f.has_margin):
            return {}
        return {"fn_in_batch": f.mask_in_batch(q_emb.detach(), p_emb.detach(), mask)}

    def embedded(self, step: int, rows: list[int], fresh: torch.Tensor) -> None:
        """The step embedded `rows` fresh (`fresh`): the overlay keeps them."""
        if self.overlay is not None:
            self.overlay.record(step, rows, fresh)


def scoring_device(device, neg: NegativesParams) -> torch.device:
    """Where the cache is scored and the corrector trains: the training device (`device`, the
    encoder's), unless `device_memory_gb` is 0 (the CPU)."""
    device = torch.device(device or "cpu")
    return device if neg.device_memory_gb > 0 else torch.device("cpu")


def training_table(cache, memory_gb: float) -> tuple[torch.Tensor | FileTable, NpyRowReader | None]:
    """The training-time index's float16 rows (never the artifact itself: a refresh replaces
    them), and where its ANN index reads them from (None: the table). Within `memory_gb` GiB a
    private copy in memory; past it rows read from the cache file as they are scored
    (`FileTable`), and the index built from the same plain reads. Either way read with plain
    reads, not through the cache's memory map, whose pages would stay resident beside the copy."""
    reader = NpyRowReader(cache.path / EMBEDDINGS)
    n, dim = reader.shape
    if n * dim * 2 <= memory_gb * 2**30:
        return torch.from_numpy(reader[:]), None
    return FileTable(reader), reader
