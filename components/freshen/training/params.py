"""The `train` section of params.yaml, checked before training loads anything or touches an
output: every refusal is a FreshenError naming the field."""

from __future__ import annotations

from freshen.errors import FreshenError
from freshen.sampling.false_negatives import FalseNegativeFilter
from freshen.sampling.selection import SELECTIONS
from freshen.training import pilot

STRATEGIES = ("in_batch", "stale", "corrected", "refresh")
CE_TARGETS = ("fresh", "positive")


def check_train_params(p: dict) -> None:
    """Refuse bad `train` params, before train loads anything or touches an output (train.steps 0
    used to replace the model with the untrained encoder, then fail)."""
    if "steps" in p:  # params.yaml always has it (--set cannot remove a key); unit tests' sections may not
        _check_int(p["steps"], "train.steps", 1)  # first: the pilot's check below compares with it
    neg = p.get("negatives", {})
    if neg.get("strategy") not in STRATEGIES:
        raise FreshenError(
            f"params.yaml: field 'train.negatives.strategy': must be one of {STRATEGIES}, got {neg.get('strategy')!r}"
        )
    if neg.get("selection", "topk") not in SELECTIONS:
        raise FreshenError(
            f"params.yaml: field 'train.negatives.selection': must be one of {SELECTIONS}, got {neg.get('selection')!r}"
        )
    if p.get("batching", "tas") not in ("tas", "random"):
        raise FreshenError(f"params.yaml: field 'train.batching': must be 'tas' or 'random', got {p.get('batching')!r}")
    refresh = int(neg.get("refresh_every", 0) or 0)
    if neg["strategy"] == "refresh" and refresh <= 0:
        raise FreshenError("params.yaml: field 'train.negatives.refresh_every': must be > 0 for strategy 'refresh'")
    if neg["strategy"] in ("in_batch", "stale") and refresh > 0:
        raise FreshenError(
            f"params.yaml: field 'train.negatives.refresh_every': strategy '{neg['strategy']}' "
            "never refreshes (use 'refresh', or 'corrected' with refresh)"
        )
    cor = p.get("corrector", {})
    arch = cor.get("arch", "residual_mlp")
    if arch not in ("linear", "residual_mlp"):
        raise FreshenError(
            f"params.yaml: field 'train.corrector.arch': must be 'linear' or 'residual_mlp', got {arch!r}"
        )
    if cor.get("ce_target", "fresh") not in CE_TARGETS:
        raise FreshenError(
            f"params.yaml: field 'train.corrector.ce_target': must be one of {CE_TARGETS}, got {cor.get('ce_target')!r}"
        )
    weight = cor.get("ce_weight", 0.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
        raise FreshenError(f"params.yaml: field 'train.corrector.ce_weight': must be a number >= 0, got {weight!r}")
    if not isinstance(cor.get("normalize", False), bool):
        raise FreshenError(
            f"params.yaml: field 'train.corrector.normalize': must be true or false, got {cor.get('normalize')!r}"
        )
    for section, values, key, least in (
        ("corrector", cor, "replay_steps", 1),
        ("corrector", cor, "updates_per_step", 1),
        ("corrector", cor, "drift_sample", 0),
        ("corrector", cor, "refit_every", 0),
        ("corrector", cor, "refit_sample", 0),
        ("corrector", cor, "refit_epochs", 1),
        ("negatives", neg, "fresh_overlay_steps", 0),
    ):
        _check_int(values.get(key, least), f"train.{section}.{key}", least)
    if FalseNegativeFilter.from_params(neg.get("false_negatives")).active and neg.get("fresh_overlay_steps", 0):
        raise FreshenError(
            "params.yaml: field 'train.negatives.fresh_overlay_steps': works without false-negative "
            "control only (set train.negatives.false_negatives.relative_margin and absolute_margin "
            "to null and range_min to 0)"
        )
    _check_int(p.get("min_positive_grade", 1), "train.min_positive_grade", 1)
    if p.get("positive_grades", "all") not in ("all", "top"):
        raise FreshenError(
            f"params.yaml: field 'train.positive_grades': must be 'all' or 'top', got {p.get('positive_grades')!r}"
        )
    for key in ("probe_passages", "overlap_passages", "overlap_k", "eval_every", "early_stopping_patience"):
        if p.get(key) is not None:
            _check_int(p[key], f"train.{key}", 0)
    for i, overrides in enumerate(pilot.candidates(p)):
        check_train_params(pilot.variant(p, overrides, i))
    if cor.get("refit_every", 0) and not cor.get("refit_sample", 0):
        raise FreshenError("params.yaml: field 'train.corrector.refit_sample': must be > 0 when refit_every is set")
    if neg.get("fresh_overlay_steps", 0) and neg.get("selection", "topk") != "topk":
        raise FreshenError(
            "params.yaml: field 'train.negatives.fresh_overlay_steps': works with selection 'topk' "
            f"only, got selection {neg.get('selection')!r}"
        )


def _check_int(value, field: str, least: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise FreshenError(f"params.yaml: field '{field}': must be an integer >= {least}, got {value!r}")


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
