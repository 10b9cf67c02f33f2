"""The corrector h and how it learns (docs/method.md step 1.6), with its own optimiser:

- online, each step: the drift loss between h(C[d]) and the fresh embeddings g(d) the step
  computed anyway (its positives and negatives), over a replay window of the last
  `replay_steps` steps, `updates_per_step` times; plus `ce_weight` x a cross-entropy term on the
  step's corrected logits. Held-out probe passages never enter it;
- a drift sample: `drift_sample` random non-probe passages embedded fresh (no gradient) each
  step for the drift loss only (the step's own targets are the corrector's top-k, a biased
  sample of the corpus);
- refits: every `refit_every` steps, `refit_sample` random passages embedded fresh and the
  corrector fitted on them for `refit_epochs` epochs (one step's targets are a few dozen pairs; a
  corrector fits the drift far better from a few thousand).

The corrector drives sampling only once past `warmup_steps` after its start; a refresh restarts
it from the identity (`init` only at the very start), the cache it corrected being gone. It lives
and learns on `device`, where the cache is scored (`CacheScorer.device`); its inputs are moved
there."""

from __future__ import annotations

import logging
from collections import deque

import numpy as np
import torch

from freshen.integrity import check_finite_value
from freshen.modeling.corrector import Corrector
from freshen.params.train import CorrectorParams, TrainParams
from freshen.training.losses import corrected_logits_loss, drift_loss, mean_cosine

log = logging.getLogger(__name__)


class CorrectorTrainer:
    """`online`: the corrector samples negatives (strategy 'corrected'), so the drift sample and
    refits apply; otherwise ('stale') it only learns, to measure drift."""

    def __init__(
        self,
        cor: CorrectorParams,
        dim: int,
        online: bool,
        probe_rows: list[int],
        n_docs: int,
        seed: int,
        temperature: float,
        passages,
        counters,
        device=None,
    ):
        self.params, self.online, self.passages, self.counters = cor, online, passages, counters
        self.device = torch.device(device or "cpu")
        self.start = 0
        self.corrector, self.opt = self._new(dim)
        self.replay: deque = deque(maxlen=cor.replay_steps)  # (rows, fresh) of the last steps
        self.temperature = temperature
        self.drift_sample = cor.drift_sample if online else 0
        self.refit_every = cor.refit_every if online else 0
        self.probe_set = set(probe_rows)
        self.sample_rng = np.random.default_rng([seed, 1])  # its own stream: batches stay those of every other arm
        self.sample_pool = (
            np.setdiff1d(np.arange(n_docs), np.array(probe_rows, dtype=np.int64))
            if self.drift_sample or self.refit_every
            else np.empty(0, dtype=np.int64)
        )  # corpus-sized only when used

    @classmethod
    def from_params(
        cls, p: TrainParams, dim: int, probe_rows: list[int], n_docs: int, seed: int, passages, counters, device=None
    ) -> CorrectorTrainer | None:
        """The corrector of the `train` section `p`: strategies 'corrected' and 'stale' train one
        ('stale' only to measure drift), the others none."""
        strategy = p.negatives.strategy
        if strategy not in ("corrected", "stale"):
            return None
        online = strategy == "corrected"
        return cls(p.corrector, dim, online, probe_rows, n_docs, seed, p.temperature, passages, counters, device)

    def _new(self, dim: int) -> tuple[Corrector, torch.optim.Optimizer]:
        c = self.params
        if c.init and self.start == 0:
            corrector = Corrector.load(c.init, expect_dim=dim)
        else:
            corrector = Corrector(dim, c.arch, c.hidden, c.depth, c.normalize)
        corrector = corrector.to(self.device)
        return corrector, torch.optim.Adam(corrector.parameters(), lr=c.lr)

    def restart(self, step: int, dim: int) -> None:
        """After a refresh: a new corrector from the identity, its replay window emptied (its stale
        inputs are gone with the old cache); its warm-up counts from `step`."""
        self.corrector, self.opt = self._new(dim)
        self.start = step
        self.replay.clear()

    def correcting(self, step: int) -> bool:
        """Whether the corrector drives sampling (and dev validation) at `step`."""
        return self.online and step > self.start + self.params.warmup_steps

    def sample_rows(self, n: int) -> torch.Tensor:
        """`n` distinct random non-probe rows (fewer if the pool is smaller), sorted, from the
        sample's own random stream."""
        n = min(n, len(self.sample_pool))
        return torch.from_numpy(np.sort(self.sample_rng.choice(self.sample_pool, size=n, replace=False)))

    def draw_drift_sample(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """`drift_sample` random non-probe passages and their fresh embeddings, or None; to be
        drawn with the encoder the step's targets saw, before its update."""
        if self.drift_sample == 0 or len(self.sample_pool) == 0:
            return None
        rows = self.sample_rows(self.drift_sample)
        fresh = self.passages.embed_fresh(rows)
        self.counters.train_passage_passes += len(rows)
        self.counters.drift_sample_passes += len(rows)
        return rows, fresh

    def update(
        self,
        step: int,
        rows: list[int],
        fresh: torch.Tensor,
        q_emb: torch.Tensor,
        mask: torch.Tensor,
        scorer,
        sample: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> dict:
        """Drift loss on this step's fresh targets and drift sample (and those of the replay
        window), plus ce_weight x the cross-entropy term on this step's corrected logits (`mask`:
        the retriever's); probes held out. `scorer`: the training-time cache (`CacheScorer`)."""
        device = self.device
        rows_t = torch.tensor(rows)
        stale = scorer.stale(rows_t).to(device)
        fresh, q_emb, mask = fresh.to(device), q_emb.to(device), mask.to(device)
        with torch.no_grad():
            rec = {
                "cos_stale_fresh": mean_cosine(stale, fresh),
                "cos_corrected_fresh": mean_cosine(self.corrector(stale), fresh),
            }
        keep = torch.tensor([r not in self.probe_set for r in rows])
        keep_on = keep.to(device)
        if sample is not None:
            self.replay.append(
                (torch.cat([rows_t[keep], sample[0]]), torch.cat([fresh[keep_on], sample[1].to(device)]))
            )
        elif keep.any():
            self.replay.append((rows_t[keep], fresh[keep_on]))
        if not self.replay:
            return rec
        window = scorer.stale(torch.cat([r for r, _ in self.replay])).to(device)
        target = torch.cat([f for _, f in self.replay])
        b = len(q_emb)
        ce_weight = self.params.ce_weight
        ce_queries = (
            keep_on[:b] if ce_weight > 0 else torch.zeros(b, dtype=torch.bool, device=device)
        )  # a probe positive: no label
        ce_mask = (mask | ~keep_on[None, :])[ce_queries]
        for update in range(self.params.updates_per_step):
            c_loss = drift_loss(self.corrector(window), target)
            if ce_queries.any():
                ce = corrected_logits_loss(
                    q_emb[ce_queries],
                    self.corrector(stale),
                    fresh,
                    torch.arange(b, device=device)[ce_queries],
                    ce_mask,
                    self.temperature,
                    self.params.ce_target,
                )
                c_loss = c_loss + ce_weight * ce
                if update == 0:
                    rec["corrector_ce"] = float(ce.detach())
            self.opt.zero_grad(set_to_none=True)
            check_finite_value(float(c_loss.detach()), f"train: step {step}: the corrector loss")
            c_loss.backward()
            self.opt.step()
            if update == 0:
                rec["corrector_loss"] = float(c_loss.detach())
        return rec

    def refit_due(self, step: int, steps: int) -> bool:
        return bool(self.refit_every) and step % self.refit_every == 0 and step < steps

    def refit(self, step: int, scorer) -> dict:
        """Embed `refit_sample` random non-probe passages with the current g (no gradient; counted
        as training passes, the cache is not touched) and fit the drift loss on them for
        `refit_epochs` epochs of minibatches of 256, with an optimiser of its own: a thousand
        updates on this sample would leave the online optimiser's second moments tuned to it, and
        the next online steps far too large."""
        rows = self.sample_rows(self.params.refit_sample)
        n = len(rows)
        fresh = self.passages.encode(rows, desc=f"refit@{step}").to(self.device)
        self.passages.encoder.train()
        self.counters.train_passage_passes += n
        self.counters.drift_sample_passes += n
        stale = scorer.stale(rows).to(self.device)
        with torch.no_grad():
            before = mean_cosine(self.corrector(stale), fresh)
        opt = torch.optim.Adam(self.corrector.parameters(), lr=self.params.lr)
        for _ in range(self.params.refit_epochs):
            for batch in torch.from_numpy(self.sample_rng.permutation(n)).to(self.device).split(256):
                loss = drift_loss(self.corrector(stale[batch]), fresh[batch])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        with torch.no_grad():
            after = mean_cosine(self.corrector(stale), fresh)
        log.info("corrector refit at step %d on %d passages: cos to fresh %.4f -> %.4f", step, n, before, after)
        return {"refit_cos_before": before, "refit_cos_after": after}
