"""Periodic re-embedding of the corpus (the expensive baseline, `train.negatives.refresh_every`):
every N steps, except after the last, the training-time index is replaced by the corpus embedded
with the current encoder; a corrector, if any, restarts from the identity."""

from __future__ import annotations

import numpy as np
import torch

from freshen.params import TrainParams


class Refresher:
    def __init__(self, every: int, steps: int, scorer, passages, counters, corrector_trainer=None):
        self.every, self.steps = every, steps
        self.scorer, self.passages, self.counters, self.corrector_trainer = (
            scorer,
            passages,
            counters,
            corrector_trainer,
        )

    @classmethod
    def from_params(cls, p: TrainParams, scorer, passages, counters, corrector_trainer=None) -> Refresher:
        return cls(p.negatives.refresh_every, p.steps, scorer, passages, counters, corrector_trainer)

    def due(self, step: int) -> bool:
        return bool(self.every) and step % self.every == 0 and step < self.steps

    def refresh(self, step: int) -> None:
        table = self.passages.encode_all(self.scorer.table.shape[1], desc=f"refresh@{step}")
        self.scorer.set_table(torch.from_numpy(table.astype(np.float16)))
        self.counters.reembed_passes += len(table)
        self.counters.refreshes += 1
        if self.corrector_trainer is not None:
            self.corrector_trainer.restart(step, table.shape[1])
        self.passages.encoder.train()
