"""A training hook that records what a run did, step by step, for tests to assert on."""

from __future__ import annotations

from freshen.training.hooks import Hooks


class Recorder(Hooks):
    def __init__(self):
        self.batches: list[list[str]] = []  # each step's queries
        self.picked: list[tuple[list[str], object]] = []  # each step's (queries, negative rows [b, k])
        self.correctors: list[object] = []  # each step's corrector the index was scored through (None: stale)
        self.samples: list[object] = []  # each step's drift sample (rows, fresh) or None
        self.refits: list[tuple[int, object, dict]] = []  # (step, what before_refit saw, the refit's record)

    def batch(self, step, qids):
        self.batches.append(list(qids))

    def negatives(self, step, qids, rows, corrector):
        self.picked.append((list(qids), rows))
        self.correctors.append(corrector)

    def drift_sample(self, step, sample):
        self.samples.append(sample)
