"""Teacher scores for TAS-Balanced's Margin-MSE: a TSV of `query-id<TAB>doc-id<TAB>score`
(header optional), e.g. cross-encoder scores of candidate passages. Validated against the
dataset before training starts."""

from __future__ import annotations

import math
from pathlib import Path

from freshen.errors import DataError


def read_teacher_scores(path: str | Path, corpus: dict, queries: dict) -> dict[str, dict[str, float]]:
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "teacher score file not found (train.teacher.scores)")
    scores: dict[str, dict[str, float]] = {}
    with open(path, encoding="utf-8", newline="") as fh:
        for lineno, raw in enumerate(fh, start=1):
            line = raw.rstrip("\r\n")
            if not line.strip():
                continue
            cols = line.split("\t")
            if len(cols) != 3:
                raise DataError(path, f"expected 3 tab-separated columns, got {len(cols)}", lineno)
            qid, docid, raw_score = (c.strip() for c in cols)
            try:
                value = float(raw_score)
            except ValueError:
                if lineno == 1:
                    continue  # header
                raise DataError(path, f"must be a number, got {raw_score!r}", lineno, "score") from None
            if not math.isfinite(value):
                raise DataError(path, f"must be finite, got {raw_score!r}", lineno, "score")
            if qid not in queries:
                raise DataError(path, f"unknown query id '{qid}'", lineno, "query-id")
            if docid not in corpus:
                raise DataError(path, f"unknown document id '{docid}'", lineno, "doc-id")
            scores.setdefault(qid, {})[docid] = value
    if not scores:
        raise DataError(path, "no teacher scores")
    return scores
