"""The serving fit (train.corrector.serving_fit): the corrector fitted for retrieval after
training learns a map that carries to passages no training query judged, keeps h itself when no
epoch beats it on dev, is seeded, and is what the train step saves."""

import numpy as np
import pytest
import torch
from freshen.modeling.corrector import Corrector
from freshen.modeling.encoder import Encoder
from freshen.params import ServingFitParams, validate_params
from freshen.steps import train as train_step
from freshen.training import serving_fit
from freshen.training.loop import train
from tiny import train_params

DIM, DOCS = 16, 240


def drifted_world(seed: int = 0):
    """Stale rows, and queries that match a rotated (drifted) version of their document: train
    queries judge documents 0..159, dev queries documents 160..239 only."""
    rng = np.random.default_rng(seed)
    stale = rng.standard_normal((DOCS, DIM)).astype(np.float32)
    stale /= np.linalg.norm(stale, axis=1, keepdims=True)
    rotation, _ = np.linalg.qr(rng.standard_normal((DIM, DIM)))
    fresh = (stale @ rotation).astype(np.float32)

    def queries(rows):
        q = fresh[rows] + 0.1 * rng.standard_normal((len(rows), DIM)).astype(np.float32)
        return q / np.linalg.norm(q, axis=1, keepdims=True)

    train_rows, dev_rows = np.arange(0, 160), np.arange(160, DOCS)
    ids = [f"d{i}" for i in range(DOCS)]
    dev_qids = [f"q{i}" for i in dev_rows]
    dev_qrels = {q: {ids[r]: 1} for q, r in zip(dev_qids, dev_rows)}
    dev_score = serving_fit.dev_scorer(queries(dev_rows), dev_qids, ids, dev_qrels)
    return stale, queries(train_rows), [[int(r)] for r in train_rows], dev_score


def params(**kw) -> ServingFitParams:
    return ServingFitParams(**{"epochs": 6, "lr": 1e-2, "anchor": 0.0, "candidates": 50, "batch_queries": 32, **kw})


def test_the_fit_learns_the_drift_from_training_queries_and_carries_it_to_unjudged_passages():
    stale, train_q, positives, dev_score = drifted_world()
    h = Corrector(DIM, hidden=64)  # zero last layer: h is the identity
    fit = serving_fit.fit(h, stale, train_q, positives, dev_score, params(), temperature=0.05, seed=1)
    assert len(fit.dev_ndcg_at_10) == 7 and fit.epoch >= 1
    # dev queries judge only documents no training query judged: what they gain, the map learned
    assert fit.dev_ndcg_at_10[0] < 0.1 and fit.dev_ndcg_at_10[fit.epoch] > 0.8
    assert fit.dev_ndcg_at_10[fit.epoch] == max(fit.dev_ndcg_at_10)
    assert dev_score(serving_fit.TableIndex(serving_fit.corrected(fit.corrector, stale))) == pytest.approx(
        fit.dev_ndcg_at_10[fit.epoch]
    )
    assert fit.corrector is not h and torch.equal(h.mlp[-1].weight, torch.zeros_like(h.mlp[-1].weight))  # h untouched


def test_the_fit_is_seeded():
    stale, train_q, positives, dev_score = drifted_world()
    h = Corrector(DIM, hidden=64)
    runs = [serving_fit.fit(h, stale, train_q, positives, dev_score, params(epochs=2), 0.05, 7) for _ in range(2)]
    a, b = (r.corrector.state_dict() for r in runs)
    assert runs[0].dev_ndcg_at_10 == runs[1].dev_ndcg_at_10
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_h_itself_is_kept_when_no_epoch_beats_it_on_dev():
    stale, train_q, positives, _ = drifted_world()
    h = Corrector(DIM, hidden=64)
    scores = iter([0.9, 0.5, 0.8, 0.7])  # epoch 0 (h) is the best
    fit = serving_fit.fit(h, stale, train_q, positives, lambda table: next(scores), params(epochs=3), 0.05, 1)
    assert fit.epoch == 0 and fit.corrector is h and fit.dev_ndcg_at_10 == [0.9, 0.5, 0.8, 0.7]


def test_the_anchor_keeps_rows_near_h():
    stale, train_q, positives, dev_score = drifted_world()
    moved = {}
    for anchor in (0.0, 10.0):
        fit = serving_fit.fit(
            Corrector(DIM, hidden=64),
            stale,
            train_q,
            positives,
            lambda t: 1.0 + np.sum(t.table),
            params(anchor=anchor),
            0.05,
            1,
        )
        moved[anchor] = float(np.abs(serving_fit.corrected(fit.corrector, stale) - stale).mean())
    assert moved[10.0] < moved[0.0]


def test_the_train_step_saves_the_fitted_corrector_and_reports_it(tiny_training):
    ds, cache, clusters, raw = tiny_training
    raw["train"]["corrector"]["serving_fit"] = {"epochs": 2, "lr": 1e-3, "candidates": 20, "batch_queries": 8}
    full = validate_params(raw)
    p = train_params(raw["train"], precision="fp32")
    result = train(Encoder.from_params(raw["model"]), ds, cache, clusters, p, seed=5)
    trained = result.corrector
    report = train_step.fit_for_serving(result, p, cache, ds, full)
    assert set(report) == {"serving_fit_epoch", "serving_fit_dev_ndcg_at_10_before", "serving_fit_dev_ndcg_at_10"}
    assert report["serving_fit_dev_ndcg_at_10"] >= report["serving_fit_dev_ndcg_at_10_before"]
    assert (result.corrector is trained) == (report["serving_fit_epoch"] == 0)
    off = p.model_copy(update={"corrector": p.corrector.model_copy(update={"serving_fit": ServingFitParams(epochs=0)})})
    assert train_step.fit_for_serving(result, off, cache, ds, full) == {}  # epochs 0: off
