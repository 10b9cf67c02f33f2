"""False-negative control. On data with incomplete labels and dense relevance, the passages that
score highest for a query without being judged relevant are often relevant all the same, and
training pushes the query away from them. Two rules, as sentence-transformers'
`mine_hard_negatives` names them (NV-Retriever's "TopK-PercPos" is the relative one):

- a margin rule: a candidate scoring above `(1 - relative_margin) * s(q, positive)`, or above
  `s(q, positive) - absolute_margin`, is a likely positive;
- a rank rule: the first `range_min` candidates of the list are skipped.

Cached negatives are picked only among candidates that pass both; in-batch passages that the
margin rule flags for a query are masked out of that query's softmax."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from freshen.errors import FreshenError
from freshen.params.train import FalseNegativeParams
from freshen.sampling.selection import Selection, balanced_one


@dataclass(frozen=True)
class FalseNegativeFilter:
    relative_margin: float | None = None
    absolute_margin: float | None = None
    range_min: int = 0
    in_batch: bool = True

    @classmethod
    def from_params(cls, p: FalseNegativeParams) -> FalseNegativeFilter:
        """From `train.negatives.false_negatives` (checked by the schema)."""
        return cls(p.relative_margin, p.absolute_margin, p.range_min, p.in_batch)

    @property
    def has_margin(self) -> bool:
        return self.relative_margin is not None or self.absolute_margin is not None

    @property
    def active(self) -> bool:
        """Whether cached negatives go through the filter at all."""
        return self.has_margin or self.range_min > 0

    def too_close(self, scores: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
        """[b, m] bool: `scores[i, j]` is within the margin of query i's positive score `positive[i]`."""
        flagged = torch.zeros(scores.shape, dtype=torch.bool)
        pos = positive.float()[:, None]
        if self.relative_margin is not None:
            flagged |= scores > (1.0 - self.relative_margin) * pos
        if self.absolute_margin is not None:
            flagged |= scores > pos - self.absolute_margin
        return flagged

    def pick(
        self,
        rows: torch.Tensor,
        scores: torch.Tensor,
        positive: torch.Tensor,
        k: int,
        selection: Selection,
        generator: torch.Generator | None = None,
        rng: np.random.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """k negatives per query from its candidate list (`rows`, `scores` [b, m], best first; rows
        of -1 / scores of -inf where there were fewer), picked by `selection` among the candidates
        that pass the rules. A query with fewer than k passing candidates is filled up with the best
        remaining ones, which come back flagged in `unusable` [b, k] (mask them out of the loss).
        Counts: candidates the rank rule and the margin rule removed, and fill-ups."""
        b, m = rows.shape
        valid = rows >= 0
        by_rank = valid & (torch.arange(m) < self.range_min)[None, :]
        by_margin = valid & ~by_rank & self.too_close(scores, positive)
        keep = valid & ~by_rank & ~by_margin
        out = torch.empty((b, k), dtype=torch.long)
        unusable = torch.zeros((b, k), dtype=torch.bool)
        for i in range(b):
            kept = keep[i].nonzero().flatten()
            if selection.kind == "gumbel" and len(kept) > k:
                chosen = kept[selection.keys(scores[i, kept], generator).topk(k).indices]
            elif selection.kind == "balanced" and len(kept) > k:
                chosen = balanced_one(kept, scores[i, kept], positive[i], k, selection.bins, rng)
            else:
                chosen = kept[:k]
            if len(chosen) < k:  # too few left: the best of the rest, masked out of the loss
                rest = (valid[i] & ~keep[i]).nonzero().flatten()
                fill = rest[: k - len(chosen)]
                if len(chosen) + len(fill) < k:
                    raise FreshenError(
                        f"fewer than {k} candidate negatives for a query: raise "
                        "train.negatives.candidates or lower train.negatives.k"
                    )
                unusable[i, len(chosen) :] = True
                chosen = torch.cat([chosen, fill])
            out[i] = rows[i, chosen]
        counts = {"fn_rank": int(by_rank.sum()), "fn_margin": int(by_margin.sum()), "fn_short": int(unusable.sum())}
        return out, unusable, counts

    def mask_in_batch(self, q_emb: torch.Tensor, p_emb: torch.Tensor, mask: torch.Tensor) -> int:
        """Mask (in place) every passage of the step that the margin rule flags for a query, scored
        fresh against the query's own positive (column i); returns how many it added."""
        scores = q_emb @ p_emb.T
        b = len(q_emb)
        flagged = self.too_close(scores, scores[torch.arange(b), torch.arange(b)])
        flagged[torch.arange(b), torch.arange(b)] = False
        added = flagged & ~mask
        mask |= flagged
        return int(added.sum())
