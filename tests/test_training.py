"""Training on tiny data: forward-pass accounting, no positive as a negative, determinism."""

from pathlib import Path

import numpy as np
import pytest
import torch
from freshen.errors import FreshenError
from freshen.modeling.encoder import Encoder
from freshen.params import validate_params
from freshen.training.loop import train
from recorder import Recorder
from tiny import train_params


@pytest.fixture()
def setup(tiny_training):
    return tiny_training


def _train(setup, **neg):
    ds, cache, clusters, params = setup
    p = train_params(params["train"], negatives=neg, precision="fp32")
    enc = Encoder.from_params(params["model"])
    return train(enc, ds, cache, clusters, p, seed=5), p


@pytest.mark.parametrize("strategy,per_query", [("in_batch", 1), ("stale", 3), ("corrected", 3)])
def test_forward_passes_match_the_strategy(setup, strategy, per_query):
    res, p = _train(setup, strategy=strategy)
    steps, b = p.steps, p.batch_size
    assert res.counters.train_passage_passes == steps * b * per_query
    assert res.counters.reembed_passes == 0 and res.counters.refreshes == 0
    assert (res.corrector is None) == (strategy == "in_batch")
    assert len(res.curve) == steps and all(np.isfinite(r["loss"]) for r in res.curve)


@pytest.mark.parametrize(
    "strategy,selection,refresh",
    [
        ("stale", "topk", 0),
        ("stale", "gumbel", 0),
        ("corrected", "topk", 0),
        ("corrected", "balanced", 0),
        ("refresh", "topk", 2),
        ("corrected", "gumbel", 3),
    ],
)
def test_no_positive_is_ever_selected_as_a_negative(setup, strategy, selection, refresh):
    """Every query's judged positives (all of them, not only the one its step trains on) stay
    out of its negatives, whatever the index (stale, corrected, refreshed) and the selection."""
    from freshen.training.loop import Trainer

    ds, cache, clusters, params = setup
    neg = {"strategy": strategy, "selection": selection, "refresh_every": refresh, "candidates": 20, "beta": 1.0}
    p = train_params(params["train"], negatives=neg, precision="fp32", steps=8, eval_every=0)
    rec = Recorder()
    t = Trainer(Encoder.from_params(params["model"]), ds, cache, clusters, p, seed=5, hooks=[rec])
    positives = ds.positives("train")
    seen = 0
    for step in range(1, 9):
        t.step(step)
        qids, neg_rows = rec.picked[-1]
        assert neg_rows.shape == (len(qids), p.negatives.k)
        for q, rows in zip(qids, neg_rows.tolist()):
            assert not {t.data.doc_ids[r] for r in rows} & set(positives[q]), (step, q)
            assert len(set(rows)) == len(rows)  # no negative twice
        seen += neg_rows.numel()
        if refresh and step % refresh == 0:
            t.refresh(step)
    assert seen == 8 * p.batch_size * p.negatives.k


def test_corrector_drives_sampling_only_after_its_warmup(setup):
    """warmup_steps=3: the first 3 steps select from the stale cache (no corrector handed to the
    scorer) while the corrector already trains; from step 4 on the corrected cache is scored."""
    from freshen.training.loop import Trainer

    ds, cache, clusters, params = setup
    p = train_params(
        params["train"],
        precision="fp32",
        steps=6,
        eval_every=0,
        negatives={"strategy": "corrected"},
        corrector={"warmup_steps": 3},
    )
    rec = Recorder()
    t = Trainer(Encoder.from_params(params["model"]), ds, cache, clusters, p, seed=5, hooks=[rec])
    losses = [t.step(s).get("corrector_loss") for s in range(1, 7)]
    handed = rec.correctors
    assert [c is t.corrector for c in handed] == [False, False, False, True, True, True]
    assert handed[:3] == [None, None, None]
    assert all(loss is not None for loss in losses)  # it learns during the warm-up too


def test_refresh_counts_reembedding_passes(setup):
    res, p = _train(setup, strategy="refresh", refresh_every=2)
    n_docs = len(setup[1])
    refreshes = len([s for s in range(1, p.steps) if s % 2 == 0])
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


def test_only_a_corrector_that_maps_the_stale_cache_is_saved():
    from freshen.steps.train import corrector_not_saved

    def saved(**negatives):
        return corrector_not_saved(train_params({"negatives": negatives}))

    assert saved(strategy="corrected", refresh_every=0) is None
    assert "does not sample" in saved(strategy="stale")
    assert "last refreshed cache" in saved(strategy="corrected", refresh_every=5)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"negatives": {"strategy": "ance"}}, "train.negatives.strategy: Input should be 'in_batch', "),
        ({"negatives": {"selection": "best"}}, "train.negatives.selection: Input should be 'topk', "),
        ({"batching": "topic"}, "train.batching: Input should be 'tas' or 'random', got 'topic'"),
        ({"overlap_k": 2.5}, "train.overlap_k: Input should be a valid integer, got 2.5"),
    ],
)
def test_bad_params_fail_before_training(changes, message):
    """The trainer takes a section the schema validated: bad values never reach it."""
    with pytest.raises(FreshenError) as err:
        train_params({"negatives": {"strategy": "stale"}}, **changes)
    assert message in str(err.value)


@pytest.mark.parametrize("steps", [0, -5, 2.5, "ten", True, None])
def test_train_steps_must_be_a_positive_integer(steps):
    # with the pilot on too: train.steps is blamed, not the pilot's steps compared with it
    for pilot in ({"candidates": []}, {"steps": 2, "candidates": [{}, {"lr": 1e-4}]}):
        with pytest.raises(FreshenError) as err:
            train_params({"steps": steps, "pilot": pilot})
        message = str(err.value)
        assert message.startswith("test params: train.steps: Input should be ") and message.endswith(f"{steps!r}")


@pytest.fixture()
def project(tmp_path, tiny_params):
    """A project with prepared data, clusters and the initial cache (what `train` reads), and a
    one-step model trained there; the pilot off, so that each train run trains once."""
    from freshen.steps import cluster_queries, embed_cache, prepare
    from freshen.steps import train as train_step

    root = tmp_path / "proj"
    root.mkdir()
    tiny_params["train"]["pilot"]["candidates"] = []
    tiny_params["train"]["steps"] = 1
    for step in (prepare, cluster_queries, embed_cache, train_step):
        step.run(validate_params(tiny_params), root)
    return root, tiny_params


def snapshot(*paths: Path) -> dict:
    """Every file under `paths`, as bytes."""
    out = {}
    for p in paths:
        for f in [p] if p.is_file() else sorted(p.rglob("*")):
            if f.is_file():
                out[str(f)] = f.read_bytes()
    return out


@pytest.mark.parametrize("steps", [0, -5])
def test_a_refused_train_leaves_the_previous_model_byte_identical(project, steps, capsys):
    import yaml
    from freshen.cli import main

    root, params = project
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    model = root / params["train"]["out_dir"]
    outputs = (model, root / params["train"]["metrics"], root / params["train"]["curve"])
    before = snapshot(*outputs)
    assert any(name.endswith("model.safetensors") for name in before)
    siblings = sorted(p.name for p in model.parent.iterdir())
    assert main(["train", "--root", str(root), "--set", f"train.steps={steps}"]) == 2
    assert f"--set train.steps: Input should be greater than or equal to 1, got {steps}" in capsys.readouterr().err
    assert snapshot(*outputs) == before
    assert sorted(p.name for p in model.parent.iterdir()) == siblings  # no temporary, no lock left


def test_train_clears_what_a_killed_save_left_and_not_a_live_runs_work(project, tmp_path):
    """A kill while the model is saved leaves `.model.<pid>.<rand>.tmp` (45 MB for MiniLM); the
    next train removes it once it holds the model's lock, and leaves a live process's alone."""
    import subprocess
    import sys

    from freshen.steps import train as train_step

    root, params = project
    model = root / params["train"]["out_dir"]
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        stale = model.with_name(f".model.{dead.pid}.0badc0de.tmp")
        busy = model.with_name(f".model.{live.pid}.0badc0de.tmp")
        for tmp in (stale, busy):
            (tmp / "encoder").mkdir(parents=True)
            (tmp / "encoder" / "model.safetensors").write_bytes(b"half")
        train_step.run(validate_params(params), root)
        assert not stale.exists()
        assert (busy / "encoder" / "model.safetensors").read_bytes() == b"half"
        assert (model / "encoder" / "model.safetensors").is_file()
    finally:
        live.kill()
        live.wait()


def test_validation_leaves_out_dev_queries_without_a_relevant_judgement(setup, caplog):
    """A dev query judged only 0 scores 0 for any model: it is left out of dev nDCG@10 (which
    keep_best, the pilot and promotion read), not averaged in."""
    from freshen.data.beir import BeirDataset
    from freshen.training.loop import Trainer

    ds, cache, clusters, params = setup
    p = train_params(params["train"], precision="fp32")
    judged = Trainer(Encoder.from_params(params["model"]), ds, cache, clusters, p, seed=5).validate(0)
    unjudged = {"q40": {"d40": 0}, "q41": {"d41": 0, "d0": 0}}
    padded = BeirDataset(ds.root, ds.corpus, ds.queries, {**ds.qrels, "dev": {**ds.qrels["dev"], **unjudged}})
    with caplog.at_level("WARNING"):
        trainer = Trainer(Encoder.from_params(params["model"]), padded, cache, clusters, p, seed=5)
    assert trainer.validate(0)["dev_ndcg_at_10"] == pytest.approx(judged["dev_ndcg_at_10"], abs=1e-6)
    assert judged["dev_ndcg_at_10"] > 0  # so averaging in two zeros would have shown
    assert any(
        "dev.tsv: 2 queries have no relevant judgement (score > 0); left out of evaluation" in r.getMessage()
        for r in caplog.records
    )
