"""benchmarks/corrector_ceiling.py: its helpers pick negatives without positives, count overlap
right, start the wide corrector at the identity and fit a drift it can see, and pool every
layer of the encoder in order."""

import pytest
import torch
from bench import load_benchmark

from freshen.modeling.encoder import Encoder, pool
from freshen.training.losses import drift_loss


def test_topk_excluding_skips_banned_columns_and_overlap_counts_shared_rows():
    ceiling = load_benchmark("corrector_ceiling")
    scores = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 3.0, 4.0, 5.0]])
    top = ceiling.topk_excluding(scores, [[0], [4, 3]], 2)
    assert top.tolist() == [[1, 2], [2, 1]]
    assert scores[0, 0] == 5.0  # the caller's scores are left as they were
    assert ceiling.overlap(top, torch.tensor([[2, 9], [1, 2]])) == 0.75  # 1/2 and 2/2


def test_wide_corrector_starts_at_the_stale_cache_and_learns_a_drift_only_its_input_shows():
    ceiling = load_benchmark("corrector_ceiling")
    gen = torch.Generator().manual_seed(0)
    n, d, extra = 400, 8, 8
    stale = torch.randn(n, d, generator=gen)
    hidden = torch.randn(n, extra, generator=gen)  # what the stale embedding does not hold
    fresh = stale + hidden @ torch.randn(extra, d, generator=gen) * 0.5
    wide = torch.cat([hidden, stale], 1)
    h = ceiling.WideCorrector(wide.shape[1], d, hidden=32, depth=1)
    assert torch.equal(h(wide, stale), stale)  # identity before any fit
    rows = torch.arange(300)
    fitted_wide = ceiling.fit(wide, stale, fresh, rows, 64, 1, epochs=150, seed=0)
    fitted_last = ceiling.fit(stale, stale, fresh, rows, 64, 1, epochs=150, seed=0)
    held = torch.arange(300, n)
    with torch.no_grad():
        start = float(drift_loss(stale[held], fresh[held]))
        wide_loss = float(drift_loss(fitted_wide(wide[held], stale[held]), fresh[held]))
        last_loss = float(drift_loss(fitted_last(stale[held], stale[held]), fresh[held]))
    assert wide_loss < 0.5 * start  # it cuts the held-out error ...
    assert wide_loss < 0.5 * last_loss  # ... which the stale embedding alone cannot


def test_layer_states_pool_every_layer_in_order(tiny_params):
    ceiling = load_benchmark("corrector_ceiling")
    encoder = Encoder.from_params(tiny_params["model"]).eval()
    texts = ["alpha beta gamma", "delta", "epsilon zeta eta theta iota"]
    states = ceiling.layer_states(encoder, texts, max_len=16)
    layers = encoder.passage_model.config.num_hidden_layers
    assert states.shape == (3, (layers + 1) * encoder.dim) and states.dtype == torch.float16
    batch = encoder.tokenize(texts, "passage", 16)
    with torch.no_grad():
        out = encoder.passage_model(**batch, output_hidden_states=True).hidden_states
    for i, block in enumerate(out):
        expected = pool(block, batch["attention_mask"], "mean")
        got = states[:, i * encoder.dim:(i + 1) * encoder.dim].float()
        assert torch.allclose(got, expected, atol=2e-2, rtol=2e-2), f"layer {i}"


def test_memo_computes_once_per_model_and_leaves_no_partial_file(tmp_path):
    ceiling = load_benchmark("corrector_ceiling")
    model_a, model_b = tmp_path / "a", tmp_path / "b"
    for folder, value in ((model_a, "1"), (model_b, "2")):
        folder.mkdir()
        (folder / "config.json").write_text(value)
    calls = []

    def make():
        calls.append(1)
        return torch.full((2, 3), float(len(calls)))

    work = tmp_path / "work"
    first = ceiling.memo(work, "fresh160", str(model_a), make)
    again = ceiling.memo(work, "fresh160", str(model_a), make)
    other = ceiling.memo(work, "fresh160", str(model_b), make)
    assert len(calls) == 2 and torch.equal(first, again) and not torch.equal(first, other)
    assert sorted(p.name.split("-")[0] for p in work.iterdir()) == ["fresh160", "fresh160"]  # no .tmp left

    def broken():
        raise RuntimeError("stopped mid-pass")

    with pytest.raises(RuntimeError):
        ceiling.memo(work, "queries", str(model_a), broken)
    assert not any("queries" in p.name for p in work.iterdir())
