"""False-negative control: the margin and rank rules on cached candidates, the in-batch mask,
graded positives, and the params that are refused before training."""

import numpy as np
import pytest
import torch
from freshen.errors import DataError, FreshenError
from freshen.modeling.encoder import Encoder
from freshen.params import validate_params
from freshen.params.train import NegativesParams
from freshen.sampling.false_negatives import FalseNegativeFilter
from freshen.sampling.selection import Selection
from freshen.training.loop import Trainer
from recorder import Recorder
from tiny import train_params

ROWS = torch.tensor([[10, 11, 12, 13, 14, 15]])
SCORES = torch.tensor([[0.99, 0.90, 0.80, 0.70, 0.60, 0.50]])
POSITIVE = torch.tensor([1.0])
TOPK = Selection("topk")


def test_relative_margin_drops_candidates_above_the_fraction_of_the_positive():
    f = FalseNegativeFilter(relative_margin=0.15)  # drop scores above 0.85
    rows, unusable, counts = f.pick(ROWS, SCORES, POSITIVE, k=2, selection=TOPK)
    assert rows.tolist() == [[12, 13]] and not unusable.any()
    assert counts == {"fn_rank": 0, "fn_margin": 2, "fn_short": 0}


def test_absolute_margin_and_range_min():
    rows, _, counts = FalseNegativeFilter(absolute_margin=0.25).pick(ROWS, SCORES, POSITIVE, k=2, selection=TOPK)
    assert rows.tolist() == [[13, 14]] and counts["fn_margin"] == 3  # above 1.0 - 0.25
    rows, _, counts = FalseNegativeFilter(range_min=3).pick(ROWS, SCORES, POSITIVE, k=2, selection=TOPK)
    assert rows.tolist() == [[13, 14]] and counts == {"fn_rank": 3, "fn_margin": 0, "fn_short": 0}
    # both: the rank rule takes the first rows, the margin rule counts only what is left
    _, _, counts = FalseNegativeFilter(relative_margin=0.15, range_min=1).pick(
        ROWS, SCORES, POSITIVE, k=2, selection=TOPK
    )
    assert counts == {"fn_rank": 1, "fn_margin": 1, "fn_short": 0}


def test_too_few_candidates_left_are_filled_up_and_flagged_unusable():
    rows, unusable, counts = FalseNegativeFilter(relative_margin=0.35).pick(ROWS, SCORES, POSITIVE, k=3, selection=TOPK)
    # only 0.60 and 0.50 pass: the third is the best removed one, flagged so the loss masks it
    assert rows.tolist() == [[14, 15, 10]] and unusable.tolist() == [[False, False, True]]
    assert counts["fn_short"] == 1


@pytest.mark.parametrize("selection", ["gumbel", "balanced"])
def test_sampled_selections_draw_only_from_candidates_that_pass(selection):
    f = FalseNegativeFilter(relative_margin=0.15)
    gen, rng = torch.Generator().manual_seed(0), np.random.default_rng(0)
    picked = set()
    for _ in range(30):
        rows, unusable, _ = f.pick(
            ROWS, SCORES, POSITIVE, k=2, selection=Selection(selection, beta=1.0, bins=2), generator=gen, rng=rng
        )
        assert not unusable.any() and len(set(rows[0].tolist())) == 2
        picked |= set(rows[0].tolist())
    assert picked <= {12, 13, 14, 15} and len(picked) > 2  # never 10 or 11, and not always the same two


def test_in_batch_passages_the_rule_flags_are_masked():
    q = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=-1)
    passages = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1], [0.3, 1.0]]), dim=-1)
    mask = torch.zeros((2, 4), dtype=torch.bool)
    mask[1, 3] = True  # already masked (a judged positive): not counted again
    added = FalseNegativeFilter(relative_margin=0.2).mask_in_batch(q, passages, mask)
    # query 0: passage 2 scores 0.995 > 0.8 x 1.0; query 1: passage 3 scores 0.958, already masked
    assert mask.tolist() == [[False, False, True, False], [False, False, False, True]]
    assert added == 1


def test_training_reports_what_the_rules_removed(tiny_training):
    ds, cache, clusters, params = tiny_training
    p = train_params(
        params["train"],
        precision="fp32",
        steps=3,
        eval_every=0,
        negatives={
            "strategy": "stale",
            "candidates": 20,
            "false_negatives": {"relative_margin": 0.02, "range_min": 1, "in_batch": True},
        },
    )
    rec = Recorder()
    t = Trainer(Encoder.from_params(params["model"]), ds, cache, clusters, p, seed=5, hooks=[rec])
    records = [t.step(s) for s in range(1, 4)]
    b = p.batch_size
    assert all(r["fn_rank"] == b for r in records)  # the top candidate of every query skipped
    assert all({"fn_margin", "fn_short", "fn_in_batch"} <= set(r) for r in records)
    assert t.counters.fn_rank == 3 * b and t.counters.fn_margin == sum(r["fn_margin"] for r in records)
    positives = ds.positives("train")
    qids, neg_rows = rec.picked[-1]
    for q, rows in zip(qids, neg_rows.tolist()):
        assert not {t.data.doc_ids[r] for r in rows} & set(positives[q])


def test_lower_grades_are_neither_positives_nor_negatives(tiny_training):
    ds, cache, clusters, params = tiny_training
    train = ds.qrels["train"]
    q = sorted(train)[0]
    weak = next(d for d in ds.doc_ids() if d not in train[q])
    train[q] = {**{d: 2 for d in train[q]}, weak: 1}
    for other in sorted(train)[1:]:
        train[other] = {d: 2 for d in train[other]}
    p = train_params(params["train"], precision="fp32", steps=2, eval_every=0, min_positive_grade=2)
    t = Trainer(Encoder.from_params(params["model"]), ds, cache, clusters, p, seed=5)
    assert weak not in t.data.positives[q]
    assert t.data.row_of[weak] in t.data.pos_rows[q]  # excluded from its negatives and masked in-batch


def test_a_minimum_grade_that_leaves_a_query_without_positive_is_refused(tiny_training):
    ds, cache, clusters, params = tiny_training
    p = train_params(params["train"], precision="fp32", min_positive_grade=2)  # the tiny qrels grade everything 1
    with pytest.raises(FreshenError, match=r"train.min_positive_grade.*2 leaves \d+ of \d+ training queries"):
        Trainer(Encoder.from_params(params["model"]), ds, cache, clusters, p, seed=5)


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("relative_margin", 1.5, "Input should be less than or equal to 1, got 1.5"),
        ("relative_margin", -0.1, "Input should be greater than or equal to 0, got -0.1"),
        ("absolute_margin", 2, "Input should be less than or equal to 1, got 2"),
        ("relative_margin", "high", "Input should be a valid number, got 'high'"),
        ("range_min", -1, "Input should be greater than or equal to 0, got -1"),
        ("in_batch", "yes", "Input should be a valid boolean, got 'yes'"),
    ],
)
def test_bad_false_negative_params_are_refused(key, value, message):
    with pytest.raises(FreshenError) as err:
        train_params({"negatives": {"strategy": "stale", "false_negatives": {key: value}}})
    assert f"train.negatives.false_negatives.{key}: {message}" in str(err.value)
    with pytest.raises(FreshenError, match="train.min_positive_grade: Input should be greater than or equal to 1"):
        train_params({"negatives": {"strategy": "stale"}, "min_positive_grade": 0})


def test_a_dev_split_too_small_to_judge_promotion_is_refused(tiny_params, tmp_path):
    from freshen.steps import prepare

    params = {**tiny_params, "data": {**tiny_params["data"], "min_dev_queries": 30}}
    with pytest.raises(
        DataError,
        match=r"train.tsv: dev split, carved by data.dev_fraction, has \d+ queries.*"
        r"at least 30 \(data.min_dev_queries\)",
    ):
        prepare.run(validate_params(params), tmp_path)
    assert not (tmp_path / params["data"]["out_dir"]).exists()  # nothing written


@pytest.mark.parametrize("corrector_arch", [None, "residual_mlp", "linear"])
def test_filtered_selection_is_the_same_on_the_exact_and_the_ann_path(corrector_arch):
    """Both paths hand the filter the same top candidates, rescored through the corrector (a
    linear one included, whose exact path searches with W^T q), so they pick the same rows; no
    excluded (judged) row is ever a candidate."""
    from freshen.modeling.corrector import Corrector
    from freshen.sampling.scorer import CacheScorer

    g = torch.Generator().manual_seed(4)
    cache = torch.nn.functional.normalize(torch.randn(3000, 16, generator=g), dim=-1).half()
    q = torch.nn.functional.normalize(torch.randn(6, 16, generator=g), dim=-1)
    h = None if corrector_arch is None else Corrector(16, corrector_arch, hidden=16)
    if h is not None:
        with torch.no_grad():
            for w in h.parameters():
                w.add_(0.05 * torch.randn(w.shape, generator=g))
    exclude = [[i, i + 10, i + 20] for i in range(6)]
    positives = [e[0] for e in exclude]
    rule = FalseNegativeFilter(relative_margin=0.05, range_min=2)
    picks = []
    for p in (
        NegativesParams(candidates=40),
        NegativesParams(candidates=40, ann_threshold=1000, ann_candidates=300, ann_index="Flat"),
    ):
        scorer = CacheScorer(cache, p)
        rows, unusable, counts = scorer.select_filtered(q, 4, exclude, positives, rule, corrector=h)
        assert rows.shape == unusable.shape == (6, 4) and counts["fn_rank"] == 6 * 2
        assert all(not set(rows[i].tolist()) & set(exclude[i]) for i in range(6))
        picks.append(rows)
    assert torch.equal(picks[0], picks[1])


@pytest.mark.parametrize("grades", ["top", "all"])
def test_top_grades_train_on_each_query_s_highest_grade_only(tiny_training, grades):
    ds, cache, clusters, params = tiny_training
    train = ds.qrels["train"]
    q, other = sorted(train)[:2]
    own = next(iter(train[q]))
    weak = [d for d in ds.doc_ids() if d not in train[q]][:3]
    train[q] = {own: 2, **{d: 1 for d in weak}}  # one grade-2 passage, three grade-1
    p = train_params(params["train"], precision="fp32", steps=2, eval_every=0, positive_grades=grades)
    t = Trainer(Encoder.from_params(params["model"]), ds, cache, clusters, p, seed=5)
    assert t.data.positives[q] == ([own] if grades == "top" else [own, *weak])
    assert t.data.positives[other] == list(train[other])  # binary qrels: top changes nothing
    assert {t.data.row_of[d] for d in [own, *weak]} == set(t.data.pos_rows[q])  # all of them never negatives
    with pytest.raises(FreshenError, match="train.positive_grades: Input should be 'top' or 'all', got 'best'"):
        train_params({"negatives": {"strategy": "stale"}, "positive_grades": "best"})
