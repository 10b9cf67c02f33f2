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


@pytest.mark.parametrize("arch", ["linear", "residual_mlp"])
def test_corrector_starts_as_identity_and_learns_rotation(arch):
    stale, fresh = _drift()
    h = Corrector(16, arch, hidden=64)
    assert torch.allclose(h(stale), stale)
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
        after = float(drift_loss(h(stale[held]), fresh[held]))
    assert after < before / 5, (before, after)


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
