"""A saturated split: a model scores the maximum of a metric there (nDCG@10 = 1.0 on every query).
Such a split cannot tell a better model from that one, so a champion at the maximum of
`promote.metric` can never be beaten: evaluate and promote say so, naming the split and its size,
instead of refusing every later challenger in silence. A small dev split carved from a small
train set is where this happens."""

from __future__ import annotations

CEILING = 1.0  # nDCG, Recall and MRR are at most 1
REMEDY = (
    "use more or harder {split} queries: raise data.min_dev_queries or data.dev_fraction, or give a "
    "qrels/{split}.tsv of your own (docs/pipeline.md, 'A saturated dev split')"
)


def at_ceiling(value: float | None) -> bool:
    return value is not None and value >= CEILING - 1e-9


def split_of(metric: str) -> str:
    """The split a metric key path of eval.json is measured on: `dev.trained.ndcg_at_10` -> dev."""
    return metric.split(".", 1)[0]


def queries_text(split: str, queries: int | None) -> str:
    return f"the {split} split ({queries} queries)" if queries is not None else f"the {split} split"


def promotion_note(
    metric: str, value: float, champion: str | None, best: float | None, zero_shot: float, queries: int | None
) -> str | None:
    """Why `metric` can no longer separate models, when it cannot; None when it can. `best` is
    champion v`champion`'s recorded value, `zero_shot` the pre-trained encoder's, `value` the
    challenger's, all measured on the split `metric` names, of `queries` queries."""
    split = split_of(metric)
    where, remedy = queries_text(split, queries), REMEDY.format(split=split)
    if at_ceiling(best):
        return (
            f"{where} is saturated: champion v{champion} scores {best:.4f} on {metric}, the maximum, "
            f"so no challenger can ever beat it; {remedy}"
        )
    if at_ceiling(zero_shot):
        return f"{where} is saturated: the pre-trained encoder already scores the maximum on {metric}; {remedy}"
    if at_ceiling(value):
        return (
            f"{where} is saturated: this model scores {value:.4f} on {metric}, the maximum, so no later "
            f"challenger will be able to beat it there; {remedy}"
        )
    return None


def evaluation_note(metrics: dict, split: str, metric: str = "ndcg_at_10") -> str | None:
    """A warning when a system of eval.json's `split` scores the maximum of `metric`."""
    top = [s for s in ("trained", "zero_shot") if at_ceiling(metrics.get(split, {}).get(s, {}).get(metric))]
    if not top:
        return None
    return (
        f"{queries_text(split, metrics[split].get('queries'))} is saturated: {' and '.join(top)} "
        f"{'score' if len(top) > 1 else 'scores'} {metric} = 1.0, the maximum: it cannot tell a better "
        f"model from {'them' if len(top) > 1 else 'it'}, and promote cannot move champion past it; "
        + REMEDY.format(split=split)
    )
