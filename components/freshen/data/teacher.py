"""Teacher scores for TAS-Balanced's Margin-MSE: a TSV of `query-id<TAB>doc-id<TAB>score`
(header optional), e.g. cross-encoder scores of candidate passages. Validated against the
dataset before training starts."""

from __future__ import annotations

import math
from pathlib import Path

from freshen.data.qrels import read_scored_pairs
from freshen.errors import DataError


def _score(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError("must be a number") from None
    if not math.isfinite(value):
        raise ValueError("must be finite")
    return value


def read_teacher_scores(path: str | Path, corpus: dict, queries: dict) -> dict[str, dict[str, float]]:
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "teacher score file not found (train.teacher.scores)")
    scores = read_scored_pairs(path, corpus, queries, _score, doc_field="doc-id")
    if not scores:
        raise DataError(path, "no teacher scores")
    return scores
