"""Observers of a training run: `Trainer(hooks=...)` calls these at fixed points of each step,
in this order. Each is a no-op here; subclass and override what you watch (tests, benchmarks,
diagnostics). A hook observes: it must not change what it is handed, or the run changes."""

from __future__ import annotations

import torch


class Hooks:
    def batch(self, step: int, qids: list[str]) -> None:
        """The step's batch of training queries, as drawn."""

    def negatives(self, step: int, qids: list[str], rows: torch.Tensor, corrector) -> None:
        """The step's negatives [b, k] (cache rows), and the corrector the training-time index is
        scored through at this step (None: the stale cache; teacher negatives do not use it)."""

    def drift_sample(self, step: int, sample: tuple[torch.Tensor, torch.Tensor] | None) -> None:
        """The corrector's drift sample of the step: (rows, fresh embeddings), or None."""

    def before_refit(self, step: int, corrector_trainer) -> None:
        """A refit is about to run after `step` (see `CorrectorTrainer.refit`)."""

    def after_refit(self, step: int, corrector_trainer, record: dict) -> None:
        """The refit after `step` ran; `record` holds its figures."""

    def log(self, record: dict, step: int) -> None:
        """Every `log_every` steps, at evaluations and refits, and at the last step (step 0: the
        pre-trained encoder's validation)."""

    def evaluation(self, record: dict, counters) -> None:
        """After each evaluation: its record and the counters so far."""


class HookList(Hooks):
    """Several hooks called as one, each event in the order the hooks were given."""

    def __init__(self, hooks: list[Hooks]):
        self.hooks = hooks

    def batch(self, step: int, qids: list[str]) -> None:
        for h in self.hooks:
            h.batch(step, qids)

    def negatives(self, step: int, qids: list[str], rows: torch.Tensor, corrector) -> None:
        for h in self.hooks:
            h.negatives(step, qids, rows, corrector)

    def drift_sample(self, step: int, sample: tuple[torch.Tensor, torch.Tensor] | None) -> None:
        for h in self.hooks:
            h.drift_sample(step, sample)

    def before_refit(self, step: int, corrector_trainer) -> None:
        for h in self.hooks:
            h.before_refit(step, corrector_trainer)

    def after_refit(self, step: int, corrector_trainer, record: dict) -> None:
        for h in self.hooks:
            h.after_refit(step, corrector_trainer, record)

    def log(self, record: dict, step: int) -> None:
        for h in self.hooks:
            h.log(record, step)

    def evaluation(self, record: dict, counters) -> None:
        for h in self.hooks:
            h.evaluation(record, counters)


class Callbacks(Hooks):
    """`on_log(record, step)` and `on_eval(record, counters)` callables as hooks (`train()`'s API)."""

    def __init__(self, on_log=None, on_eval=None):
        self.on_log, self.on_eval = on_log, on_eval

    def log(self, record: dict, step: int) -> None:
        if self.on_log:
            self.on_log(record, step)

    def evaluation(self, record: dict, counters) -> None:
        if self.on_eval:
            self.on_eval(record, counters)
