"""Training on tiny data: forward-pass accounting, no positive as a negative, determinism."""

import numpy as np
import pytest
import torch

from freshen.errors import FreshenError
from freshen.modeling.encoder import Encoder
from freshen.training.loop import check_train_params, train


@pytest.fixture()
def setup(tiny_training):
    return tiny_training


def _train(setup, **neg):
    ds, cache, clusters, params = setup
    p = {**params["train"], "negatives": {**params["train"]["negatives"], **neg}, "precision": "fp32"}
    enc = Encoder.from_params(params["model"])
    return train(enc, ds, cache, clusters, p, seed=5), p


@pytest.mark.parametrize("strategy,per_query", [("in_batch", 1), ("stale", 3), ("corrected", 3)])
def test_forward_passes_match_the_strategy(setup, strategy, per_query):
    res, p = _train(setup, strategy=strategy)
    steps, b = p["steps"], p["batch_size"]
    assert res.counters.train_passage_passes == steps * b * per_query
    assert res.counters.reembed_passes == 0 and res.counters.refreshes == 0
    assert (res.corrector is None) == (strategy == "in_batch")
    assert len(res.curve) == steps and all(np.isfinite(r["loss"]) for r in res.curve)


def test_refresh_counts_reembedding_passes(setup):
    res, p = _train(setup, strategy="refresh", refresh_every=2)
    n_docs = len(setup[1])
    refreshes = len([s for s in range(1, p["steps"]) if s % 2 == 0])
    assert res.counters.refreshes == refreshes and res.counters.reembed_passes == refreshes * n_docs


def test_corrector_tracks_drift_during_training(setup):
    res, _ = _train(setup, strategy="corrected")
    first, last = res.curve[0], res.curve[-1]
    # step 1: the untrained corrector is the identity, so corrected == stale
    assert abs(first["cos_corrected_fresh"] - first["cos_stale_fresh"]) < 1e-5
    # later: the encoder has drifted away from the cache and the corrector follows it
    assert last["cos_stale_fresh"] < first["cos_stale_fresh"]
    assert last["cos_corrected_fresh"] > last["cos_stale_fresh"]


def test_same_seed_same_weights(setup):
    a, _ = _train(setup, strategy="corrected")
    b, _ = _train(setup, strategy="corrected")
    for (n1, p1), (_, p2) in zip(a.encoder.named_parameters(), b.encoder.named_parameters()):
        assert torch.equal(p1, p2), n1
    assert [r["loss"] for r in a.curve] == [r["loss"] for r in b.curve]


def test_bad_params_fail_before_training():
    with pytest.raises(FreshenError, match="train.negatives.strategy.*'ance'"):
        check_train_params({"negatives": {"strategy": "ance"}})
    with pytest.raises(FreshenError, match="train.negatives.selection"):
        check_train_params({"negatives": {"strategy": "stale", "selection": "best"}})
    with pytest.raises(FreshenError, match="train.batching"):
        check_train_params({"negatives": {"strategy": "stale"}, "batching": "topic"})
