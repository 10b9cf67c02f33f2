"""The corrector h: maps a stale cached embedding to an estimate of its current embedding.

`linear`: h(c) = W c + b, W initialised to the identity. `residual_mlp`: h(c) = c + MLP(c),
the last layer initialised to zero. Both start as the identity, so an untrained corrector
returns the stale cache unchanged. With `normalize` the output is projected onto the unit
sphere, where an encoder that normalizes its embeddings puts g(d): h then scores by cosine as
the fresh cache would, and spends none of its fit on norms."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from freshen.errors import DataError, FreshenError
from freshen.jsonfile import read_json

ARCHS = ("linear", "residual_mlp")
WEIGHTS, CONFIG = "corrector.safetensors", "corrector.json"
INT_SETTINGS = ("dim", "hidden", "depth")  # corrector.json: every setting is one of these or arch / normalize


class Corrector(nn.Module):
    def __init__(
        self, dim: int, arch: str = "residual_mlp", hidden: int = 384, depth: int = 1, normalize: bool = False
    ):
        super().__init__()
        if arch not in ARCHS:
            raise FreshenError(f"corrector arch must be one of {ARCHS}, got '{arch}'")
        self.dim, self.arch, self.hidden, self.depth, self.normalize = dim, arch, hidden, depth, bool(normalize)
        if arch == "linear":
            self.linear = nn.Linear(dim, dim)
            with torch.no_grad():
                self.linear.weight.copy_(torch.eye(dim))
                self.linear.bias.zero_()
        else:
            layers, width = [], dim
            for _ in range(max(1, depth)):
                layers += [nn.Linear(width, hidden), nn.GELU()]
                width = hidden
            last = nn.Linear(width, dim)
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
            self.mlp = nn.Sequential(*layers, last)

    def forward(self, cached: torch.Tensor) -> torch.Tensor:
        cached = cached.float()
        out = self.linear(cached) if self.arch == "linear" else cached + self.mlp(cached)
        return nn.functional.normalize(out, dim=-1) if self.normalize else out

    @property
    def exact_on_stale(self) -> bool:
        """Whether corrected scores are an exact search of the stale cache (see transform_query):
        true for the linear corrector, unless its output is normalized (a per-row scale)."""
        return self.arch == "linear" and not self.normalize

    def transform_query(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Linear corrector only: <q, Wc + b> = <W^T q, c> + <q, b>, so corrected scores are an
        exact inner-product search on the *stale* cache with query W^T q (plus a per-query
        constant that changes no ranking, sample or margin)."""
        if not self.exact_on_stale:
            raise ValueError("transform_query needs the linear corrector without normalize")
        q = q.float()
        return q @ self.linear.weight, q @ self.linear.bias

    @torch.no_grad()
    def correct_into(self, cached, out, chunk: int = 65536) -> None:
        """out[i] = h(cached[i]) for every row, `chunk` rows at a time so that memory stays
        bounded: `cached` may be a memmap of a whole corpus, `out` another (numpy arrays)."""
        for s in range(0, len(cached), chunk):
            block = torch.from_numpy(np.asarray(cached[s : s + chunk], dtype=np.float32))
            out[s : s + len(block)] = self(block).numpy()

    def config(self) -> dict:
        return {
            "dim": self.dim,
            "arch": self.arch,
            "hidden": self.hidden,
            "depth": self.depth,
            "normalize": self.normalize,
        }

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        state = {k: v.contiguous() for k, v in self.state_dict().items()}
        bad = [k for k, v in state.items() if not torch.isfinite(v).all()]
        if bad:
            raise FreshenError(f"{folder / WEIGHTS}: corrector tensor '{bad[0]}' holds NaN or Inf: not saved")
        folder.mkdir(parents=True, exist_ok=True)
        save_file(state, str(folder / WEIGHTS))
        (folder / CONFIG).write_text(json.dumps(self.config(), indent=2))

    @classmethod
    def load(cls, folder: str | Path, expect_dim: int | None = None) -> Corrector:
        folder = Path(folder)
        cfg_file = folder / CONFIG
        if not cfg_file.is_file():
            raise FreshenError(f"{cfg_file}: corrector config not found")
        cfg = read_config(cfg_file)
        if expect_dim is not None and cfg["dim"] != expect_dim:
            raise FreshenError(
                f"{cfg_file}: field 'dim': corrector dimension {cfg['dim']} does not match the cache dimension {expect_dim}"
            )
        model = cls(**cfg)
        weights = read_weights(folder / WEIGHTS)
        check_weights_fit(model, weights, folder / WEIGHTS, cfg_file)
        model.load_state_dict(weights)
        return model


def read_config(path: Path) -> dict:
    """corrector.json, checked setting by setting (a folder saved before `normalize` lacks it)."""
    cfg = read_json(path)
    for name in cfg:
        if name not in (*INT_SETTINGS, "arch", "normalize"):
            raise DataError(path, f"unknown setting (known: {', '.join(INT_SETTINGS)}, arch, normalize)", field=name)
    if "dim" not in cfg:
        raise DataError(path, "missing", field="dim")
    for name in INT_SETTINGS:
        value = cfg.get(name, 1)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise DataError(path, f"must be an integer >= 1, got {value!r}", field=name)
    if cfg.get("arch", "residual_mlp") not in ARCHS:
        raise DataError(path, f"must be one of {ARCHS}, got {cfg['arch']!r}", field="arch")
    if not isinstance(cfg.get("normalize", False), bool):
        raise DataError(path, f"must be true or false, got {cfg['normalize']!r}", field="normalize")
    return cfg


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise DataError(path, "corrector weights not found")
    try:
        weights = load_file(str(path))
    except SafetensorError as exc:
        raise DataError(path, f"not a readable safetensors file, truncated or damaged ({exc})") from None
    for name, tensor in weights.items():  # a NaN weight would make every corrected embedding NaN
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise DataError(path, f"tensor '{name}' holds NaN or Inf: the corrector is corrupt (train it again)")
    return weights


def check_weights_fit(model: nn.Module, weights: dict[str, torch.Tensor], path: Path, cfg_file: Path) -> None:
    """The tensors in the file are those the config builds, name for name and shape for shape."""
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    found = {name: tuple(t.shape) for name, t in weights.items()}
    problems = []
    missing = [name for name in expected if name not in found]
    if missing:
        problems.append(f"missing {', '.join(missing)}")
    unexpected = [name for name in found if name not in expected]
    if unexpected:
        problems.append(f"unexpected {', '.join(unexpected)}")
    for name in (n for n in expected if n in found and found[n] != expected[n]):
        problems.append(
            f"size mismatch for {name}: {list(found[name])} in the file, {list(expected[name])} by the config"
        )
    if problems:
        raise DataError(
            path, f"the weights do not fit {cfg_file}: {'; '.join(problems)} (a folder mixed from two correctors?)"
        )
