"""The corrector learns a known drift (a random rotation plus noise) and cuts its error."""

import pytest
import torch
from freshen.errors import FreshenError
from freshen.modeling.corrector import Corrector
from freshen.training.losses import drift_loss


def _drift(n=2000, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    stale = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=-1)
    rot, _ = torch.linalg.qr(torch.eye(d) + 0.3 * torch.randn(d, d, generator=g))
    fresh = stale @ rot.T + 0.01 * torch.randn(n, d, generator=g)
    return stale, fresh


def _fit_drift(h, stale, fresh):
    """The drift loss on held-out rows 1600-1999, before and after 400 Adam steps on rows 0-1599."""
    train, held = slice(0, 1600), slice(1600, 2000)
    with torch.no_grad():
        before = float(drift_loss(h(stale[held]), fresh[held]))
    opt = torch.optim.Adam(h.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(1)
    for _ in range(400):
        idx = torch.randint(0, 1600, (64,), generator=gen)
        loss = drift_loss(h(stale[train][idx]), fresh[train][idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return before, float(drift_loss(h(stale[held]), fresh[held]))


@pytest.mark.parametrize("arch", ["linear", "residual_mlp"])
def test_corrector_starts_as_identity_and_learns_rotation(arch):
    stale, fresh = _drift()
    h = Corrector(16, arch, hidden=64)
    assert torch.allclose(h(stale), stale)
    before, after = _fit_drift(h, stale, fresh)
    assert after < before / 5, (before, after)


@pytest.mark.parametrize("arch", ["linear", "residual_mlp"])
def test_normalized_corrector_stays_on_the_unit_sphere_and_learns_rotation(arch):
    stale, fresh = _drift()
    fresh = torch.nn.functional.normalize(fresh, dim=-1)
    h = Corrector(16, arch, hidden=64, normalize=True)
    assert torch.allclose(h(stale), stale, atol=1e-6)  # unit rows: still the identity at the start
    assert torch.allclose(h(3 * torch.randn(50, 16)).norm(dim=-1), torch.ones(50), atol=1e-5)
    assert not h.exact_on_stale
    with pytest.raises(ValueError, match="without normalize"):
        h.transform_query(torch.randn(2, 16))
    before, after = _fit_drift(h, stale, fresh)
    with torch.no_grad():
        assert torch.allclose(h(stale).norm(dim=-1), torch.ones(len(stale)), atol=1e-5)
    assert after < before / 5, (before, after)


def test_normalize_is_saved_and_old_folders_load_without_it(tmp_path):
    import json

    h = Corrector(8, "residual_mlp", hidden=12, normalize=True)
    with torch.no_grad():
        for p in h.parameters():
            p.add_(0.1)
    h.save(tmp_path / "c")
    loaded = Corrector.load(tmp_path / "c", expect_dim=8)
    x = torch.randn(3, 8)
    assert loaded.normalize and torch.allclose(loaded(x), h(x))
    cfg = json.loads((tmp_path / "c" / "corrector.json").read_text())
    del cfg["normalize"]  # a folder saved before the option existed
    (tmp_path / "c" / "corrector.json").write_text(json.dumps(cfg))
    old = Corrector.load(tmp_path / "c", expect_dim=8)
    assert not old.normalize and not torch.allclose(old(x).norm(dim=-1), torch.ones(3))


def test_save_load_and_dimension_check(tmp_path):
    h = Corrector(8, "residual_mlp", hidden=12, depth=2)
    with torch.no_grad():
        for p in h.parameters():
            p.add_(0.1)
    h.save(tmp_path / "c")
    x = torch.randn(3, 8)
    assert torch.allclose(Corrector.load(tmp_path / "c", expect_dim=8)(x), h(x))
    with pytest.raises(FreshenError, match=r"corrector\.json: field 'dim': corrector dimension 8 does not match .* 16"):
        Corrector.load(tmp_path / "c", expect_dim=16)
    with pytest.raises(FreshenError, match="arch"):
        Corrector(8, "transformer")


def test_corrected_logits_loss_targets_and_mask():
    from freshen.training.losses import contrastive_loss, corrected_logits_loss

    g = torch.Generator().manual_seed(2)
    q = torch.nn.functional.normalize(torch.randn(4, 16, generator=g), dim=-1)
    stale, fresh = _drift(n=12, seed=3)
    labels = torch.arange(4)
    mask = torch.zeros(4, 12, dtype=torch.bool)
    mask[0, 7] = True
    # 'positive' is the retriever's own loss with the corrected targets
    assert float(corrected_logits_loss(q, stale, fresh, labels, mask, 0.05, "positive")) == pytest.approx(
        float(contrastive_loss(q, stale, labels, mask, 0.05)), rel=1e-5
    )
    # 'fresh' is lowest when the corrected cache equals the fresh embeddings
    assert float(corrected_logits_loss(q, fresh, fresh, labels, mask, 0.05, "fresh")) < float(
        corrected_logits_loss(q, stale, fresh, labels, mask, 0.05, "fresh")
    )
    # a hidden column changes nothing, in either target
    moved = stale.clone()
    moved[7] = 5 * q[0]
    for target in ("positive", "fresh"):
        a = corrected_logits_loss(q[:1], stale, fresh, labels[:1], mask[:1], 0.05, target)
        b = corrected_logits_loss(q[:1], moved, fresh, labels[:1], mask[:1], 0.05, target)
        assert torch.isfinite(a) and float(a) == pytest.approx(float(b), rel=1e-6)


def test_cross_entropy_term_aligns_the_corrected_ranking():
    """Trained on the 'fresh' term alone, h ranks the targets as the fresh embeddings do."""
    from freshen.training.losses import corrected_logits_loss

    stale, fresh = _drift(n=400, seed=4)
    g = torch.Generator().manual_seed(5)
    h = Corrector(16, "linear")
    opt = torch.optim.Adam(h.parameters(), lr=1e-2)
    no_mask = torch.zeros(32, 400, dtype=torch.bool)

    def agreement():
        q = torch.nn.functional.normalize(torch.randn(256, 16, generator=torch.Generator().manual_seed(9)), dim=-1)
        with torch.no_grad():
            return float(((q @ h(stale).T).argmax(1) == (q @ fresh.T).argmax(1)).float().mean())

    before = agreement()
    for _ in range(300):
        q = torch.nn.functional.normalize(torch.randn(32, 16, generator=g), dim=-1)
        loss = corrected_logits_loss(q, h(stale), fresh, torch.zeros(32, dtype=torch.long), no_mask, 0.05, "fresh")
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert before < 0.5 and agreement() > 0.6


def _saved(tmp_path, **kw):
    h = Corrector(8, "residual_mlp", hidden=12, **kw)
    h.save(tmp_path / "c")
    return tmp_path / "c"


@pytest.mark.parametrize("keep", [0, 4, 40, -8])
def test_truncated_weights_are_named(tmp_path, keep):
    from freshen.errors import DataError

    weights = _saved(tmp_path) / "corrector.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:keep] if keep >= 0 else data[: len(data) + keep])
    with pytest.raises(DataError, match=r"corrector\.safetensors: not a readable safetensors file"):
        Corrector.load(tmp_path / "c")


@pytest.mark.parametrize(
    "change,message",
    [
        (
            {"hidden": 16},
            r"corrector\.safetensors: the weights do not fit .*corrector\.json: size mismatch for mlp\.0\.weight",
        ),
        (
            {"arch": "linear"},
            r"corrector\.safetensors: the weights do not fit .*corrector\.json: missing linear\.weight",
        ),
        ({"depth": 2}, r"corrector\.safetensors: the weights do not fit .*corrector\.json: missing mlp\.4\.weight"),
    ],
)
def test_config_and_weights_that_disagree_are_named(tmp_path, change, message):
    import json

    from freshen.errors import DataError

    folder = _saved(tmp_path)
    cfg = json.loads((folder / "corrector.json").read_text())
    (folder / "corrector.json").write_text(json.dumps({**cfg, **change}))
    with pytest.raises(DataError, match=message):
        Corrector.load(folder, expect_dim=8)


@pytest.mark.parametrize(
    "body,message",
    [
        ("{", r"corrector\.json: not valid JSON"),
        ('{"arch": "linear"}', r"corrector\.json: field 'dim': missing"),
        ('{"dim": 8, "width": 3}', r"corrector\.json: field 'width': unknown setting"),
        ('{"dim": "eight"}', r"corrector\.json: field 'dim': must be an integer >= 1, got 'eight'"),
    ],
)
def test_a_bad_corrector_config_is_named(tmp_path, body, message):
    from freshen.errors import DataError

    folder = _saved(tmp_path)
    (folder / "corrector.json").write_text(body)
    with pytest.raises(DataError, match=message):
        Corrector.load(folder, expect_dim=8)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_naming_the_file(tmp_path, bad):
    """A corrector file with a NaN or Inf weight (written by another tool, or damaged) is refused
    on load, naming the file and the tensor: it would turn every corrected embedding into NaN."""
    from freshen.errors import DataError
    from safetensors.torch import load_file, save_file

    weights = _saved(tmp_path) / "corrector.safetensors"
    state = load_file(str(weights))
    state["mlp.0.weight"][1, 2] = bad
    save_file(state, str(weights))
    with pytest.raises(DataError, match=r"corrector\.safetensors: tensor 'mlp\.0\.weight' holds NaN or Inf"):
        Corrector.load(tmp_path / "c", expect_dim=8)
