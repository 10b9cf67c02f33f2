"""The trainer's parts on their own: the negatives source (ANN candidates against exact search,
selection), the corrector trainer's schedule, the refresher's, the best-checkpoint bookkeeping,
and hooks that observe a run without changing it."""

import itertools
import types

import numpy as np
import pytest
import torch
from freshen.modeling.encoder import Encoder
from freshen.params.train import CorrectorParams
from freshen.sampling.selection import Selection, balanced, gumbel_keys
from freshen.training import loop
from freshen.training.corrector_trainer import CorrectorTrainer
from freshen.training.data import Counters
from freshen.training.loop import Trainer, train
from freshen.training.refresher import Refresher
from freshen.training.validator import BestCheckpoint
from recorder import Recorder
from tiny import make_tiny_bert, train_params


def _params(params, **neg):
    return train_params(params["train"], precision="fp32", steps=4, eval_every=2, negatives=neg)


def _same_run(a, b) -> bool:
    same_weights = all(
        torch.equal(x, y) for x, y in zip(a.encoder.state_dict().values(), b.encoder.state_dict().values())
    )
    drop = ("wall_seconds",)
    curve = [{k: v for k, v in r.items() if k not in drop} for r in a.curve]
    return same_weights and curve == [{k: v for k, v in r.items() if k not in drop} for r in b.curve]


@pytest.mark.parametrize("selection", ["topk", "balanced"])
def test_ann_candidates_covering_the_corpus_train_like_exact_search(tiny_training, selection):
    """An exact (flat) ANN index searched for every row hands selection the candidates exact
    search finds, so training follows the same path: same negatives, same weights, same curve."""
    ds, cache, clusters, params = tiny_training
    off = {"relative_margin": None, "absolute_margin": None, "range_min": 0}
    runs, picked, indexed = [], [], []
    for ann in ({}, {"ann_threshold": 10, "ann_index": "Flat", "ann_candidates": len(cache)}):
        rec = Recorder()
        p = _params(params, selection=selection, candidates=10, bins=3, false_negatives=off, **ann)
        t = Trainer(Encoder.from_params(params["model"]), ds, cache, clusters, p, seed=3, hooks=[rec])
        runs.append(t.run())
        indexed.append(t.scorer.index is not None)
        picked.append(torch.cat([rows for _, rows in rec.picked]))
    assert indexed == [False, True]
    assert torch.equal(picked[0], picked[1]) and _same_run(*runs)


def test_a_hook_observes_a_run_without_changing_it(tiny_training):
    ds, cache, clusters, params = tiny_training
    p = _params(params)
    rec = Recorder()
    watched = train(Encoder.from_params(params["model"]), ds, cache, clusters, p, seed=3, hooks=[rec])
    plain = train(Encoder.from_params(params["model"]), ds, cache, clusters, p, seed=3)
    assert _same_run(watched, plain)
    assert len(rec.batches) == len(rec.picked) == len(rec.samples) == p.steps
    assert all(rows.shape == (p.batch_size, p.negatives.k) for _, rows in rec.picked)
    # the corrector samples once past its warm-up (2 steps in the tiny params)
    assert [c is not None for c in rec.correctors] == [False, False, True, True]


def test_corrector_schedule_restarts_with_a_refresh():
    ct = CorrectorTrainer(
        CorrectorParams(warmup_steps=2, hidden=8, drift_sample=3), 8, True, [1, 2, 3], 10, 0, 0.05, None, Counters()
    )
    assert [ct.correcting(s) for s in (1, 2, 3)] == [False, False, True]
    with torch.no_grad():
        next(ct.corrector.parameters()).add_(1.0)
    ct.replay.append((torch.tensor([0]), torch.zeros(1, 8)))
    old = ct.corrector
    ct.restart(5, 8)
    assert ct.corrector is not old and not ct.replay
    assert [ct.correcting(s) for s in (7, 8)] == [False, True]  # the warm-up counts from the refresh
    x = torch.randn(4, 8)
    assert torch.equal(ct.corrector(x), x)  # a new corrector starts as the identity
    drawn = torch.cat([ct.sample_rows(3) for _ in range(20)]).tolist()
    assert not set(drawn) & {1, 2, 3} and set(drawn) <= set(range(10))  # probes are never sampled
    offline = CorrectorTrainer(
        CorrectorParams(warmup_steps=0, hidden=8, drift_sample=3, refit_every=2, refit_sample=4),
        8,
        False,
        [],
        10,
        0,
        0.05,
        None,
        Counters(),
    )
    assert not offline.correcting(5) and offline.drift_sample == 0 and not offline.refit_due(2, 10)


@pytest.mark.parametrize(
    "cor", [CorrectorParams(arch="linear", normalize=True, lr=5e-4), CorrectorParams(hidden=12, depth=2, lr=2e-3)]
)
def test_the_corrector_and_its_optimiser_are_built_as_its_params_say(cor):
    ct = CorrectorTrainer(cor, 8, True, [], 10, 0, 0.05, None, Counters())
    h = ct.corrector
    assert (h.dim, h.arch, h.normalize) == (8, cor.arch, cor.normalize)
    if cor.arch == "residual_mlp":
        assert (h.hidden, h.depth) == (cor.hidden, cor.depth) and len(h.mlp) == 2 * cor.depth + 1
    assert [g["lr"] for g in ct.opt.param_groups] == [cor.lr]


def test_refresh_is_due_every_n_steps_but_not_after_the_last():

    r = Refresher(2, 6, None, None, Counters())
    assert [s for s in range(1, 7) if r.due(s)] == [2, 4]
    assert not any(Refresher(0, 6, None, None, Counters()).due(s) for s in range(1, 7))


def test_best_checkpoint_keeps_the_best_weights_and_counts_evaluations_without_gain():
    encoder, corrector = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    best = BestCheckpoint(patience=2)
    best.observe(0, {"step": 0}, encoder, corrector)  # no dev score: nothing kept
    assert best.state is None and best.step is None
    for step, score in ((1, 0.5), (2, 0.7), (3, 0.6)):
        with torch.no_grad():
            encoder.weight.fill_(score)
            corrector.bias.fill_(score)
        best.observe(step, {"dev_ndcg_at_10": score}, encoder, corrector)
    assert best.step == 2 and best.bad == 1 and not best.stop
    best.observe(4, {"dev_ndcg_at_10": 0.7}, encoder, corrector)  # a tie is no gain
    assert best.stop and best.step == 2
    best.restore(encoder, corrector)
    assert torch.all(encoder.weight == 0.7) and torch.all(corrector.bias == 0.7)
    assert not BestCheckpoint(patience=0).stop


def test_selection_keys_and_balanced_picks():
    scores = torch.tensor([[3.0, 1.0, float("-inf"), 2.0]])
    assert torch.equal(Selection("topk").keys(scores, None), scores)
    keys = Selection("gumbel", beta=2.0).keys(scores, torch.Generator().manual_seed(0))
    assert torch.equal(keys, gumbel_keys(2.0 * scores, torch.Generator().manual_seed(0)))
    assert torch.isneginf(keys[0, 2]) and torch.isfinite(keys[0, [0, 1, 3]]).all()
    rows = torch.tensor([[10, 11, 12, 13]])
    rng = np.random.default_rng(0)
    for _ in range(20):  # a -inf score is no candidate: never picked
        picks = balanced(rows, scores, torch.tensor([4.0]), 2, 2, rng)
        assert picks.shape == (1, 2) and 12 not in picks.tolist()[0] and len(set(picks.tolist()[0])) == 2


def test_trainer_exposes_its_parts(tiny_training):
    """What the steps and a debugger reach: the parts a run is made of."""
    ds, cache, clusters, params = tiny_training
    t = Trainer(Encoder.from_params(params["model"]), ds, cache, clusters, _params(params), seed=3)
    assert t.corrector is t.corrector_trainer.corrector and t.scorer is t.negatives.scorer
    assert t.corrector_trainer.probe_set == set(t.validator.probe_rows)
    assert t.refresher.corrector_trainer is t.corrector_trainer


def test_bulk_encoding_in_training_takes_the_encode_sections_batch_size_and_token_budget(tiny_params, monkeypatch):
    """Refreshes, refits and measurement encode like embed_cache does: `encode.batch_size` and
    `encode.max_tokens` plan their batches (issue 27: the budget did not reach the trainer)."""
    from freshen import encoding
    from freshen.params import EncodeParams
    from freshen.training.passages import Passages

    planned, real = [], encoding.plan_batches

    def spy(lengths, batch_size, max_tokens=None):
        planned.append((batch_size, max_tokens))
        return real(lengths, batch_size, max_tokens)

    monkeypatch.setattr(encoding, "plan_batches", spy)
    texts = [f"passage {i} " + "word " * (i % 7) for i in range(12)]
    passages = Passages(
        Encoder.from_params(tiny_params["model"]),
        texts,
        _params(tiny_params),
        EncodeParams(batch_size=5, max_tokens=40),
    )
    whole = passages.encode_all(passages.encoder.dim, "refresh")
    some = passages.encode([0, 3], "refit")
    probe = passages.measure([1, 2])
    assert planned == [(5, 40)] * 3
    np.testing.assert_allclose(some.numpy(), whole[[0, 3]], atol=1e-5)
    np.testing.assert_allclose(probe.numpy(), whole[[1, 2]], atol=1e-5)


class _TextsFromFile:
    """The dataset, its passage texts read from corpus.jsonl by byte offset (`CorpusFile`)."""

    def __init__(self, ds, path):
        from freshen.data.corpus_file import CorpusFile

        self.ds, self.file = ds, CorpusFile(path)

    def __getattr__(self, name):
        return getattr(self.ds, name)

    def doc_texts(self, ids):
        assert list(ids) == self.file.ids  # cache rows are the corpus file's positions
        return self.file


def test_a_mapped_cache_and_texts_read_from_the_file_train_exactly_as_in_memory(tiny_training, tiny_beir):
    """Past `negatives.memory_gb` the training-time cache is read from the cache file as rows are
    scored instead of copied, and passage texts can come from the corpus file by offset: neither
    changes a number of the run (issue 29: corpora larger than memory)."""
    ds, cache, clusters, params = tiny_training
    runs, tables, mapped = [], [], []
    for memory_gb, data in ((4.0, ds), (0.0, _TextsFromFile(ds, tiny_beir / "corpus.jsonl"))):
        t = Trainer(
            Encoder.from_params(params["model"]), data, cache, clusters, _params(params, memory_gb=memory_gb), seed=3
        )
        runs.append(t.run())
        tables.append(t.scorer.table[:].numpy())
        mapped.append(t.scorer.source is not None)
    assert mapped == [False, True]  # a copy, then rows read from the file
    assert np.array_equal(tables[0], tables[1])
    assert _same_run(*runs)
    # and the cache file itself is untouched by the run that read it
    assert np.array_equal(np.load(cache.path / "embeddings.npy"), tables[0])


def test_the_trainer_times_the_parts_of_its_steps(tiny_training, monkeypatch):
    ds, cache, clusters, params = tiny_training
    t = Trainer(Encoder.from_params(params["model"]), ds, cache, clusters, _params(params), seed=3)
    t.encoder.train()
    assert dict(t.timings) == {}
    ticks = itertools.count()  # a clock that moves one second each time the trainer reads it
    monkeypatch.setattr(loop, "time", types.SimpleNamespace(perf_counter=lambda: float(next(ticks))))
    t.step(1)
    first = dict(t.timings)
    # each timed part: one second a block; encode twice (queries, then passages), the corrector
    # twice (its drift sample, then its update)
    assert first == {"encode": 2.0, "negatives": 1.0, "corrector": 2.0, "backward": 1.0}
    t.step(2)
    assert dict(t.timings) == {k: 2 * v for k, v in first.items()}  # cumulative


def test_micro_batches_change_only_which_dropout_masks_are_drawn(tiny_training, tmp_path):
    """`train.micro_batch` embeds the batch a few queries (with their passages) a pass: without
    dropout, passes of one query train the model one pass of the whole batch trains (fp32: the
    same losses and weights up to summation order); with dropout, other masks, another model."""
    ds, cache, clusters, params = tiny_training
    runs = {}
    for dropout in (0.0, 0.1):
        model = {"name_or_path": str(make_tiny_bert(tmp_path / f"bert-{dropout}", dropout=dropout))}
        for micro in (None, 1):
            p = train_params(params["train"], precision="fp32", steps=3, eval_every=0, micro_batch=micro)
            runs[dropout, micro] = train(Encoder.from_params(model), ds, cache, clusters, p, seed=3)

    def apart(a, b):
        losses = max(abs(x["loss"] - y["loss"]) for x, y in zip(a.curve, b.curve, strict=True))
        weights = max(
            float((x - y).abs().max()) for x, y in zip(a.encoder.state_dict().values(), b.encoder.state_dict().values())
        )
        return losses, weights

    assert runs[0.0, None].curve[0]["loss"] > 0
    assert max(apart(runs[0.0, None], runs[0.0, 1])) < 1e-5
    assert apart(runs[0.1, None], runs[0.1, 1])[0] > 1e-3
