"""The checks of the `train` section that need the data (its values alone are checked by the
schema, `freshen.params.train`, when params are loaded): run before training starts, every
refusal a FreshenError naming the field."""

from __future__ import annotations

from freshen.errors import FreshenError


def check_teacher_coverage(teacher: dict, train_qids: list[str], positives: dict, row_of: dict) -> None:
    """Every training query needs a teacher score for each of its positives and for at least one
    other passage: balanced margin sampling draws from exactly those. Checked before training."""
    lacking = [
        q
        for q in train_qids
        if any(d not in teacher.get(q, {}) for d in positives[q])
        or not any(d not in positives[q] and d in row_of for d in teacher.get(q, {}))
    ]
    if lacking:
        raise FreshenError(
            f"params.yaml: field 'train.teacher.scores': {len(lacking)} of {len(train_qids)} training "
            f"queries lack a teacher score for a positive or for any other passage, e.g. '{lacking[0]}' "
            "(score each training query's positives and its candidate negatives)"
        )


def check_positive_grade(dataset, min_grade: int) -> None:
    """A minimum grade that leaves a judged training query with no positive is refused."""
    judged, kept = dataset.positives("train"), dataset.positives("train", min_grade)
    lacking = sorted(set(judged) - set(kept))
    if lacking:
        grades = sorted({r for docs in dataset.qrels["train"].values() for r in docs.values() if r > 0})
        raise FreshenError(
            f"params.yaml: field 'train.min_positive_grade': {min_grade} leaves {len(lacking)} of "
            f"{len(judged)} training queries with no positive, e.g. '{lacking[0]}' (grades in "
            f"qrels/train.tsv: {', '.join(map(str, grades))}): lower it"
        )
