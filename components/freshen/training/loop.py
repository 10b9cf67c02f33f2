"""Retriever + corrector training (METHOD.md section 1), on TAS batches (section 2).

One step: embed the batch's queries; score the training-time index (the stale cache through
the corrector) and select k negatives per query, never a positive; embed positives and
negatives fresh; the retriever learns from cross-entropy over them and the in-batch passages
(or Margin-MSE against teacher scores); the corrector learns from the drift between its output
and those fresh embeddings, with its own optimiser. Optionally the corpus is re-embedded every
N steps (the expensive baseline). Every `eval_every` steps: dev nDCG@10 on the training-time
index, the drift on held-out probe passages, how far the training-time and corrected caches'
top-k lists are from a fresh cache's on a passage sample, best checkpoint kept, early stopping."""

from __future__ import annotations

import copy
import logging
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import get_linear_schedule_with_warmup

from freshen.encoding import autocast_dtype, encode, encode_into
from freshen.errors import FreshenError
from freshen.integrity import check_finite_value, diverged
from freshen.modeling.corrector import Corrector
from freshen.progress import progress
from freshen.retrieval import evaluate_run, overlap_at
from freshen.sampling.false_negatives import FalseNegativeFilter
from freshen.sampling.negatives import SELECTIONS, balanced_pick, chunked_topk
from freshen.sampling.scorer import CacheScorer
from freshen.sampling.tas import RandomBatches, TASBatches
from freshen.training import pilot
from freshen.training.losses import contrastive_loss, corrected_logits_loss, drift_loss, margin_mse, mean_cosine

log = logging.getLogger(__name__)
STRATEGIES = ("in_batch", "stale", "corrected", "refresh")
CE_TARGETS = ("fresh", "positive")


@dataclass
class Counters:
    """Target-encoder forward passes (the cost unit of METHOD.md) and wall time. Validation and
    probe passes are measurement, not training cost, and are counted apart."""

    train_passage_passes: int = 0  # positives + negatives (+ the corrector's drift sample)
    drift_sample_passes: int = 0   # of which: random passages embedded only to train the corrector
    reembed_passes: int = 0
    refreshes: int = 0
    query_passes: int = 0
    probe_passes: int = 0
    # false-negative control: cached candidates removed by the rank rule and by the margin rule,
    # negatives filled up from removed candidates (masked), in-batch passages masked by the rule
    fn_rank: int = 0
    fn_margin: int = 0
    fn_short: int = 0
    fn_in_batch: int = 0
    wall_seconds: float = 0.0

    def as_dict(self) -> dict:
        return {**self.__dict__, "target_passes_total": self.train_passage_passes + self.reembed_passes}


@dataclass
class TrainResult:
    encoder: object
    corrector: Corrector | None
    counters: Counters
    curve: list[dict] = field(default_factory=list)
    validations: list[dict] = field(default_factory=list)
    best_step: int | None = None


def check_train_params(p: dict) -> None:
    """Refuse bad `train` params, before train loads anything or touches an output (train.steps 0
    used to replace the model with the untrained encoder, then fail)."""
    if "steps" in p:  # params.yaml always has it (--set cannot remove a key); unit tests' sections may not
        _check_int(p["steps"], "train.steps", 1)  # first: the pilot's check below compares with it
    neg = p.get("negatives", {})
    if neg.get("strategy") not in STRATEGIES:
        raise FreshenError(f"params.yaml: field 'train.negatives.strategy': must be one of {STRATEGIES}, "
                           f"got {neg.get('strategy')!r}")
    if neg.get("selection", "topk") not in SELECTIONS:
        raise FreshenError(f"params.yaml: field 'train.negatives.selection': must be one of {SELECTIONS}, "
                           f"got {neg.get('selection')!r}")
    if p.get("batching", "tas") not in ("tas", "random"):
        raise FreshenError(f"params.yaml: field 'train.batching': must be 'tas' or 'random', got {p.get('batching')!r}")
    refresh = int(neg.get("refresh_every", 0) or 0)
    if neg["strategy"] == "refresh" and refresh <= 0:
        raise FreshenError("params.yaml: field 'train.negatives.refresh_every': must be > 0 for strategy 'refresh'")
    if neg["strategy"] in ("in_batch", "stale") and refresh > 0:
        raise FreshenError(f"params.yaml: field 'train.negatives.refresh_every': strategy '{neg['strategy']}' "
                           "never refreshes (use 'refresh', or 'corrected' with refresh)")
    cor = p.get("corrector", {})
    arch = cor.get("arch", "residual_mlp")
    if arch not in ("linear", "residual_mlp"):
        raise FreshenError(f"params.yaml: field 'train.corrector.arch': must be 'linear' or 'residual_mlp', got {arch!r}")
    if cor.get("ce_target", "fresh") not in CE_TARGETS:
        raise FreshenError(f"params.yaml: field 'train.corrector.ce_target': must be one of {CE_TARGETS}, "
                           f"got {cor.get('ce_target')!r}")
    weight = cor.get("ce_weight", 0.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
        raise FreshenError(f"params.yaml: field 'train.corrector.ce_weight': must be a number >= 0, got {weight!r}")
    if not isinstance(cor.get("normalize", False), bool):
        raise FreshenError(f"params.yaml: field 'train.corrector.normalize': must be true or false, "
                           f"got {cor.get('normalize')!r}")
    for section, values, key, least in (("corrector", cor, "replay_steps", 1), ("corrector", cor, "updates_per_step", 1),
                                        ("corrector", cor, "drift_sample", 0), ("corrector", cor, "refit_every", 0),
                                        ("corrector", cor, "refit_sample", 0), ("corrector", cor, "refit_epochs", 1),
                                        ("negatives", neg, "fresh_overlay_steps", 0)):
        _check_int(values.get(key, least), f"train.{section}.{key}", least)
    if FalseNegativeFilter.from_params(neg.get("false_negatives")).active and neg.get("fresh_overlay_steps", 0):
        raise FreshenError("params.yaml: field 'train.negatives.fresh_overlay_steps': works without false-negative "
                           "control only (set train.negatives.false_negatives.relative_margin and absolute_margin "
                           "to null and range_min to 0)")
    _check_int(p.get("min_positive_grade", 1), "train.min_positive_grade", 1)
    if p.get("positive_grades", "all") not in ("all", "top"):
        raise FreshenError(f"params.yaml: field 'train.positive_grades': must be 'all' or 'top', "
                           f"got {p.get('positive_grades')!r}")
    for key in ("probe_passages", "overlap_passages", "overlap_k", "eval_every", "early_stopping_patience"):
        if p.get(key) is not None:
            _check_int(p[key], f"train.{key}", 0)
    for i, overrides in enumerate(pilot.candidates(p)):
        check_train_params(pilot.variant(p, overrides, i))
    if cor.get("refit_every", 0) and not cor.get("refit_sample", 0):
        raise FreshenError("params.yaml: field 'train.corrector.refit_sample': must be > 0 when refit_every is set")
    if neg.get("fresh_overlay_steps", 0) and neg.get("selection", "topk") != "topk":
        raise FreshenError("params.yaml: field 'train.negatives.fresh_overlay_steps': works with selection 'topk' "
                           f"only, got selection {neg.get('selection')!r}")


def _check_int(value, field: str, least: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise FreshenError(f"params.yaml: field '{field}': must be an integer >= {least}, got {value!r}")


def make_batches(p: dict, cluster_of: dict[str, int], train_qids: list[str], rng: np.random.Generator):
    if p.get("batching", "tas") == "tas":
        return TASBatches({q: cluster_of[q] for q in train_qids}, int(p["batch_size"]),
                          int(p.get("clusters_per_batch", 1)), rng)
    return RandomBatches(train_qids, int(p["batch_size"]), rng)


def check_teacher_coverage(teacher: dict, train_qids: list[str], positives: dict, row_of: dict) -> None:
    """Every training query needs a teacher score for each of its positives and for at least one
    other passage: balanced margin sampling draws from exactly those. Checked before training."""
    lacking = [q for q in train_qids
               if any(d not in teacher.get(q, {}) for d in positives[q])
               or not any(d not in positives[q] and d in row_of for d in teacher.get(q, {}))]
    if lacking:
        raise FreshenError(f"params.yaml: field 'train.teacher.scores': {len(lacking)} of {len(train_qids)} training "
                           f"queries lack a teacher score for a positive or for any other passage, e.g. '{lacking[0]}' "
                           "(score each training query's positives and its candidate negatives)")


def check_positive_grade(dataset, min_grade: int) -> None:
    """A minimum grade that leaves a judged training query with no positive is refused."""
    judged, kept = dataset.positives("train"), dataset.positives("train", min_grade)
    lacking = sorted(set(judged) - set(kept))
    if lacking:
        grades = sorted({r for docs in dataset.qrels["train"].values() for r in docs.values() if r > 0})
        raise FreshenError(f"params.yaml: field 'train.min_positive_grade': {min_grade} leaves {len(lacking)} of "
                           f"{len(judged)} training queries with no positive, e.g. '{lacking[0]}' (grades in "
                           f"qrels/train.tsv: {', '.join(map(str, grades))}): lower it")


def _ndcg_at_10(qrels: dict, run: dict) -> float:
    return evaluate_run(qrels, run)["ndcg_at_10"]


class Trainer:
    """Holds the state of one training run; `run()` does the steps."""

    def __init__(self, encoder, dataset, cache, cluster_of, p: dict, seed: int, teacher=None, on_log=None,
                 on_eval=None):
        check_train_params(p)
        self.encoder, self.ds, self.p, self.on_log, self.on_eval = encoder, dataset, p, on_log, on_eval
        self.neg_p, self.cor_p = p["negatives"], p.get("corrector", {})
        self.strategy = self.neg_p["strategy"]
        self.k = 0 if self.strategy == "in_batch" else int(self.neg_p.get("k", 4))
        self.refresh_every = int(self.neg_p.get("refresh_every", 0) or 0)
        self.rng = np.random.default_rng(seed)
        self.gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        self.teacher = teacher

        # training positives: judged at least min_positive_grade (with positive_grades 'top', only
        # each query's highest grade); every passage judged relevant at all (any grade > 0) is
        # never a negative and is masked out of in-batch softmaxes
        min_grade = int(p.get("min_positive_grade", 1))
        check_positive_grade(dataset, min_grade)
        self.positives = dataset.positives("train", min_grade, top=p.get("positive_grades", "all") == "top")
        judged = dataset.positives("train")
        # dev queries with a relevant judgement (the others are left out, with a warning)
        self.dev = dataset.evaluation_qrels("dev") if dataset.qrels.get("dev") else None
        self.train_qids = sorted(q for q in self.positives if q in cluster_of or p.get("batching") == "random")
        if not self.train_qids:
            raise FreshenError("no training queries with positives (check qrels/train.tsv and the clusters)")
        self.batches = make_batches(p, cluster_of, self.train_qids, self.rng)
        self.row_of = cache.row_of()
        missing = [d for q in self.train_qids for d in self.positives[q] if d not in self.row_of]
        if missing:
            raise FreshenError(f"{cache.path}: cache lacks {len(missing)} judged documents, e.g. '{missing[0]}'")
        self.doc_ids = cache.ids
        self.doc_texts = dataset.doc_texts(self.doc_ids)
        self.pos_rows = {q: [self.row_of[d] for d in judged[q] if d in self.row_of] for q in judged}
        self.fn_filter = FalseNegativeFilter.from_params(self.neg_p.get("false_negatives"))
        if teacher is not None:
            check_teacher_coverage(teacher, self.train_qids, self.positives, self.row_of)
            if self.strategy != "in_batch":
                log.info("teacher scores given: negatives are drawn from the teacher's scored candidates by "
                         "balanced margin sampling, not from the cache (strategy '%s' trains only its corrector)",
                         self.strategy)
        self.last_negatives: tuple[list[str], torch.Tensor] | None = None  # the last step's (queries, negative rows)

        # the stale cache, a private float16 copy: the training-time index, not the artifact
        self.scorer = CacheScorer(torch.from_numpy(np.array(cache.embeddings, dtype=np.float16)), self.neg_p)
        self.use_corrector = self.strategy == "corrected"
        self.corrector, self.cor_opt, self.corrector_start = None, None, 0
        if self.use_corrector or self.strategy == "stale":  # 'stale' trains one too, to measure drift
            self._new_corrector(cache.dim)
        self.warmup = int(self.cor_p.get("warmup_steps", 0))
        # the corrector's training set: (rows, fresh embeddings) of the targets of the last
        # `replay_steps` steps (1: this step's only, as METHOD.md), fitted `updates_per_step` times
        self.replay: deque = deque(maxlen=int(self.cor_p.get("replay_steps", 1)))
        self.cor_updates = int(self.cor_p.get("updates_per_step", 1))
        self.ce_weight, self.ce_target = float(self.cor_p.get("ce_weight", 0.0)), self.cor_p.get("ce_target", "fresh")
        # random corpus passages embedded fresh (no gradient) each step for the drift loss only:
        # the step's own targets are the corrector's current top-k, a biased sample of the corpus
        self.drift_sample = int(self.cor_p.get("drift_sample", 0)) if self.use_corrector else 0
        # every `refit_every` steps, `refit_sample` random passages embedded fresh (no gradient) and
        # the corrector fitted on them for `refit_epochs`: one step's targets are a few dozen pairs,
        # and a corrector fits the drift far better from a few thousand (benchmarks/corrector_fit.py)
        self.refit_every = int(self.cor_p.get("refit_every", 0) or 0) if self.use_corrector else 0
        self.refit_sample, self.refit_epochs = int(self.cor_p.get("refit_sample", 0)), int(self.cor_p.get("refit_epochs", 50))
        self.sample_rng = np.random.default_rng([seed, 1])  # its own stream: batches stay those of every other arm
        self.pick_rng = np.random.default_rng([seed, 2])  # balanced margin picks: their own stream, likewise
        # passages embedded fresh for training in the last `fresh_overlay_steps` steps are scored
        # with that embedding instead of h(C[d]) when the corrected top candidates are ranked: it
        # reuses what the step computed anyway, so it costs no pass (0: off)
        self.overlay_steps = int(self.neg_p.get("fresh_overlay_steps", 0) or 0) if self.use_corrector else 0
        if self.overlay_steps:
            self.overlay = torch.zeros_like(self.scorer.table)
            self.overlay_step = torch.full((len(self.doc_ids),), -(10 ** 9), dtype=torch.long)

        steps = int(p["steps"])
        self.opt = torch.optim.AdamW(encoder.parameters(), lr=float(p["lr"]), weight_decay=float(p.get("weight_decay", 0.0)))
        self.sched = get_linear_schedule_with_warmup(self.opt, int(float(p.get("warmup_ratio", 0.1)) * steps), steps)
        self.temperature = float(p.get("temperature", 0.05))
        self.passage_len = int(p.get("passage_max_len") or encoder.config.passage_max_len)
        # the encoder runs where it was placed (a GPU when there is one); its outputs come back to
        # the CPU, where the losses, the cache scoring and the corrector run (autograd spans both)
        self.device = next(encoder.parameters()).device
        self.amp = autocast_dtype(p.get("precision", "fp32"), self.device)
        n_probe = min(int(p.get("probe_passages", 0) or 0), len(self.doc_ids))
        self.probe_rows = sorted(self.rng.choice(len(self.doc_ids), size=n_probe, replace=False).tolist())
        self.probe_set = set(self.probe_rows)
        # a random passage sample, its own stream (batches stay those of every other setting),
        # embedded fresh at each evaluation: the top-k lists of the dev queries over it from the
        # training-time cache, the corrected cache and the fresh embeddings are compared
        n_overlap = min(int(p.get("overlap_passages", 0) or 0), len(self.doc_ids))
        self.overlap_rows = torch.from_numpy(np.sort(np.random.default_rng([seed, 3]).choice(
            len(self.doc_ids), size=n_overlap, replace=False)))
        self.overlap_k = min(int(p.get("overlap_k", 100)), n_overlap)
        self.sample_pool = np.setdiff1d(np.arange(len(self.doc_ids)), np.array(self.probe_rows, dtype=np.int64)) \
            if self.drift_sample or self.refit_every else np.empty(0, dtype=np.int64)  # corpus-sized only when used
        self.counters, self.curve, self.validations = Counters(), [], []

    def _new_corrector(self, dim: int) -> None:
        init = self.cor_p.get("init")
        self.corrector = Corrector.load(init, expect_dim=dim) if init and self.corrector_start == 0 \
            else Corrector.from_params(dim, self.cor_p)
        self.cor_opt = torch.optim.Adam(self.corrector.parameters(), lr=float(self.cor_p.get("lr", 1e-3)))

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None)

    def correcting(self, step: int) -> bool:
        return self.use_corrector and step > self.corrector_start + self.warmup

    # -- one step -----------------------------------------------------------------------
    def step(self, step: int) -> dict:
        qids = next(self.batches)
        pos_docs = [self.positives[q][int(self.rng.integers(len(self.positives[q])))] for q in qids]
        with self._autocast():
            q_emb = self.encoder.embed([self.ds.queries[q] for q in qids], "query")
        self.counters.query_passes += len(qids)
        q_emb = q_emb.float().cpu()
        if not torch.isfinite(q_emb).all():  # before they pick negatives from the cache
            raise diverged(f"train: step {step}: the encoder's query embeddings hold NaN or Inf")

        neg_rows = torch.empty((len(qids), 0), dtype=torch.long)
        unusable = torch.zeros((len(qids), 0), dtype=torch.bool)  # filled-up negatives, masked out of the loss
        fn_counts: dict = {}
        if self.teacher is not None:
            neg_rows = self._teacher_negatives(qids, pos_docs)
        elif self.k > 0:
            correcting = self.correcting(step)
            overlay = bool(self.overlay_steps) and correcting
            exclude, pos_rows = [self.pos_rows[q] for q in qids], [self.row_of[d] for d in pos_docs]
            corrector = self.corrector if correcting else None
            if self.fn_filter.active:  # (never with the overlay: check_train_params refuses both)
                neg_rows, unusable, fn_counts = self.scorer.select_filtered(
                    q_emb.detach(), self.k, exclude, pos_rows, self.fn_filter, corrector=corrector,
                    generator=self.gen, rng=self.pick_rng)
            else:
                neg_rows = self.scorer.select(q_emb.detach(), int(self.neg_p.get("candidates", 100)) if overlay
                                              else self.k, exclude, pos_rows, corrector=corrector,
                                              generator=self.gen, rng=self.pick_rng)
                if overlay:
                    neg_rows = self._overlay_rerank(step, q_emb.detach(), neg_rows)
                unusable = torch.zeros(neg_rows.shape, dtype=torch.bool)
        self.last_negatives = (qids, neg_rows)

        rows = [self.row_of[d] for d in pos_docs] + neg_rows.flatten().tolist()
        with self._autocast():
            p_emb = self.encoder.embed([self.doc_texts[r] for r in rows], "passage", max_len=self.passage_len)
        p_emb = p_emb.float().cpu()
        self.counters.train_passage_passes += len(rows)
        if self.overlay_steps:
            rows_t = torch.tensor(rows)
            self.overlay[rows_t], self.overlay_step[rows_t] = p_emb.detach().to(self.overlay.dtype), step

        sample = self._drift_sample()  # embedded by the encoder the step's targets saw, before its update
        mask = self._other_positives(qids, rows)
        b = len(qids)
        mask[:, b:] |= torch.block_diag(*unusable.unbind(0)) if unusable.numel() else False
        if self.fn_filter.in_batch and self.fn_filter.has_margin:
            fn_counts["fn_in_batch"] = self._mask_likely_positives(q_emb.detach(), p_emb.detach(), mask)
        loss = self._retriever_loss(qids, pos_docs, rows, neg_rows, q_emb, p_emb, mask)
        check_finite_value(float(loss.detach()), f"train: step {step}: the retriever loss")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.encoder.parameters(), float(self.p.get("grad_clip", 1.0)))
        self.opt.step()
        self.sched.step()
        record = {"step": step, "loss": float(loss.detach()), **fn_counts}
        for key, n in fn_counts.items():
            setattr(self.counters, key, getattr(self.counters, key) + n)
        if self.teacher is not None:
            record["teacher_inbatch_pairs"] = self.teacher_inbatch_pairs
        if self.corrector is not None:
            record.update(self._corrector_step(rows, p_emb.detach(), q_emb.detach(), mask, sample))
        return record

    def _overlay_rerank(self, step: int, q_emb: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        """The k best of the corrected top candidates [b, m], each scored with its own fresh
        embedding when the last `fresh_overlay_steps` steps embedded it, through h otherwise."""
        b, m = cand.shape
        flat = cand.flatten()
        emb = self.scorer.rows_through(flat, self.corrector)
        recent = (step - self.overlay_step[flat]) <= self.overlay_steps
        emb[recent] = self.overlay[flat[recent]].float()
        scores = (emb.view(b, m, -1) * q_emb[:, None, :].float()).sum(-1)
        return cand.gather(1, scores.topk(min(self.k, m), dim=1).indices)

    def _drift_sample(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """`drift_sample` random non-probe passages and their fresh embeddings, or None."""
        if self.drift_sample == 0 or len(self.sample_pool) == 0:
            return None
        rows = self._sample_rows(self.drift_sample)
        n = len(rows)
        with torch.no_grad(), self._autocast():
            fresh = self.encoder.embed([self.doc_texts[int(r)] for r in rows], "passage", max_len=self.passage_len)
        self.counters.train_passage_passes += n
        self.counters.drift_sample_passes += n
        return rows, fresh.float().cpu()

    def _sample_rows(self, n: int) -> torch.Tensor:
        """`n` distinct random non-probe rows (fewer if the pool is smaller), sorted, from the
        sample's own random stream."""
        n = min(n, len(self.sample_pool))
        return torch.from_numpy(np.sort(self.sample_rng.choice(self.sample_pool, size=n, replace=False)))

    def _other_positives(self, qids, rows) -> torch.Tensor:
        """mask[i, j]: passage j of the step is a positive of query i other than its own (column i)."""
        rows_t = torch.tensor(rows)
        mask = torch.zeros((len(qids), len(rows)), dtype=torch.bool)
        for i, q in enumerate(qids):
            mask[i] = torch.isin(rows_t, torch.tensor(self.pos_rows[q]))
            mask[i, i] = False
        return mask

    def _mask_likely_positives(self, q_emb: torch.Tensor, p_emb: torch.Tensor, mask: torch.Tensor) -> int:
        """Mask (in place) every passage of the step that the false-negative margin rule flags for a
        query, scored fresh against the query's own positive (column i); returns how many it added."""
        scores = q_emb @ p_emb.T
        b = len(q_emb)
        flagged = self.fn_filter.too_close(scores, scores[torch.arange(b), torch.arange(b)])
        flagged[torch.arange(b), torch.arange(b)] = False
        added = flagged & ~mask
        mask |= flagged
        return int(added.sum())

    def _retriever_loss(self, qids, pos_docs, rows, neg_rows, q_emb, p_emb, mask):
        if self.teacher is None:
            return contrastive_loss(q_emb, p_emb, torch.arange(len(qids)), mask, self.temperature)
        return self._teacher_loss(qids, pos_docs, rows, neg_rows, q_emb, p_emb)

    def _teacher_negatives(self, qids, pos_docs) -> torch.Tensor:
        """Balanced margin sampling over the teacher's margins (TAS-Balanced)."""
        out = []
        for q, pos in zip(qids, pos_docs):
            scored = self.teacher.get(q, {})
            cands = [d for d in scored if d not in self.positives[q] and d in self.row_of]
            if pos not in scored or not cands:
                raise FreshenError(f"teacher scores lack query '{q}' with its positive '{pos}' and a negative")
            margins = np.array([scored[pos] - scored[d] for d in cands])
            picked = balanced_pick(margins, self.k or 1, int(self.neg_p.get("bins", 10)), self.pick_rng)
            picked = (picked * ((self.k or 1) // len(picked) + 1))[: self.k or 1]
            out.append(torch.tensor([self.row_of[cands[j]] for j in picked]))
        return torch.stack(out)

    def _teacher_loss(self, qids, pos_docs, rows, neg_rows, q_emb, p_emb):
        b, k = neg_rows.shape
        scale = 1.0 / self.temperature
        pos_e = p_emb[:b]
        neg_e = p_emb[b:].view(b, k, -1)
        t_margin = torch.tensor([[self.teacher[q][pos_docs[i]] - self.teacher[q][self.doc_ids[int(r)]]
                                  for r in neg_rows[i]] for i, q in enumerate(qids)])
        loss = margin_mse(q_emb[:, None, :].expand(-1, k, -1), pos_e[:, None, :].expand(-1, k, -1), neg_e,
                          t_margin, scale)
        # in-batch Margin-MSE: other queries' positives, where the teacher scored them for this query
        pairs = [(i, j) for i, q in enumerate(qids) for j in range(b)
                 if j != i and pos_docs[j] in self.teacher.get(q, {}) and pos_docs[j] not in self.positives[q]]
        alpha = float(self.p.get("teacher", {}).get("alpha", 0.75))
        self.teacher_inbatch_pairs = len(pairs)  # 0: the teacher file scores no other query's positive
        if pairs and alpha > 0:
            ii, jj = torch.tensor([a for a, _ in pairs]), torch.tensor([c for _, c in pairs])
            t_in = torch.tensor([self.teacher[qids[a]][pos_docs[a]] - self.teacher[qids[a]][pos_docs[c]]
                                 for a, c in pairs])
            loss = loss + alpha * margin_mse(q_emb[ii], pos_e[ii], pos_e[jj], t_in, scale)
        return loss

    def _corrector_step(self, rows: list[int], fresh: torch.Tensor, q_emb: torch.Tensor, mask: torch.Tensor,
                        sample: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict:
        """Drift loss on this step's fresh targets and drift sample (and those of the replay
        window), plus ce_weight x the cross-entropy term on this step's corrected logits; probes
        held out."""
        rows_t = torch.tensor(rows)
        stale = self.scorer.table[rows_t].float()
        with torch.no_grad():
            rec = {"cos_stale_fresh": mean_cosine(stale, fresh), "cos_corrected_fresh": mean_cosine(self.corrector(stale), fresh)}
        keep = torch.tensor([r not in self.probe_set for r in rows])
        if sample is not None:
            self.replay.append((torch.cat([rows_t[keep], sample[0]]), torch.cat([fresh[keep], sample[1]])))
        elif keep.any():
            self.replay.append((rows_t[keep], fresh[keep]))
        if not self.replay:
            return rec
        train_rows = torch.cat([r for r, _ in self.replay])
        target = torch.cat([f for _, f in self.replay])
        window = self.scorer.table[train_rows].float()
        b = len(q_emb)
        ce_queries = keep[:b] if self.ce_weight > 0 else torch.zeros(b, dtype=torch.bool)  # a probe positive: no label
        ce_mask = (mask | ~keep[None, :])[ce_queries]
        for update in range(self.cor_updates):
            c_loss = drift_loss(self.corrector(window), target)
            if ce_queries.any():
                ce = corrected_logits_loss(q_emb[ce_queries], self.corrector(stale), fresh,
                                           torch.arange(b)[ce_queries], ce_mask, self.temperature, self.ce_target)
                c_loss = c_loss + self.ce_weight * ce
                if update == 0:
                    rec["corrector_ce"] = float(ce.detach())
            self.cor_opt.zero_grad(set_to_none=True)
            check_finite_value(float(c_loss.detach()), f"train: step {len(self.curve) + 1}: the corrector loss")
            c_loss.backward()
            self.cor_opt.step()
            if update == 0:
                rec["corrector_loss"] = float(c_loss.detach())
        return rec

    # -- refit, refresh and validation -------------------------------------------------
    def refit(self, step: int) -> dict:
        """Embed `refit_sample` random non-probe passages with the current g (no gradient; counted
        as training passes, the cache is not touched) and fit the corrector's drift loss on them
        for `refit_epochs` epochs of minibatches of 256."""
        rows = self._sample_rows(self.refit_sample)
        n = len(rows)
        fresh = torch.from_numpy(encode(self.encoder, [self.doc_texts[int(r)] for r in rows], "passage",
                                        batch_size=int(self.p.get("encode_batch_size", 64)),
                                        precision=self.p.get("encode_precision", "auto"), desc=f"refit@{step}",
                                        max_len=self.passage_len))
        self.encoder.train()
        self.counters.train_passage_passes += n
        self.counters.drift_sample_passes += n
        stale = self.scorer.table[rows].float()
        with torch.no_grad():
            before = mean_cosine(self.corrector(stale), fresh)
        # its own optimiser: a thousand updates on this sample would leave the online optimiser's
        # second moments tuned to it, and the next online steps far too large (seed 13: the probe
        # cosine fell from 0.92 to 0.85 within 25 steps of a refit that shared it)
        opt = torch.optim.Adam(self.corrector.parameters(), lr=float(self.cor_p.get("lr", 1e-3)))
        for _ in range(self.refit_epochs):
            for batch in torch.from_numpy(self.sample_rng.permutation(n)).split(256):
                loss = drift_loss(self.corrector(stale[batch]), fresh[batch])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        with torch.no_grad():
            after = mean_cosine(self.corrector(stale), fresh)
        log.info("corrector refit at step %d on %d passages: cos to fresh %.4f -> %.4f", step, n, before, after)
        return {"refit_cos_before": before, "refit_cos_after": after}

    def refresh(self, step: int) -> None:
        """Re-embed the corpus with the current g (the expensive baseline); a corrector, if any,
        starts again from the identity since the cache it corrected is gone."""
        table = np.zeros((len(self.doc_ids), self.scorer.table.shape[1]), dtype=np.float32)
        encode_into(self.encoder, self.doc_texts, "passage", table, batch_size=int(self.p.get("encode_batch_size", 64)),
                    precision=self.p.get("encode_precision", "auto"), desc=f"refresh@{step}", max_len=self.passage_len)
        self.scorer.set_table(torch.from_numpy(table.astype(np.float16)))
        self.counters.reembed_passes += len(self.doc_ids)
        self.counters.refreshes += 1
        if self.corrector is not None:
            self._new_corrector(table.shape[1])
            self.corrector_start = step
            self.replay.clear()  # its stale inputs are gone with the old cache
        self.encoder.train()

    @torch.no_grad()
    def validate(self, step: int) -> dict:
        """dev nDCG@10 on the training-time index (corrected cache when a corrector is in use):
        no re-embedding needed. Plus the drift on held-out probe passages, embedded fresh."""
        rec: dict = {"step": step}
        dev = self.dev
        corrector = self.corrector if (self.corrector is not None and self.correcting(step)) else None
        if dev:
            qids = sorted(dev)
            q = torch.from_numpy(encode(self.encoder, [self.ds.queries[x] for x in qids], "query",
                                        precision=self.p.get("encode_precision", "auto")))
            q_eff, cor = self.scorer.query_for(q, corrector)
            rows, scores = chunked_topk(q_eff, self.scorer.table, 100, [[]] * len(qids), cor, self.scorer.chunk)
            run = {qid: {self.doc_ids[int(r)]: float(s) for r, s in zip(rows[i], scores[i])} for i, qid in enumerate(qids)}
            rec["dev_ndcg_at_10"] = _ndcg_at_10(dev, run)
            if self.overlap_k > 0:
                rec.update(self._overlap(q))
        if self.probe_rows:
            fresh = self._embed_fresh(self.probe_rows)
            stale = self.scorer.table[torch.tensor(self.probe_rows)].float()
            rec["probe_cos_stale_fresh"] = mean_cosine(stale, fresh)
            if self.corrector is not None:
                rec["probe_cos_corrected_fresh"] = mean_cosine(self.corrector(stale), fresh)
        self.encoder.train()
        return rec

    def _embed_fresh(self, rows) -> torch.Tensor:
        """Passages embedded by the current encoder to measure it: probe passes, not training cost."""
        self.counters.probe_passes += len(rows)
        return torch.from_numpy(encode(self.encoder, [self.doc_texts[int(r)] for r in rows], "passage",
                                       precision=self.p.get("encode_precision", "auto"), max_len=self.passage_len))

    def _overlap(self, q: torch.Tensor) -> dict:
        """Top-`overlap_k` overlap, over the passage sample, of the training-time cache's and the
        corrected cache's lists with the lists of the sample embedded fresh, for queries `q`."""
        rows = self.overlap_rows
        fresh = self._embed_fresh(rows)
        cached = self.scorer.table[rows].float()

        def top(table: torch.Tensor) -> torch.Tensor:
            return (q.float() @ table.T).topk(self.overlap_k, dim=1).indices

        fresh_top = top(fresh)
        rec = {"overlap_stale_fresh": overlap_at(top(cached), fresh_top)}
        if self.corrector is not None:
            rec["overlap_corrected_fresh"] = overlap_at(top(self.corrector(cached)), fresh_top)
        return rec

    def _snapshot(self) -> tuple[dict, dict | None]:
        return (copy.deepcopy(self.encoder.state_dict()),
                copy.deepcopy(self.corrector.state_dict()) if self.corrector else None)

    def run(self, stop_after: int | None = None) -> TrainResult:
        """All the steps, or the first `stop_after` of the schedule (a pilot), validated at the last.
        A pilot skips the step-0 validation: the pre-trained encoder is the same for every candidate."""
        steps, eval_every = int(self.p["steps"]), int(self.p.get("eval_every", 0) or 0)
        last = min(steps, stop_after or steps)
        patience = int(self.p.get("early_stopping_patience", 0) or 0)
        best, best_step, best_state, bad = float("-inf"), None, None, 0
        started = time.perf_counter()
        if eval_every and stop_after is None:  # step 0: the pre-trained encoder, validated like every later step; keep_best may keep it
            val = self.validate(0)
            self.validations.append(val)
            if val.get("dev_ndcg_at_10") is not None:
                best, best_step, best_state = val["dev_ndcg_at_10"], 0, self._snapshot()
            self.counters.wall_seconds = time.perf_counter() - started
            record = {**val, "train_passage_passes": 0, "reembed_passes": 0,
                      "wall_seconds": round(self.counters.wall_seconds, 3)}
            if self.on_log:
                self.on_log(record, 0)
            if self.on_eval:
                self.on_eval(record, self.counters)
        self.encoder.train()
        for step in progress(range(1, last + 1), desc="train", unit="step", mininterval=20, disable=False):
            record = self.step(step)
            if self.refresh_every and step % self.refresh_every == 0 and step < steps:
                self.refresh(step)
            if self.refit_every and step % self.refit_every == 0 and step < steps:
                record.update(self.refit(step))
            evaluated = (bool(eval_every) and (step % eval_every == 0 or step == steps)) or step == stop_after
            if evaluated:
                val = self.validate(step)
                self.validations.append(val)
                record.update({k: v for k, v in val.items() if k != "step"})
                score = val.get("dev_ndcg_at_10")
                if score is not None and score > best:
                    best, best_step, bad, best_state = score, step, 0, self._snapshot()
                elif score is not None:
                    bad += 1
            self.counters.wall_seconds = time.perf_counter() - started
            record.update(train_passage_passes=self.counters.train_passage_passes,
                          reembed_passes=self.counters.reembed_passes, wall_seconds=round(self.counters.wall_seconds, 3))
            self.curve.append(record)
            if self.on_log and (step % int(self.p.get("log_every", 10)) == 0 or step == steps or evaluated
                                or "refit_cos_after" in record):
                self.on_log(record, step)
            if self.on_eval and evaluated:
                self.on_eval(record, self.counters)
            if patience and bad >= patience:
                log.info("early stopping at step %d: dev nDCG@10 did not improve for %d evaluations", step, bad)
                break
        if best_state is not None and self.p.get("keep_best", True):
            self.encoder.load_state_dict(best_state[0])
            if self.corrector is not None and best_state[1] is not None:
                self.corrector.load_state_dict(best_state[1])
        self.counters.wall_seconds = time.perf_counter() - started
        return TrainResult(self.encoder, self.corrector, self.counters, self.curve, self.validations, best_step)


def train(encoder, dataset, cache, cluster_of: dict[str, int], p: dict, seed: int, on_log=None,
          teacher=None, on_eval=None) -> TrainResult:
    """Train `encoder` in place; return it with its corrector, the counters and the curves.
    `on_log(record, step)` every `log_every` steps and at evaluations; `on_eval(record, counters)`
    after each evaluation."""
    return Trainer(encoder, dataset, cache, cluster_of, p, seed, teacher=teacher, on_log=on_log,
                   on_eval=on_eval).run()
