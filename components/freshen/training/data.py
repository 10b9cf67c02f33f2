"""What training reads, resolved once: the training queries and their positives, the cache rows
of every judged passage, the passage texts by cache row, dev judgements and teacher scores; and
the counters of what training spends."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from freshen.errors import FreshenError
from freshen.modeling.corrector import Corrector
from freshen.params import TrainParams
from freshen.training.params import check_positive_grade, check_teacher_coverage
from freshen.training.teacher import Teacher

log = logging.getLogger(__name__)


@dataclass
class Counters:
    """Target-encoder forward passes (the cost unit of docs/method.md) and wall time. Validation and
    probe passes are measurement, not training cost, and are counted apart."""

    train_passage_passes: int = 0  # positives + negatives (+ the corrector's drift sample)
    drift_sample_passes: int = 0  # of which: random passages embedded only to train the corrector
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

    def add(self, counts: dict[str, int]) -> None:
        """Add a step's counts (the false-negative filter's) to the counters of those names."""
        for key, n in counts.items():
            setattr(self, key, getattr(self, key) + n)

    def stamp(self, record: dict, started: float) -> dict:
        """`record` with the passes spent so far and the wall time since `started` (perf_counter)."""
        self.wall_seconds = time.perf_counter() - started
        record.update(
            train_passage_passes=self.train_passage_passes,
            reembed_passes=self.reembed_passes,
            wall_seconds=round(self.wall_seconds, 3),
        )
        return record


@dataclass
class TrainResult:
    """A run's outcome: the trained encoder (the best one with `keep_best`), its corrector, the
    counters, the per-step curve, the validations and the best validation's step."""

    encoder: object
    corrector: Corrector | None
    counters: Counters
    curve: list[dict] = field(default_factory=list)
    validations: list[dict] = field(default_factory=list)
    best_step: int | None = None


class TrainingData:
    """Training positives: judged at least `min_positive_grade` (with `positive_grades` 'top',
    only each query's highest grade). Every passage judged relevant at all (any grade > 0) is
    never a negative and is masked out of in-batch softmaxes: `pos_rows`."""

    def __init__(self, dataset, cache, cluster_of: dict[str, int], p: TrainParams, teacher: dict | None):
        min_grade = p.min_positive_grade
        check_positive_grade(dataset, min_grade)
        self.positives = dataset.positives("train", min_grade, top=p.positive_grades == "top")
        judged = dataset.positives("train")
        # dev queries with a relevant judgement (the others are left out, with a warning)
        self.dev = dataset.evaluation_qrels("dev") if dataset.qrels.get("dev") else None
        self.train_qids = sorted(q for q in self.positives if q in cluster_of or p.batching == "random")
        if not self.train_qids:
            raise FreshenError("no training queries with positives (check qrels/train.tsv and the clusters)")
        self.row_of = cache.row_of()
        missing = [d for q in self.train_qids for d in self.positives[q] if d not in self.row_of]
        if missing:
            raise FreshenError(f"{cache.path}: cache lacks {len(missing)} judged documents, e.g. '{missing[0]}'")
        self.queries = dataset.queries
        self.doc_ids = cache.ids
        self.doc_texts = dataset.doc_texts(self.doc_ids)
        self.pos_rows = {q: [self.row_of[d] for d in judged[q] if d in self.row_of] for q in judged}
        self.teacher = None
        if teacher is not None:
            check_teacher_coverage(teacher, self.train_qids, self.positives, self.row_of)
            strategy = p.negatives.strategy
            if strategy != "in_batch":
                log.info(
                    "teacher scores given: negatives are drawn from the teacher's scored candidates by "
                    "balanced margin sampling, not from the cache (strategy '%s' trains only its corrector)",
                    strategy,
                )
            self.teacher = Teacher(teacher, self.positives, self.row_of, self.doc_ids, p.teacher.alpha)
