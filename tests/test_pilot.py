"""train.pilot: an automatic choice on dev between variants of the train section."""

import pytest
import torch
from freshen.errors import FreshenError
from freshen.modeling.encoder import Encoder
from freshen.training import pilot
from freshen.training.loop import Trainer, check_train_params, train


def _p(params, **train):
    return {**params["train"], "precision": "fp32", "steps": 6, "eval_every": 3, **train}


def test_the_pilot_keeps_the_better_candidate_and_its_run_is_the_direct_one(tiny_training):
    ds, cache, clusters, params = tiny_training
    # lr 0 cannot move the encoder: the pilot must prefer the written lr, whose dev rises
    p = _p(params, pilot={"steps": 3, "candidates": [{"lr": 0.0}, {}]}, lr=5e-3)
    spent, scores = [], []

    def run_pilot(variant, steps):
        res = Trainer(Encoder.from_params(params["model"]), ds, cache, clusters, variant, seed=3).run(steps)
        assert len(res.curve) == steps and res.validations[-1]["step"] == steps
        spent.append(res.counters.train_passage_passes)
        scores.append(res.validations[-1]["dev_ndcg_at_10"])
        return scores[-1], spent[-1]

    chosen, summary = pilot.choose(p, run_pilot)
    best = max(range(2), key=lambda i: (scores[i], -i))
    assert summary["pilot_choice"] == best and chosen["lr"] == [0.0, 5e-3][best] and chosen["pilot"] is None
    assert summary["pilot_passes"] == sum(spent) == 2 * 3 * 4 * (1 + 2)  # 2 pilots x 3 steps x 4 queries x (pos + k)
    assert [c["dev_ndcg_at_10"] for c in summary["pilot_candidates"]] == scores
    # the chosen variant trained in full is the run train gives with those params and no pilot
    a = train(Encoder.from_params(params["model"]), ds, cache, clusters, chosen, seed=3)
    b = train(
        Encoder.from_params(params["model"]), ds, cache, clusters, {**p, **{"lr": chosen["lr"]}, "pilot": None}, seed=3
    )
    for (name, x), (_, y) in zip(a.encoder.named_parameters(), b.encoder.named_parameters()):
        assert torch.equal(x, y), name


def test_a_tie_keeps_the_first_candidate():
    p = {"steps": 10, "pilot": {"steps": 2, "candidates": [{}, {"lr": 1.0}]}, "lr": 2e-5}
    chosen, summary = pilot.choose(p, lambda variant, steps: (0.5, 7))
    assert summary["pilot_choice"] == 0 and chosen["lr"] == 2e-5 and summary["pilot_passes"] == 14


def test_fewer_than_two_candidates_is_no_pilot():
    assert pilot.candidates({"steps": 5, "pilot": {"steps": 2, "candidates": [{}]}}) == []
    assert pilot.candidates({"steps": 5, "pilot": None}) == []


@pytest.mark.parametrize(
    "pilot_p,field",
    [
        ({"steps": 0, "candidates": [{}, {}]}, "train.pilot.steps"),
        ({"steps": 99, "candidates": [{}, {}]}, "train.pilot.steps"),
        ({"steps": 2, "candidates": [{}, {"negatives.nope": 1}]}, r"train.pilot.candidates\[1\]"),
        ({"steps": 2, "candidates": "lr"}, "train.pilot.candidates"),
        ({"steps": 2, "candidates": [{}, {"negatives.strategy": "ance"}]}, "train.negatives.strategy"),
    ],
)
def test_bad_pilots_are_refused_before_training(pilot_p, field):
    with pytest.raises(FreshenError, match=field):
        check_train_params({"steps": 10, "negatives": {"strategy": "stale"}, "pilot": pilot_p})
