"""The `train` section: the retriever, its negatives, the corrector, the teacher and the pilot.
The cross-field rules (which strategy needs which setting) are validators here, so a bad
combination fails when params are loaded, before any step starts."""

from __future__ import annotations

import copy
from typing import Any, Literal

from pydantic import ValidationError, model_validator

from freshen.params.base import FieldProblem, Section, doc, section
from freshen.params.errors import describe


class FalseNegativeParams(Section):
    relative_margin: float | None = doc(
        0.05, "Drop a candidate scoring above (1 - this) x the query's positive score; null: off.", ge=0, le=1
    )
    absolute_margin: float | None = doc(
        None, "Drop a candidate scoring above the positive's score minus this; null: off.", ge=0, le=1
    )
    range_min: int = doc(0, "Skip this many top-ranked candidates.", ge=0)
    in_batch: bool = doc(True, "Mask in-batch passages the margin rules flag out of the query's softmax.")

    @property
    def active(self) -> bool:
        """Whether cached negatives go through the filter at all."""
        return self.relative_margin is not None or self.absolute_margin is not None or self.range_min > 0


class NegativesParams(Section):
    strategy: Literal["in_batch", "stale", "corrected", "refresh"] = doc(
        "corrected",
        "Where hard negatives come from: none (in_batch), the stale cache, the cache through the "
        "corrector, or a cache re-embedded every refresh_every steps.",
    )
    k: int = doc(4, "Hard negatives per query.", ge=0)
    selection: Literal["topk", "gumbel", "balanced"] = doc("topk", "How negatives are picked from the ranking.")
    beta: float = doc(20.0, "gumbel: inverse temperature of the sampling.")
    candidates: int = doc(100, "balanced (and the fresh overlay): candidates considered.", ge=1)
    bins: int = doc(10, "balanced: margin bins.", ge=1)
    refresh_every: int = doc(
        0, "> 0: re-embed the corpus every N steps (strategy refresh, or corrected + refresh).", ge=0
    )
    false_negatives: FalseNegativeParams = section(
        FalseNegativeParams, "Candidates scoring close to the query's positive are likely unjudged positives."
    )
    fresh_overlay_steps: int = doc(
        0,
        "corrected, topk: rank the corrected top `candidates` with the fresh "
        "embedding of any passage trained on in the last N steps; 0: off.",
        ge=0,
    )
    chunk_size: int = doc(65536, "Cache rows scored at once.", ge=1)
    memory_gb: float = doc(
        4.0,
        "The training-time cache is copied into memory when its float16 size fits this many GiB; a "
        "larger one is read from the cache file row by row as it is scored (plain reads, never mapped) "
        "and its ANN index is built from the same reads.",
        ge=0,
    )
    device_memory_gb: float = doc(
        4.0,
        "Training on a GPU (train.device): the training-time cache held in memory is copied to the GPU "
        "when its float16 size fits this many GiB, else streamed there chunk by chunk as it is scored; "
        "scoring through the corrector and the corrector's training run on the GPU either way. "
        "0: both on the CPU. Changes nothing when training on a CPU.",
        ge=0,
    )
    ann_threshold: int = doc(
        2000000, "Caches larger than this: candidates from a faiss index, rescored by the corrector; 0: never.", ge=0
    )
    ann_candidates: int = doc(1000, "Candidates per query taken from that index.", ge=1)
    ann_index: str = doc(
        "IVF4096,SQ8",
        "faiss index_factory string of that index (trained on <= 100k sampled rows); its candidates "
        "are rescored exactly, so a compressed index (SQ8: a byte a dimension) costs no precision.",
    )
    ann_nprobe: int = doc(64, "IVF: inverted lists searched per query.", ge=1)
    ann_ef_search: int | None = doc(None, "HNSW: efSearch; null: max(ann_candidates, 64).", ge=1)


class ServingFitParams(Section):
    epochs: int = doc(
        20,
        "After training, fit the corrector for retrieval from the stale cache (training queries, "
        "their judged passages) for this many epochs (0: off); the epoch with the best dev nDCG@10 is kept, "
        "h itself when none beats it. It gains on documents the training queries judge and loses a little "
        "on the others (docs/results.md).",
        ge=0,
    )
    lr: float = doc(1.0e-4, "Its learning rate (AdamW).", gt=0)
    anchor: float = doc(10.0, "Weight of the squared distance from h'(c) to the trained h(c).", ge=0)
    candidates: int = doc(200, "Rows each query's softmax is over: its top of h'(cache), with its positives.", ge=1)
    batch_queries: int = doc(64, "Training queries per update.", ge=1)


class CorrectorParams(Section):
    arch: Literal["linear", "residual_mlp"] = doc("residual_mlp", "The corrector network h.")
    hidden: int = doc(384, "residual_mlp: hidden width.", ge=1)
    depth: int = doc(1, "residual_mlp: hidden layers.", ge=1)
    lr: float = doc(1.0e-3, "The corrector's learning rate (its own Adam).", gt=0)
    warmup_steps: int = doc(5, "Steps the corrector trains before its scores drive sampling.", ge=0)
    replay_steps: int = doc(1, "Drift loss over the targets embedded fresh in the last N steps.", ge=1)
    updates_per_step: int = doc(1, "Corrector optimiser steps per training step.", ge=1)
    drift_sample: int = doc(
        0,
        "Extra random passages a step embeds fresh (no gradient) for the drift loss only; counted as training passes.",
        ge=0,
    )
    ce_weight: float = doc(1.0, "Weight of a cross-entropy term on the step's corrected logits <f(q), h(C[d])>.", ge=0)
    ce_target: Literal["fresh", "positive"] = doc(
        "fresh", "Target of that term: the softmax of the fresh logits, or each query's positive."
    )
    refit_every: int = doc(
        0,
        "> 0: every N steps, embed refit_sample random passages fresh (counted as training passes) and fit h on them.",
        ge=0,
    )
    refit_sample: int = doc(0, "Passages of each refit.", ge=0)
    refit_epochs: int = doc(50, "Epochs of minibatches of 256 over the refit sample.", ge=1)
    normalize: bool = doc(False, "Project h's output onto the unit sphere (linear: no longer exact search).")
    init: str | None = doc(None, "Start from a saved corrector folder (its dim must match the cache).")
    serving_fit: ServingFitParams = section(ServingFitParams, "After training: the corrector fitted for retrieval.")

    @model_validator(mode="after")
    def _refit(self) -> CorrectorParams:
        if self.refit_every and not self.refit_sample:
            raise FieldProblem("refit_sample", "must be > 0 when refit_every is set")
        return self


class TeacherParams(Section):
    scores: str | None = doc(
        None, "TSV query-id, doc-id, score: Margin-MSE with balanced margin sampling (TAS-Balanced); null: no teacher."
    )
    alpha: float = doc(0.75, "Weight of the in-batch Margin-MSE.")


PILOT_CANDIDATES: list[dict[str, Any]] = [{}, {"negatives.false_negatives.relative_margin": None}]


class PilotParams(Section):
    steps: int = doc(
        25, "Steps each candidate trains from the pre-trained encoder before it is validated on dev.", ge=1
    )
    candidates: list[dict[str, Any]] = doc(
        PILOT_CANDIDATES,
        "Variants of the train section as dotted overrides "
        "({}: as written); the best on dev trains in full. Fewer than 2: off.",
    )


class TrainParams(Section):
    steps: int = doc(100, "Training steps.", ge=1)
    batch_size: int = doc(16, "Queries per batch.", ge=1)
    micro_batch: int | None = doc(
        4,
        "Queries embedded per forward pass, with their positives and negatives; each pass draws its "
        "dropout from its own stream, seeded by (seed, step, pass), so N processes (--nproc) train "
        "one process's model when N x micro_batch divides batch_size. null: each process embeds its "
        "share in one pass (the model then depends on the number of processes).",
        ge=1,
    )
    batching: Literal["tas", "random"] = doc("tas", "TAS (topic-aware batches from the query clusters) or random.")
    clusters_per_batch: int = doc(1, "TAS: clusters each batch is drawn from.", ge=1)
    lr: float = doc(6.0e-5, "Peak learning rate: linear warm-up over warmup_ratio, then linear decay to 0.", gt=0)
    weight_decay: float = doc(0.0, "AdamW weight decay.", ge=0)
    warmup_ratio: float = doc(0.1, "Fraction of the steps spent warming up.", ge=0, le=1)
    temperature: float = doc(0.05, "Softmax temperature of the contrastive loss.", gt=0)
    grad_clip: float = doc(1.0, "Gradient norm clipping of the encoder.", gt=0)
    min_positive_grade: int = doc(
        1, "qrels grade a training positive needs; lower grades > 0 are neither positives nor negatives.", ge=1
    )
    positive_grades: Literal["top", "all"] = doc(
        "top",
        "top: each query's positives are its highest-graded "
        "passages; all: every passage at min_positive_grade or above.",
    )
    passage_max_len: int | None = doc(160, "Tokens per passage while training; null: model.passage_max_len.", ge=1)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = doc(
        "auto", "Autocast of the encoder; auto: bf16 where the hardware has it."
    )
    device: str = doc(
        "auto",
        "Where the encoder trains (auto: the GPU when there is one); the cache is scored and the "
        "corrector trained there too (negatives.device_memory_gb); the losses stay on the CPU.",
    )
    negatives: NegativesParams = section(NegativesParams, "Hard negatives.")
    corrector: CorrectorParams = section(
        CorrectorParams, "The corrector h, which maps stale cache rows towards the current encoder's embeddings."
    )
    teacher: TeacherParams = section(TeacherParams, "Optional teacher scores (Margin-MSE).")
    pilot: PilotParams = section(PilotParams, "An automatic choice on dev between variants of this section.")
    eval_every: int = doc(25, "Dev nDCG@10 on the training-time index every N steps; 0: never.", ge=0)
    keep_best: bool = doc(
        True,
        "Restore the best validated checkpoint at the end (step 0, the pre-trained encoder, "
        "included), judged on the training-time index.",
    )
    early_stopping_patience: int = doc(0, "Stop after this many evaluations without improvement; 0: never.", ge=0)
    probe_passages: int = doc(256, "Held-out passages embedded fresh at each evaluation to measure drift.", ge=0)
    overlap_passages: int = doc(
        1000, "Passage sample embedded fresh at each evaluation (measurement, not training cost) ...", ge=0
    )
    overlap_k: int = doc(
        100,
        "... and the overlap of the dev queries' top-k over it: training-time / corrected cache against fresh.",
        ge=0,
    )
    log_every: int = doc(5, "Log the training curve every N steps.", ge=1)
    out_dir: str = doc("artifacts/model", "The trained encoder and corrector.")
    metrics: str = doc("metrics/train.json", "Training counters and figures.")
    curve: str = doc("plots/train_curve.csv", "The training curve.")

    @model_validator(mode="after")
    def _combinations(self) -> TrainParams:
        neg = self.negatives
        if neg.strategy == "refresh" and neg.refresh_every <= 0:
            raise FieldProblem("negatives.refresh_every", "must be > 0 for strategy 'refresh'")
        if neg.strategy in ("in_batch", "stale") and neg.refresh_every > 0:
            raise FieldProblem(
                "negatives.refresh_every",
                f"strategy '{neg.strategy}' never refreshes (use 'refresh', or 'corrected' with refresh)",
            )
        if neg.fresh_overlay_steps and neg.false_negatives.active:
            raise FieldProblem(
                "negatives.fresh_overlay_steps",
                "works without false-negative control only (set "
                "false_negatives.relative_margin and absolute_margin to null and range_min to 0)",
            )
        if neg.fresh_overlay_steps and neg.selection != "topk":
            raise FieldProblem(
                "negatives.fresh_overlay_steps", f"works with selection 'topk' only, got {neg.selection!r}"
            )
        if len(self.pilot.candidates) >= 2 and self.pilot.steps > self.steps:
            raise FieldProblem("pilot.steps", f"must be at most train.steps ({self.steps}), got {self.pilot.steps}")
        for i, overrides in enumerate(self.pilot.candidates):
            check_candidate(self, i, overrides)
        return self


def check_candidate(train: TrainParams, index: int, overrides: dict[str, Any]) -> None:
    """A pilot candidate must name train keys and make a valid train section."""
    try:
        pilot_variant(train, overrides)
    except ValueError as problem:
        raise FieldProblem(f"pilot.candidates.{index}", str(problem)) from None


def pilot_variant(train: TrainParams, overrides: dict[str, Any]) -> TrainParams:
    """`train` with one pilot candidate's dotted overrides applied, and no pilot of its own
    (`pilot.candidates` empty). A key `train` lacks, or a value the section refuses, is a
    ValueError whose message names the candidate's key or the refused field."""
    raw = copy.deepcopy(train.model_dump())
    raw["pilot"]["candidates"] = []
    for key, value in overrides.items():
        node, parts = raw, str(key).split(".")
        for part in parts[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or parts[-1] not in node:
            raise ValueError(f"no train key '{key}'")
        node[parts[-1]] = value
    try:
        return TrainParams.model_validate(raw)
    except ValidationError as exc:
        field, message = describe(exc.errors()[0])
        raise ValueError(f"{field}: {message}") from None
