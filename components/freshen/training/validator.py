"""Validation during training, every `eval_every` steps (and at step 0, the pre-trained encoder):

- dev nDCG@10 on the training-time index (the corrected cache once the corrector samples): no
  re-embedding needed;
- the drift on held-out probe passages (`probe_passages`), embedded fresh: cosine of the cached
  and of the corrected embeddings to the fresh ones;
- the overlap (`overlap_passages`, `overlap_k`): how far the cached and corrected caches' top-k
  lists of the dev queries over a passage sample are from the lists of the sample embedded fresh.

`BestCheckpoint` keeps the best dev score's weights (`keep_best`) and counts evaluations without
improvement (`early_stopping_patience`). Probe and overlap passes are measurement, counted apart."""

from __future__ import annotations

import copy

import numpy as np
import torch

from freshen.params import TrainParams
from freshen.retrieval import evaluate_run, overlap_at
from freshen.sampling.negatives import chunked_topk
from freshen.training.losses import mean_cosine


class Validator:
    """`data`: the `TrainingData` (dev judgements, queries, cache rows); probe passages drawn
    from `rng`, the overlap sample from a stream of its own."""

    def __init__(self, data, p: TrainParams, seed: int, rng: np.random.Generator, scorer, passages, counters):
        self.dev, self.queries, doc_ids = data.dev, data.queries, data.doc_ids
        self.doc_ids, self.scorer, self.passages, self.counters = doc_ids, scorer, passages, counters
        self.every = p.eval_every
        n_probe = min(p.probe_passages, len(doc_ids))
        self.probe_rows = sorted(rng.choice(len(doc_ids), size=n_probe, replace=False).tolist())
        # a random passage sample, its own stream (batches stay those of every other setting)
        n_overlap = min(p.overlap_passages, len(doc_ids))
        self.overlap_rows = torch.from_numpy(
            np.sort(np.random.default_rng([seed, 3]).choice(len(doc_ids), size=n_overlap, replace=False))
        )
        self.overlap_k = min(p.overlap_k, n_overlap)

    def due(self, step: int, steps: int) -> bool:
        """Whether a run of `steps` steps validates after `step`: every `eval_every`, and the last."""
        return bool(self.every) and (step % self.every == 0 or step == steps)

    @torch.no_grad()
    def validate(self, step: int, corrector=None, sampling_corrector=None) -> dict:
        """The figures at `step`: dev through `sampling_corrector` (the one negatives are scored
        through now, or None), probes and overlap through `corrector` (any, or None)."""
        rec: dict = {"step": step}
        if self.dev:
            qids = sorted(self.dev)
            q = self.passages.measure_queries([self.queries[x] for x in qids])
            q_eff, cor = self.scorer.query_for(q.to(self.scorer.device), sampling_corrector)
            rows, scores = chunked_topk(q_eff, self.scorer.table, 100, [[]] * len(qids), cor, self.scorer.chunk)
            run = {
                qid: {self.doc_ids[int(r)]: float(s) for r, s in zip(rows[i], scores[i])} for i, qid in enumerate(qids)
            }
            rec["dev_ndcg_at_10"] = evaluate_run(self.dev, run)["ndcg_at_10"]
            if self.overlap_k > 0:
                rec.update(self._overlap(q, corrector))
        if self.probe_rows:
            fresh = self._embed_fresh(self.probe_rows).to(self.scorer.device)
            stale = self.scorer.stale(self.probe_rows)
            rec["probe_cos_stale_fresh"] = mean_cosine(stale, fresh)
            if corrector is not None:
                rec["probe_cos_corrected_fresh"] = mean_cosine(corrector(stale), fresh)
        self.passages.encoder.train()
        return rec

    def _embed_fresh(self, rows) -> torch.Tensor:
        self.counters.probe_passes += len(rows)
        return self.passages.measure(rows)

    def _overlap(self, q: torch.Tensor, corrector) -> dict:
        """Top-`overlap_k` overlap, over the passage sample, of the training-time cache's and the
        corrected cache's lists with the lists of the sample embedded fresh, for queries `q`."""
        rows, device = self.overlap_rows, self.scorer.device
        fresh = self._embed_fresh(rows).to(device)
        cached = self.scorer.stale(rows)
        q = q.to(device)

        def top(table: torch.Tensor) -> torch.Tensor:
            return (q.float() @ table.T).topk(self.overlap_k, dim=1).indices.cpu()

        fresh_top = top(fresh)
        rec = {"overlap_stale_fresh": overlap_at(top(cached), fresh_top)}
        if corrector is not None:
            rec["overlap_corrected_fresh"] = overlap_at(top(corrector(cached)), fresh_top)
        return rec


class BestCheckpoint:
    """The best dev nDCG@10 so far, its step and weights, and evaluations since it improved."""

    def __init__(self, patience: int):
        self.patience = patience
        self.score, self.step, self.state, self.bad = float("-inf"), None, None, 0

    def observe(self, step: int, validation: dict, encoder, corrector) -> None:
        score = validation.get("dev_ndcg_at_10")
        if score is None:
            return
        if score > self.score:
            self.score, self.step, self.bad = score, step, 0
            self.state = (
                copy.deepcopy(encoder.state_dict()),
                copy.deepcopy(corrector.state_dict()) if corrector else None,
            )
        else:
            self.bad += 1

    @property
    def stop(self) -> bool:
        """Early stopping: `patience` evaluations in a row without improvement."""
        return bool(self.patience) and self.bad >= self.patience

    def restore(self, encoder, corrector) -> None:
        """Load the best weights into `encoder` and `corrector` (the current ones: after a refresh,
        a new corrector), when a validation scored dev."""
        if self.state is None:
            return
        encoder.load_state_dict(self.state[0])
        if corrector is not None and self.state[1] is not None:
            corrector.load_state_dict(self.state[1])
