"""The method's finer points: linear-corrector exact search, ANN candidates, validation with
best checkpoint and early stopping, refresh with a corrector, teacher Margin-MSE input."""

import copy

import numpy as np
import pytest
import torch
from freshen.data.beir import load_beir
from freshen.data.teacher import read_teacher_scores
from freshen.errors import DataError, FreshenError
from freshen.modeling.corrector import Corrector
from freshen.modeling.encoder import Encoder
from freshen.params.train import NegativesParams
from freshen.sampling.negatives import chunked_topk
from freshen.sampling.scorer import CacheScorer
from freshen.training.loop import train
from recorder import Recorder
from tiny import train_params


def _linear(dim, seed=0):
    h = Corrector(dim, "linear")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        h.linear.weight.add_(0.3 * torch.randn(dim, dim, generator=g))
        h.linear.bias.add_(0.1 * torch.randn(dim, generator=g))
    return h


def test_linear_corrector_is_exact_search_on_the_stale_cache():
    g = torch.Generator().manual_seed(1)
    cache, q = torch.randn(300, 12, generator=g).half(), torch.randn(5, 12, generator=g)
    h = _linear(12)
    through, _ = chunked_topk(q, cache, 10, [[]] * 5, corrector=h, chunk_size=64)
    q_t, const = h.transform_query(q)
    direct = q_t @ cache.float().T + const[:, None]
    assert torch.allclose(direct, q @ h(cache.float()).T, atol=1e-4)
    transformed, _ = chunked_topk(q_t, cache, 10, [[]] * 5, chunk_size=64)
    assert torch.equal(through, transformed)
    scorer = CacheScorer(cache, NegativesParams(selection="topk"))
    assert torch.equal(scorer.select(q, 10, [[]] * 5, [0] * 5, corrector=h), through)
    # the scorer takes the shortcut: it searches the raw cache with W^T q, no row goes through h
    q_eff, cor = scorer.query_for(q, h)
    assert cor is None and torch.allclose(q_eff, q_t)
    h.forward = lambda *_: (_ for _ in ()).throw(AssertionError("rows pushed through h"))
    assert torch.equal(scorer.select(q, 10, [[]] * 5, [0] * 5, corrector=h), through)


def test_normalized_linear_corrector_is_scored_through_its_rows():
    """A normalized output rescales each row, so the transformed-query shortcut no longer holds:
    the scorer must push the rows through h and rank by <q, h(c)/|h(c)|>."""
    g = torch.Generator().manual_seed(3)
    cache, q = torch.randn(300, 12, generator=g).half(), torch.randn(5, 12, generator=g)
    h = _linear(12)
    h.normalize = True
    scorer = CacheScorer(cache, NegativesParams(selection="topk"))
    q_eff, cor = scorer.query_for(q, h)
    assert cor is h and torch.equal(q_eff, q)
    expected = torch.topk(q @ torch.nn.functional.normalize(h.linear(cache.float()), dim=-1).T, 10).indices
    rows = scorer.select(q, 10, [[]] * 5, [0] * 5, corrector=h)
    assert all(set(rows[i].tolist()) == set(expected[i].tolist()) for i in range(5))
    h.normalize = False  # and the shortcut's ranking differs, so the check above can fail
    unnormalized = scorer.select(q, 10, [[]] * 5, [0] * 5, corrector=h)
    assert any(set(unnormalized[i].tolist()) != set(expected[i].tolist()) for i in range(5))


@pytest.mark.parametrize("selection", ["topk", "gumbel", "balanced"])
def test_ann_candidates_rescored_by_the_corrector(selection):
    g = torch.Generator().manual_seed(2)
    cache = torch.nn.functional.normalize(torch.randn(3000, 16, generator=g), dim=-1).half()
    q = torch.nn.functional.normalize(torch.randn(8, 16, generator=g), dim=-1)
    h = Corrector(16, "residual_mlp", hidden=16)
    exclude = [[int(r) for r in chunked_topk(q[i : i + 1], cache, 3, [[]])[0][0]] for i in range(8)]
    exact, _ = chunked_topk(q, cache, 10, exclude, corrector=h)
    p = NegativesParams(selection=selection, ann_threshold=1000, ann_candidates=200, ann_index="Flat", candidates=50)
    scorer = CacheScorer(cache, p)
    assert scorer.index is not None and scorer.index.ntotal == 3000
    rows = scorer.select(
        q,
        10,
        exclude,
        [e[0] for e in exclude],
        corrector=h,
        generator=torch.Generator().manual_seed(0),
        rng=np.random.default_rng(0),
    )
    assert rows.shape == (8, 10)
    for i in range(8):
        assert not set(rows[i].tolist()) & set(exclude[i]) and len(set(rows[i].tolist())) == 10
    if selection == "topk":  # the identity corrector, an exact flat index: same set as exact search
        assert all(set(rows[i].tolist()) == set(exact[i].tolist()) for i in range(8))


@pytest.fixture()
def tiny(tiny_training):
    return tiny_training


def _params(tiny_params, **train):
    return train_params(tiny_params["train"], precision="fp32", **train)


def test_validation_keeps_the_best_checkpoint(tiny):
    ds, cache, clusters, params = tiny
    p = _params(params, steps=6, eval_every=2, lr=5e-3, keep_best=True)
    res = train(Encoder.from_params(params["model"]), ds, cache, clusters, p, seed=3)
    scores = [v["dev_ndcg_at_10"] for v in res.validations]
    assert [v["step"] for v in res.validations] == [0, 2, 4, 6]  # step 0: the pre-trained encoder
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert res.best_step == [0, 2, 4, 6][int(np.argmax(scores))]
    assert all("probe_cos_stale_fresh" in v and "probe_cos_corrected_fresh" in v for v in res.validations)
    assert res.counters.probe_passes == 4 * (8 + 30)  # 8 probes + 30 overlap passages per evaluation
    assert all(
        0.0 <= v["overlap_stale_fresh"] <= 1.0 and 0.0 <= v["overlap_corrected_fresh"] <= 1.0 for v in res.validations
    )
    # the returned encoder is the best one: validating it again gives the best score
    from freshen.training.loop import Trainer

    again = Trainer(res.encoder, ds, cache, clusters, p, seed=3)
    again.corrector.load_state_dict(res.corrector.state_dict())
    assert again.validate(p.steps + 1000)["dev_ndcg_at_10"] == pytest.approx(max(scores), abs=1e-6)


def test_early_stopping_stops(tiny):
    ds, cache, clusters, params = tiny
    p = _params(params, steps=40, eval_every=1, early_stopping_patience=2, lr=1e-30, warmup_ratio=0.0)
    res = train(Encoder.from_params(params["model"]), ds, cache, clusters, p, seed=3)
    # lr 1e-30 (the schema wants lr > 0): each update is far below float32 resolution, so dev
    # nDCG never improves on step 0's (the pre-trained encoder) and training stops at step 2
    assert len(res.curve) == 2 and res.best_step == 0


def test_corrected_with_refresh_resets_the_corrector(tiny):
    ds, cache, clusters, params = tiny
    p = _params(params, steps=5, eval_every=0, negatives={"strategy": "corrected", "refresh_every": 2})
    res = train(Encoder.from_params(params["model"]), ds, cache, clusters, p, seed=3)
    assert res.counters.refreshes == 2 and res.counters.reembed_passes == 2 * len(cache)
    assert res.counters.train_passage_passes == 5 * 4 * 3


def test_corrector_replay_window_and_updates(tiny):
    """replay_steps=3: the drift loss covers the fresh targets of the last 3 steps, probes held out;
    updates_per_step=4: four corrector optimiser steps per training step."""
    from freshen.training.loop import Trainer

    ds, cache, clusters, params = tiny
    p = _params(
        params,
        steps=5,
        eval_every=0,
        negatives={"strategy": "corrected"},
        corrector={"replay_steps": 3, "updates_per_step": 4},
    )
    t = Trainer(Encoder.from_params(params["model"]), ds, cache, clusters, p, seed=3)
    ct = t.corrector_trainer
    targets = []
    for step in range(1, 6):
        t.step(step)
        rows = torch.cat([r for r, _ in ct.replay])
        targets.append(len(rows))
        assert not set(rows.tolist()) & ct.probe_set
        assert len(ct.replay) == min(step, 3)
    per_step = 4 * (1 + 2)  # batch 4: a positive and k=2 negatives each (minus any probes)
    assert targets[-1] <= 3 * per_step and targets[-1] > per_step
    adam_steps = {int(s["step"]) for s in ct.opt.state.values()}
    assert adam_steps == {5 * 4}
    # the corrector fitted the window: its output is nearer the fresh embeddings than the cache is
    rows, fresh = torch.cat([r for r, _ in ct.replay]), torch.cat([f for _, f in ct.replay])
    with torch.no_grad():
        corrected = float(((t.corrector(t.scorer.table[rows].float()) - fresh) ** 2).sum(-1).mean())
    stale = float(((t.scorer.table[rows].float() - fresh) ** 2).sum(-1).mean())
    assert corrected < stale


def test_drift_sample_feeds_the_corrector_random_passages_and_is_counted(tiny):
    """drift_sample=5: five random non-probe passages a step, embedded fresh, enter the drift
    loss (not the retriever's loss) and are counted as target-encoder passes."""
    from freshen.training.loop import Trainer

    ds, cache, clusters, params = tiny
    p = _params(params, steps=3, eval_every=0, negatives={"strategy": "corrected"}, corrector={"drift_sample": 5})
    rec, rec_plain = Recorder(), Recorder()
    t = Trainer(Encoder.from_params(params["model"]), ds, cache, clusters, p, seed=3, hooks=[rec])
    ct = t.corrector_trainer
    plain = Trainer(
        Encoder.from_params(params["model"]),
        ds,
        cache,
        clusters,
        _params(params, steps=3, eval_every=0, negatives={"strategy": "corrected"}, corrector={"drift_sample": 0}),
        seed=3,
        hooks=[rec_plain],
    )
    for step in (1, 2, 3):
        t.step(step)
        plain.step(step)
        # the sample has its own random stream
        assert rec.batches == rec_plain.batches and len(rec.batches) == step and rec_plain.samples[-1] is None
        rows, fresh = ct.replay[-1]
        sample_rows, sample_fresh = rec.samples[-1]
        assert len(sample_rows) == 5 and not set(sample_rows.tolist()) & ct.probe_set
        assert torch.equal(rows[-5:], sample_rows) and torch.equal(fresh[-5:], sample_fresh)
        assert len(rows) == len(fresh) and not set(rows.tolist()) & ct.probe_set
    assert t.counters.drift_sample_passes == 3 * 5
    assert t.counters.train_passage_passes == 3 * (4 * (1 + 2) + 5)
    assert t.counters.as_dict()["target_passes_total"] == t.counters.train_passage_passes
    # the drift targets are the sampled passages' fresh embeddings: the encoder, no gradient
    t.encoder.eval()  # no dropout, so the two embeddings can be compared
    sample_rows, sample_fresh = ct.draw_drift_sample()
    assert not sample_fresh.requires_grad and len(set(sample_rows.tolist())) == 5
    with torch.no_grad():
        again = t.encoder.embed([t.data.doc_texts[int(r)] for r in sample_rows], "passage", max_len=t.passages.max_len)
    assert torch.allclose(again.float(), sample_fresh, atol=1e-4)
    # strategies without a corrector in use spend nothing on it
    p = _params(params, steps=3, eval_every=0, negatives={"strategy": "stale"}, corrector={"drift_sample": 5})
    stale = Trainer(Encoder.from_params(params["model"]), ds, cache, clusters, p, seed=3)
    stale.step(1)
    assert stale.counters.drift_sample_passes == 0 and stale.counters.train_passage_passes == 4 * 3


def _same_state(a, b) -> bool:
    """Equal optimiser state dicts (tensors compared by value)."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_state(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same_state(x, y) for x, y in zip(a, b))
    return torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b


def test_refit_fits_the_corrector_on_a_fresh_sample_and_counts_it(tiny):
    """refit_every=2, refit_sample=6: after step 2 (not after the last step), six random
    non-probe passages are embedded with the current g, the corrector is fitted on them and
    tracks g better there; the six passes are counted, the batches are those of the plain run."""
    from freshen.training.loop import Trainer

    ds, cache, clusters, params = tiny
    refit = {"refit_every": 2, "refit_sample": 6, "refit_epochs": 30}
    p = _params(params, steps=4, eval_every=0, lr=5e-3, negatives={"strategy": "corrected"}, corrector=refit)
    fitted = []

    class Watch(Recorder):  # the corrector and its online optimiser's state before the refit, and its record
        def before_refit(self, step, ct):
            self.before = (
                {k: v.clone() for k, v in ct.corrector.state_dict().items()},
                copy.deepcopy(ct.opt.state_dict()),
            )

        def after_refit(self, step, ct, record):
            assert _same_state(ct.opt.state_dict(), self.before[1])  # the refit has its own optimiser
            fitted.append((step, self.before, {k: record[k] for k in ("refit_cos_before", "refit_cos_after")}))

    rec, rec_plain = Watch(), Recorder()
    t = Trainer(Encoder.from_params(params["model"]), ds, cache, clusters, p, seed=3, hooks=[rec])
    plain = Trainer(
        Encoder.from_params(params["model"]),
        ds,
        cache,
        clusters,
        _params(
            params,
            steps=4,
            eval_every=0,
            lr=5e-3,
            negatives={"strategy": "corrected"},
            corrector={**refit, "refit_every": 0},
        ),
        seed=3,
        hooks=[rec_plain],
    )
    res, res_plain = t.run(), plain.run()
    assert rec.batches == rec_plain.batches and len(rec.batches) == 4
    assert [step for step, _, _ in fitted] == [2]
    step, (before_state, _), rec = fitted[0]
    assert (
        rec["refit_cos_after"] > rec["refit_cos_before"] and res.curve[1]["refit_cos_after"] == rec["refit_cos_after"]
    )
    assert any(not torch.equal(before_state[k], v) for k, v in t.corrector.state_dict().items())
    assert res.counters.drift_sample_passes == 6 and res_plain.counters.drift_sample_passes == 0
    assert res.counters.train_passage_passes == res_plain.counters.train_passage_passes + 6 == 4 * 4 * (1 + 2) + 6
    with pytest.raises(FreshenError, match="train.corrector.refit_sample: must be > 0 when refit_every is set"):
        train_params({"corrector": {"refit_every": 5}})
    with pytest.raises(FreshenError, match="train.corrector.refit_epochs: Input should be greater than or equal to 1"):
        train_params({"corrector": {"refit_every": 5, "refit_sample": 10, "refit_epochs": 0}})


def test_fresh_overlay_ranks_recent_passages_by_their_fresh_embedding(tiny):
    """fresh_overlay_steps: a passage trained on in the last N steps is ranked by the embedding
    that step computed, not by h(C[d]); same batches, no extra passes, no positive picked."""
    from freshen.training.loop import Trainer

    ds, cache, clusters, params = tiny
    trainers, recs = [], []
    for steps in (0, 3):
        p = _params(
            params,
            steps=4,
            eval_every=0,
            negatives={
                "strategy": "corrected",
                "fresh_overlay_steps": steps,
                "candidates": 10,
                "false_negatives": {"relative_margin": None},
            },
            corrector={"warmup_steps": 0},
        )
        recs.append(Recorder())
        t = Trainer(Encoder.from_params(params["model"]), ds, cache, clusters, p, seed=3, hooks=[recs[-1]])
        for step in range(1, 5):
            t.step(step)
        trainers.append(t)
    plain, overlay = trainers
    # every step re-ranked: the corrector samples from step 1 (no warm-up) and the overlay is on
    assert recs[0].batches == recs[1].batches and all(c is not None for c in recs[1].correctors)
    assert overlay.counters.train_passage_passes == plain.counters.train_passage_passes == 4 * 4 * (1 + 2)
    for qids, rows in recs[1].picked:
        assert rows.shape == (4, 2)
        assert all(not set(rows[i].tolist()) & set(overlay.data.pos_rows[q]) for i, q in enumerate(qids))
    fresh = overlay.negatives.overlay
    assert (fresh.step == 4).sum() > 0 and plain.negatives.overlay is None
    # the rerank itself: a candidate embedded along the query within N steps wins; an older
    # embedding is ignored (the row is ranked through h as if it had none)
    q = torch.nn.functional.normalize(torch.randn(2, cache.dim, generator=torch.Generator().manual_seed(0)), dim=-1)
    cand = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]])
    fresh.step[:8] = -(10**9)
    without = fresh.rerank(9, q, cand, 2, overlay.scorer, overlay.corrector)
    fresh.table[3], fresh.step[3] = (10 * q[0]).half(), 9 - 3
    fresh.table[7], fresh.step[7] = (10 * q[1]).half(), 9 - 4
    rows = fresh.rerank(9, q, cand, 2, overlay.scorer, overlay.corrector)
    assert without[0, 0] != 3 and rows[0, 0] == 3 and torch.equal(rows[1], without[1])
    no_filter = {"relative_margin": None}
    with pytest.raises(FreshenError, match="train.negatives.fresh_overlay_steps: works with selection 'topk' only"):
        train_params({"negatives": {"fresh_overlay_steps": 2, "selection": "gumbel", "false_negatives": no_filter}})
    with pytest.raises(FreshenError, match="train.negatives.fresh_overlay_steps: works without false-negative control"):
        train_params({"negatives": {"fresh_overlay_steps": 2, "false_negatives": {**no_filter, "range_min": 1}}})


@pytest.mark.parametrize("selection", ["gumbel", "balanced"])
def test_sampled_selection_keeps_the_batches_of_topk(tiny, selection):
    """Gumbel and balanced picks draw from their own random streams, so an arm that samples its
    negatives trains on the same batches (and positives) as the top-k arm it is compared with."""
    from freshen.training.loop import Trainer

    ds, cache, clusters, params = tiny
    seen, picked = [], []
    for sel in ("topk", selection):
        # no false-negative filter: a random-weight model scores every passage near the positive
        p = _params(
            params,
            steps=4,
            eval_every=0,
            negatives={
                "strategy": "stale",
                "selection": sel,
                "beta": 1.0,
                "candidates": 10,
                "bins": 3,
                "false_negatives": {"relative_margin": None},
            },
        )
        rec = Recorder()
        t = Trainer(Encoder.from_params(params["model"]), ds, cache, clusters, p, seed=3, hooks=[rec])
        for step in range(1, 5):
            t.step(step)
        seen.append(rec.batches)
        picked.append(torch.cat([rows for _, rows in rec.picked]))
    assert len(seen[0]) == 4 and seen[0] == seen[1]
    assert not torch.equal(picked[0], picked[1])  # the sampled arm did pick other negatives


@pytest.mark.parametrize("target", ["fresh", "positive"])
def test_cross_entropy_term_trains_the_corrector(tiny, target):
    """ce_weight > 0 adds the corrected-logits term: same batches, a different corrector."""
    from freshen.training.loop import Trainer

    ds, cache, clusters, params = tiny
    trainers = []
    for weight in (0.0, 1.0):
        cor = {"ce_weight": weight, "ce_target": target}
        p = _params(params, steps=3, eval_every=0, negatives={"strategy": "corrected"}, corrector=cor)
        t = Trainer(Encoder.from_params(params["model"]), ds, cache, clusters, p, seed=3)
        records = [t.step(s) for s in (1, 2, 3)]
        assert all(("corrector_ce" in r) == (weight > 0) for r in records)
        trainers.append(t)
    plain, with_ce = (dict(t.corrector.named_parameters()) for t in trainers)
    assert any(not torch.equal(plain[k], with_ce[k]) for k in plain)


@pytest.mark.parametrize(
    "changes, message",
    [
        (
            {"negatives": {"strategy": "stale", "refresh_every": 10}},
            "train.negatives.refresh_every: strategy 'stale' never refreshes",
        ),
        ({"corrector": {"arch": "transformer"}}, "train.corrector.arch: Input should be 'linear' or 'residual_mlp'"),
        (
            {"corrector": {"replay_steps": 0}},
            "train.corrector.replay_steps: Input should be greater than or equal to 1",
        ),
        (
            {"corrector": {"drift_sample": -1}},
            "train.corrector.drift_sample: Input should be greater than or equal to 0",
        ),
        ({"corrector": {"ce_target": "teacher"}}, "train.corrector.ce_target: Input should be 'fresh' or 'positive'"),
        ({"corrector": {"ce_weight": "1"}}, "train.corrector.ce_weight: Input should be a valid number, got '1'"),
        ({"corrector": {"updates_per_step": 2.5}}, "train.corrector.updates_per_step: Input should be a valid integer"),
        ({"corrector": {"normalize": "yes"}}, "train.corrector.normalize: Input should be a valid boolean, got 'yes'"),
    ],
)
def test_param_errors_before_training(changes, message):
    with pytest.raises(FreshenError) as err:
        train_params({}, **changes)
    assert message in str(err.value)


def test_teacher_file_is_validated(tiny_beir, tmp_path):
    ds = load_beir(tiny_beir)
    good = tmp_path / "t.tsv"
    good.write_text("query-id\tdoc-id\tscore\nq0\td0\t9.5\nq0\td1\t1.0\n")
    assert read_teacher_scores(good, ds.corpus, ds.queries) == {"q0": {"d0": 9.5, "d1": 1.0}}
    for body, pattern in [
        ("q0\tzz\t1\n", r"t\.tsv:1: field 'doc-id': unknown document id 'zz'"),
        ("q0\td0\t1\nqq\td0\t1\n", r"t\.tsv:2: field 'query-id'"),
        ("q0\td0\t1\nq0\td1\thigh\n", r"t\.tsv:2: field 'score': must be a number"),
        ("q0\td0\tnan\n", r"field 'score': must be finite"),
        # line 1 with known ids is data, not a header: its bad score is an error
        ("q0\td0\thigh\nq0\td1\t2.0\n", r"t\.tsv:1: field 'score': must be a number"),
    ]:
        good.write_text(body)
        with pytest.raises(DataError, match=pattern):
            read_teacher_scores(good, ds.corpus, ds.queries)


def test_overlap_with_a_fresh_cache_is_whole_until_the_encoder_drifts(tiny):
    """The training-time overlap measure: while the encoder is the one that made the cache, the
    cached and corrected top-k lists over the passage sample are the fresh ones (1.0); once its
    weights move, the cached lists lose part of the fresh ones."""
    from freshen.training.loop import Trainer

    ds, cache, clusters, params = tiny
    t = Trainer(Encoder.from_params(params["model"]), ds, cache, clusters, _params(params), seed=3)
    still = t.validate(1)
    assert still["overlap_stale_fresh"] == pytest.approx(1.0)
    assert still["overlap_corrected_fresh"] == pytest.approx(1.0)  # h starts as the identity
    torch.manual_seed(0)
    with torch.no_grad():
        for weight in t.encoder.parameters():
            weight.add_(0.2 * weight.std() * torch.randn_like(weight))
    moved = t.validate(2)
    assert moved["overlap_stale_fresh"] < 0.95  # 0.85 here
    assert moved["overlap_corrected_fresh"] == pytest.approx(moved["overlap_stale_fresh"])  # still the identity
    assert t.counters.probe_passes == 2 * (8 + 30)


def test_margin_mse_matches_its_formula():
    from freshen.training.losses import margin_mse

    q = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    pos = torch.tensor([[0.5, 0.5], [1.0, 1.0]])
    neg = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    teacher = torch.tensor([3.0, 1.0])
    # student margins x scale 10: (0.5 - 0) * 10 = 5 and (2 - 0) * 10 = 20
    expected = ((5.0 - 3.0) ** 2 + (20.0 - 1.0) ** 2) / 2
    assert float(margin_mse(q, pos, neg, teacher, 10.0)) == pytest.approx(expected)


def test_teacher_file_must_cover_every_training_query(tiny):
    """Balanced margin sampling draws from the teacher's scored candidates: a training query
    without a scored positive or without a scored non-positive stops the run before step 1."""
    ds, cache, clusters, params = tiny
    teacher = {
        q: {**{d: 10.0 for d in docs}, **{d: 1.0 for d in ds.doc_ids()[:12] if d not in docs}}
        for q, docs in ds.positives("train").items()
    }
    gap = sorted(teacher)[1]
    teacher[gap] = {d: v for d, v in teacher[gap].items() if d in ds.positives("train")[gap]}  # positives only
    with pytest.raises(FreshenError, match=f"train.teacher.scores.*1 of .*'{gap}'"):
        train(Encoder.from_params(params["model"]), ds, cache, clusters, _params(params), seed=3, teacher=teacher)


def test_teacher_margin_mse_trains(tiny, tmp_path):
    ds, cache, clusters, params = tiny
    teacher = {}
    for q, docs in ds.positives("train").items():
        teacher[q] = {d: 10.0 for d in docs}
        teacher[q].update({d: float(i % 5) for i, d in enumerate(ds.doc_ids()[:12]) if d not in docs})
    p = _params(params, steps=4, eval_every=0)
    rec = Recorder()
    res = train(Encoder.from_params(params["model"]), ds, cache, clusters, p, seed=3, teacher=teacher, hooks=[rec])
    assert all(np.isfinite(r["loss"]) for r in res.curve)
    assert res.counters.train_passage_passes == 4 * 4 * 3
    # the negatives are the teacher's scored non-positives (12 of 60 documents), never the cache's
    doc_ids, positives = cache.ids, ds.positives("train")
    picked = [(q, doc_ids[r]) for qids, rows in rec.picked for q, row in zip(qids, rows.tolist()) for r in row]
    assert len(picked) == 4 * 4 * 2
    assert all(d in teacher[q] and d not in positives[q] for q, d in picked)
