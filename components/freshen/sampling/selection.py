"""How negatives are picked from a query's candidates, whatever produced the candidates (exact
search, the ANN index, the false-negative filter's kept list):

- `topk`: the best-scoring candidates;
- `gumbel`: Gumbel-top-k, k draws without replacement from softmax(beta * s): the top k of
  `gumbel_keys(beta * s)`;
- `balanced`: TAS-Balanced margin sampling over the top `candidates`, `balanced_pick`.

The random draws: Gumbel noise from a torch generator, one uniform per candidate key; balanced
picks from a numpy generator."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from freshen.params.train import NegativesParams


@dataclass(frozen=True)
class Selection:
    """`train.negatives`' selection settings."""

    kind: str = "topk"
    beta: float = 20.0  # gumbel: inverse temperature of the sampling softmax
    candidates: int = 100  # balanced: how many of the best candidates margins are drawn from
    bins: int = 10  # balanced: equal-width margin bins

    @classmethod
    def from_params(cls, neg: NegativesParams) -> Selection:
        return cls(neg.selection, neg.beta, neg.candidates, neg.bins)

    def keys(self, scores: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """The keys whose top k are the picks: the scores (top-k) or their Gumbel-perturbed
        scaled version (gumbel). Balanced selection keeps the scores: it draws from their top."""
        return gumbel_keys(self.beta * scores, generator) if self.kind == "gumbel" else scores


def gumbel_keys(scaled: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """`scaled` plus standard Gumbel noise, one uniform draw per element: the top k of the keys
    are k draws without replacement from softmax(scaled)."""
    u = torch.rand(scaled.shape, generator=generator).clamp_(
        1e-20, 1.0 - 1e-7
    )  # drawn on the CPU: any device, the same draws
    return scaled - torch.log(-torch.log(u)).to(scaled.device)


def balanced_pick(margins: np.ndarray, k: int, bins: int, rng: np.random.Generator) -> list[int]:
    """TAS-Balanced: split margins into `bins` equal-width bins over [min, max]; draw a bin
    uniformly (redraw if empty), then a candidate uniformly within it; k times, no repeats."""
    margins = np.asarray(margins, dtype=np.float64)
    lo, hi = float(margins.min()), float(margins.max())
    width = (hi - lo) / bins if hi > lo else 1.0
    which = np.minimum(((margins - lo) / width).astype(int), bins - 1)
    members = {b: list(np.flatnonzero(which == b)) for b in range(bins)}
    picked: list[int] = []
    while len(picked) < min(k, len(margins)):
        live = [b for b, m in members.items() if m]
        b = live[rng.integers(len(live))]  # uniform over non-empty bins == redraw when empty
        j = members[b].pop(int(rng.integers(len(members[b]))))
        picked.append(int(j))
    return picked


def balanced(
    rows: torch.Tensor, scores: torch.Tensor, positive: torch.Tensor, k: int, bins: int, rng: np.random.Generator
) -> torch.Tensor:
    """Balanced margin picks for each query [b, k] from its candidates (`rows`, `scores` [b, m];
    -inf scores are no candidate), margins taken to the query's positive score `positive` [b]."""
    out = []
    for i in range(rows.shape[0]):
        live = torch.isfinite(scores[i])
        out.append(balanced_one(rows[i][live], scores[i][live], positive[i], k, bins, rng))
    return torch.stack(out)


def balanced_one(
    rows: torch.Tensor, scores: torch.Tensor, positive: torch.Tensor, k: int, bins: int, rng: np.random.Generator
) -> torch.Tensor:
    """One query's balanced picks among its candidates `rows` [m] scored `scores` [m]."""
    return rows[balanced_pick((positive - scores).numpy(), k, bins, rng)]
