"""train.pilot: an automatic choice on dev between variants of the train section."""

import pytest
import torch
from freshen.errors import FreshenError
from freshen.modeling.encoder import Encoder
from freshen.training import pilot
from freshen.training.loop import Trainer, train
from tiny import train_params


def _p(params, **train):
    return train_params(params["train"], **{"precision": "fp32", "steps": 6, "eval_every": 3, **train})


def test_the_pilot_keeps_the_better_candidate_and_its_run_is_the_direct_one(tiny_training):
    ds, cache, clusters, params = tiny_training
    # lr 1e-30 cannot move the encoder (updates below float32 resolution; the schema wants lr > 0),
    # lr 5e-3 does (on this tiny data, dev falls): the two score apart and the pilot keeps the higher
    p = _p(params, pilot={"steps": 3, "candidates": [{"lr": 1e-30}, {}]}, lr=5e-3)
    spent, scores = [], []

    def run_pilot(variant, steps):
        res = Trainer(Encoder.from_params(params["model"]), ds, cache, clusters, variant, seed=3).run(steps)
        assert len(res.curve) == steps and res.validations[-1]["step"] == steps
        spent.append(res.counters.train_passage_passes)
        scores.append(res.validations[-1]["dev_ndcg_at_10"])
        return scores[-1], spent[-1]

    chosen, summary = pilot.choose(p, run_pilot)
    best = max(range(2), key=lambda i: (scores[i], -i))
    assert scores[0] != scores[1]  # the choice is the scores', not the tie rule's
    assert summary["pilot_choice"] == best and chosen.lr == [1e-30, 5e-3][best] and chosen.pilot.candidates == []
    assert summary["pilot_passes"] == sum(spent) == 2 * 3 * 4 * (1 + 2)  # 2 pilots x 3 steps x 4 queries x (pos + k)
    assert [c["dev_ndcg_at_10"] for c in summary["pilot_candidates"]] == scores
    # the chosen variant trained in full is the run train gives with those params and no pilot
    a = train(Encoder.from_params(params["model"]), ds, cache, clusters, chosen, seed=3)
    direct = _p(params, pilot={"candidates": []}, lr=chosen.lr)
    b = train(Encoder.from_params(params["model"]), ds, cache, clusters, direct, seed=3)
    for (name, x), (_, y) in zip(a.encoder.named_parameters(), b.encoder.named_parameters()):
        assert torch.equal(x, y), name


def test_a_tie_keeps_the_first_candidate():
    p = train_params({"steps": 10, "pilot": {"steps": 2, "candidates": [{}, {"lr": 1.0}]}, "lr": 2e-5})
    chosen, summary = pilot.choose(p, lambda variant, steps: (0.5, 7))
    assert summary["pilot_choice"] == 0 and chosen.lr == 2e-5 and summary["pilot_passes"] == 14


def test_a_variant_is_the_section_with_the_candidate_s_overrides_and_no_pilot():
    p = train_params({"steps": 10, "pilot": {"steps": 2, "candidates": [{}, {"negatives.k": 7, "lr": 1e-4}]}})
    chosen, _ = pilot.choose(p, lambda variant, steps: (float(variant.negatives.k), 1))
    assert (chosen.negatives.k, chosen.lr, chosen.steps) == (7, 1e-4, 10) and not pilot.candidates(chosen)
    assert chosen.negatives.false_negatives == p.negatives.false_negatives  # the rest as written


def test_fewer_than_two_candidates_is_no_pilot():
    assert pilot.candidates(train_params({"steps": 5, "pilot": {"steps": 2, "candidates": [{}]}})) == []
    assert pilot.candidates(train_params({"steps": 5, "pilot": {"candidates": []}})) == []


@pytest.mark.parametrize(
    "pilot_p,message",
    [
        ({"steps": 0, "candidates": [{}, {}]}, "train.pilot.steps: Input should be greater than or equal to 1"),
        ({"steps": 99, "candidates": [{}, {}]}, "train.pilot.steps: must be at most train.steps (10), got 99"),
        ({"steps": 2, "candidates": [{}, {"negatives.nope": 1}]}, "train.pilot.candidates.1: no train key"),
        ({"steps": 2, "candidates": "lr"}, "train.pilot.candidates: Input should be a valid list"),
        (
            {"steps": 2, "candidates": [{}, {"negatives.strategy": "ance"}]},
            "train.pilot.candidates.1: negatives.strategy: Input should be",
        ),
    ],
)
def test_bad_pilots_are_refused_before_training(pilot_p, message):
    with pytest.raises(FreshenError) as err:
        train_params({"steps": 10, "negatives": {"strategy": "stale"}, "pilot": pilot_p})
    assert message in str(err.value)
