"""Retriever + corrector training (docs/method.md section 1), on TAS batches (section 2).

One step: embed the batch's queries; draw k negatives per query (never a positive) from the
training-time index, the stale cache through the corrector (`StepNegatives`); embed positives
and negatives fresh; the retriever learns from cross-entropy over them and the in-batch
passages, or Margin-MSE against teacher scores (`RetrieverUpdate`); the corrector learns from the
drift between its output and those fresh embeddings (`CorrectorTrainer`). After a step: a
refresh (`Refresher`), a corrector refit, a validation (`Validator`, `BestCheckpoint`), each when
due. `Hooks` observe the run."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from contextlib import contextmanager

import numpy as np
import torch

from freshen.integrity import diverged
from freshen.modeling.corrector import Corrector
from freshen.params import EncodeParams, TrainParams
from freshen.progress import progress
from freshen.sampling.tas import make_batches
from freshen.training.corrector_trainer import CorrectorTrainer
from freshen.training.data import Counters, TrainingData, TrainResult
from freshen.training.distributed import World, rank_seed, stream_seed
from freshen.training.hooks import Callbacks, HookList, Hooks
from freshen.training.launch import check_nproc
from freshen.training.passages import Passages
from freshen.training.refresher import Refresher
from freshen.training.retriever import RetrieverUpdate
from freshen.training.step_negatives import StepNegatives
from freshen.training.validator import BestCheckpoint, Validator

__all__ = ["Counters", "TrainResult", "Trainer", "train"]
log = logging.getLogger(__name__)


class Trainer:
    """One training run: its parts, built from the `train` section `p` and `encode_p` (how it
    encodes in bulk; None: the schema's `encode` defaults); `run()` does the steps.
    `on_log(record, step)` every `log_every` steps and at evaluations; `on_eval(record, counters)`
    after each evaluation; `hooks` observe each step."""

    def __init__(
        self,
        encoder,
        dataset,
        cache,
        cluster_of,
        p: TrainParams,
        seed: int,
        *,
        encode_p: EncodeParams | None = None,
        teacher=None,
        on_log=None,
        on_eval=None,
        hooks: list[Hooks] | tuple = (),
        world: World = World(),
    ):
        self.encoder, self.p, self.world, self.seed = encoder, p, world, seed
        check_nproc(p, world.size, teacher is not None)
        self.hooks = HookList([Callbacks(on_log, on_eval), *hooks])
        self.rng = np.random.default_rng(seed)  # batches, each query's positive, the probe passages
        torch.manual_seed(seed)  # the corrector's initial weights, dropout outside the steps' micro-batches
        self.data = TrainingData(dataset, cache, cluster_of, p, teacher)
        self.batches = make_batches(p, cluster_of, self.data.train_qids, self.rng)
        self.counters = Counters()
        self.passages = Passages(encoder, self.data.doc_texts, p, encode_p or EncodeParams(), world)
        self.negatives = StepNegatives(self.data, cache, p.negatives, seed, self.passages.device)
        self.scorer = self.negatives.scorer
        self.validator = Validator(self.data, p, seed, self.rng, self.scorer, self.passages, self.counters)
        self.corrector_trainer = CorrectorTrainer.from_params(
            p,
            cache.dim,
            self.validator.probe_rows,
            len(self.data.doc_ids),
            seed,
            self.passages,
            self.counters,
            self.scorer.device,
        )
        self.retriever = RetrieverUpdate(encoder, p, self.data.teacher, world)
        self.refresher = Refresher.from_params(p, self.scorer, self.passages, self.counters, self.corrector_trainer)
        self.curve: list[dict] = []
        self.validations: list[dict] = []
        self.timings: dict[str, float] = defaultdict(float)  # seconds spent per part of the steps so far
        if world.distributed:  # every part is built alike on every rank; dropout outside micro-batches differs by rank
            torch.manual_seed(rank_seed(seed, world.rank))

    @property
    def corrector(self) -> Corrector | None:
        return self.corrector_trainer.corrector if self.corrector_trainer is not None else None

    def _sampling_corrector(self, step: int) -> Corrector | None:
        """The corrector the index is scored through at `step` (None: the stale cache)."""
        ct = self.corrector_trainer
        return ct.corrector if ct is not None and ct.correcting(step) else None

    def step(self, step: int) -> dict:
        """One training step: negatives, fresh embeddings, the retriever's and the corrector's
        updates. With more than one rank (`training/distributed.py`) each embeds its share of
        the global batch; negatives, masks and the corrector's update are the global batch's."""
        data, qids, ct, world = self.data, next(self.batches), self.corrector_trainer, self.world
        self.hooks.batch(step, qids)
        pos_docs = [data.positives[q][int(self.rng.integers(len(data.positives[q])))] for q in qids]
        parts = self._micro_batches(len(qids))
        mine = slice(parts[0][1].start, parts[-1][1].stop)
        with self._timed("encode"):
            q_own = torch.cat(
                [
                    self._in_stream(step, i, 0, self.passages.embed_queries, [data.queries[q] for q in qids[part]])
                    for i, part in parts
                ]
            )
            q_emb = world.gather(q_own.detach(), len(qids)) if world.distributed else q_own
        self.counters.query_passes += len(qids)
        if not torch.isfinite(q_emb).all():  # before they pick negatives from the cache
            raise diverged(f"train: step {step}: the encoder's query embeddings hold NaN or Inf")
        corrector = self._sampling_corrector(step)
        with self._timed("negatives"):
            neg_rows, unusable, fn_counts = self.negatives.pick(step, qids, pos_docs, q_emb.detach(), corrector)
        self.hooks.negatives(step, qids, neg_rows, corrector)

        rows = [data.row_of[d] for d in pos_docs] + neg_rows.flatten().tolist()
        with self._timed("encode"):
            p_emb = self._embed_passages(step, rows, len(qids), parts)
        self.counters.train_passage_passes += len(rows)
        self.negatives.embedded(step, rows, p_emb)
        with self._timed("corrector"):
            sample = ct.draw_drift_sample() if ct is not None else None  # by the encoder the targets saw
        self.hooks.drift_sample(step, sample)
        mask = RetrieverUpdate.mask([data.pos_rows[q] for q in qids], rows, unusable)
        fn_counts.update(self.negatives.mask_in_batch(q_emb, p_emb, mask))
        targets = torch.arange(len(qids))[mine]
        with self._timed("backward"):  # the loss, its backward pass through the encoder, the optimiser step
            update = self.retriever.step(step, qids, pos_docs, neg_rows, q_own, p_emb, mask[mine], targets)
        record = {"step": step, "loss": update.pop("loss"), **fn_counts, **update}
        self.counters.add(fn_counts)
        if ct is not None:
            with self._timed("corrector"):
                record.update(ct.update(step, rows, p_emb.detach(), q_emb.detach(), mask, self.scorer, sample))
                world.broadcast(ct.corrector)
        return record

    @contextmanager
    def _timed(self, part: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[part] += time.perf_counter() - start

    def _micro_batches(self, b: int) -> list[tuple[int, slice]]:
        """This rank's micro-batches of the global batch of b queries: (index, queries), in order.
        `train.micro_batch` queries each (null: the rank's whole share, one pass); every rank
        takes an equal run of consecutive ones (`check_nproc`), so it holds `world.share(b)`."""
        m = self.p.micro_batch or -(-b // self.world.size)
        starts = range(0, b, m)
        return [(i, slice(starts[i], min(starts[i] + m, b))) for i in range(*self.world.bounds(len(starts)))]

    def _in_stream(self, step: int, part: int, role: int, embed, items):
        """`embed(items)` with dropout from the stream of (seed, step, micro-batch, role): the same
        masks whichever rank embeds that micro-batch, and however many ranks there are."""
        with self.passages.dropout_stream(stream_seed(self.seed, step, part, role)):
            return embed(items)

    def _embed_passages(self, step: int, rows: list[int], b: int, parts: list[tuple[int, slice]]) -> torch.Tensor:
        """The step's passages embedded with gradient [len(rows), dim]: b positives, then k
        negatives per query, micro-batch by micro-batch (a micro-batch's queries' positives and
        negatives in one pass). With more than one rank, each embeds its micro-batches and the
        global batch is gathered (gradients flow back to their rank)."""
        k = (len(rows) - b) // b
        embedded = [
            (
                s.stop - s.start,
                self._in_stream(step, i, 1, self.passages.embed, rows[s] + rows[b + s.start * k : b + s.stop * k]),
            )
            for i, s in parts
        ]
        # positives of every micro-batch, then their negatives: this rank's rows in global order
        own = torch.cat([e[:n] for n, e in embedded] + [e[n:] for n, e in embedded])
        if not self.world.distributed:
            return own
        gathered = self.world.gather(own, len(rows), grad=True)
        # rank by rank, its positives then its negatives (equal shares): back to all positives, then all negatives
        per_rank = gathered.view(self.world.size, len(own), -1)
        share = b // self.world.size
        return torch.cat([per_rank[:, :share].flatten(0, 1), per_rank[:, share:].flatten(0, 1)])

    def refresh(self, step: int) -> None:
        self.refresher.refresh(step)
        if self.corrector is not None:  # restarted: the same on every rank
            self.world.broadcast(self.corrector)

    def validate(self, step: int) -> dict:
        return self.validator.validate(step, self.corrector, self._sampling_corrector(step))

    def run(self, stop_after: int | None = None) -> TrainResult:
        """All the steps, or the first `stop_after` of the schedule (a pilot), validated at the last.
        A pilot skips the step-0 validation: the pre-trained encoder is the same for every candidate."""
        steps, ct = self.p.steps, self.corrector_trainer
        best = BestCheckpoint(self.p.early_stopping_patience)
        started = time.perf_counter()
        if self.p.eval_every and stop_after is None:  # step 0: the pre-trained encoder; keep_best may keep it
            self._emit(self.counters.stamp(dict(self._validation(0, best)), started), 0, evaluated=True)
        self.encoder.train()
        last = min(steps, stop_after or steps)
        for step in progress(range(1, last + 1), desc="train", unit="step", mininterval=20, disable=False):
            record = self.step(step)
            if self.refresher.due(step):
                self.refresh(step)
            if ct is not None and ct.refit_due(step, steps):
                self.hooks.before_refit(step, ct)
                record.update(ct.refit(step, self.scorer))
                self.world.broadcast(ct.corrector)
                self.hooks.after_refit(step, ct, record)
            evaluated = self.validator.due(step, steps) or step == stop_after
            if evaluated:
                record.update({k: v for k, v in self._validation(step, best).items() if k != "step"})
            self.curve.append(self.counters.stamp(record, started))
            logged = step % self.p.log_every == 0 or step == steps or "refit_cos_after" in record
            self._emit(record, step, evaluated, logged)
            if best.stop:
                log.info("early stopping at step %d: dev nDCG@10 did not improve for %d evaluations", step, best.bad)
                break
        if self.p.keep_best:
            best.restore(self.encoder, self.corrector)
        if self.corrector is not None:  # what follows training (the serving fit, saving) runs on the CPU
            self.corrector.cpu()
        self.counters.wall_seconds = time.perf_counter() - started
        return TrainResult(self.encoder, self.corrector, self.counters, self.curve, self.validations, best.step)

    def _validation(self, step: int, best: BestCheckpoint) -> dict:
        val = self.validate(step)
        self.validations.append(val)
        best.observe(step, val, self.encoder, self.corrector)
        return val

    def _emit(self, record: dict, step: int, evaluated: bool, logged: bool = False) -> None:
        if logged or evaluated:
            self.hooks.log(record, step)
        if evaluated:
            self.hooks.evaluation(record, self.counters)


def train(encoder, dataset, cache, cluster_of: dict[str, int], p: TrainParams, seed: int, **options) -> TrainResult:
    """Train `encoder` in place; return it with its corrector, the counters and the curves.
    `options`: `Trainer`'s keywords (encode_p, teacher, on_log, on_eval, hooks)."""
    return Trainer(encoder, dataset, cache, cluster_of, p, seed, **options).run()
