"""Teacher scores (`train.teacher.scores`, TAS-Balanced): negatives drawn from each query's
teacher-scored candidates by balanced margin sampling, and the retriever trained by Margin-MSE
against the teacher's margins, on the sampled negatives and (weight `alpha`) on the other
queries' positives of the batch that the teacher scored for the query."""

from __future__ import annotations

import numpy as np
import torch

from freshen.errors import FreshenError
from freshen.sampling.selection import balanced_pick
from freshen.training.losses import margin_mse


class Teacher:
    def __init__(
        self,
        scores: dict[str, dict[str, float]],
        positives: dict[str, list[str]],
        row_of: dict[str, int],
        doc_ids: list[str],
        alpha: float,
    ):
        self.scores, self.positives, self.row_of, self.doc_ids, self.alpha = scores, positives, row_of, doc_ids, alpha

    def negatives(
        self, qids: list[str], pos_docs: list[str], k: int, bins: int, rng: np.random.Generator
    ) -> torch.Tensor:
        """Rows [b, k] by balanced margin sampling over the teacher's margins (k 0: one; a query
        with fewer than k scored candidates repeats them)."""
        k = k or 1
        out = []
        for q, pos in zip(qids, pos_docs):
            scored = self.scores.get(q, {})
            cands = [d for d in scored if d not in self.positives[q] and d in self.row_of]
            if pos not in scored or not cands:
                raise FreshenError(f"teacher scores lack query '{q}' with its positive '{pos}' and a negative")
            margins = np.array([scored[pos] - scored[d] for d in cands])
            picked = balanced_pick(margins, k, bins, rng)
            picked = (picked * (k // len(picked) + 1))[:k]
            out.append(torch.tensor([self.row_of[cands[j]] for j in picked]))
        return torch.stack(out)

    def loss(
        self,
        qids: list[str],
        pos_docs: list[str],
        neg_rows: torch.Tensor,
        q_emb: torch.Tensor,
        p_emb: torch.Tensor,
        temperature: float,
    ) -> tuple[torch.Tensor, int]:
        """Margin-MSE over the sampled negatives, plus `alpha` x in-batch Margin-MSE; and the
        number of in-batch pairs (0: the teacher file scores no other query's positive)."""
        b, k = neg_rows.shape
        scale = 1.0 / temperature
        pos_e = p_emb[:b]
        neg_e = p_emb[b:].view(b, k, -1)
        t_margin = torch.tensor(
            [
                [self.scores[q][pos_docs[i]] - self.scores[q][self.doc_ids[int(r)]] for r in neg_rows[i]]
                for i, q in enumerate(qids)
            ]
        )
        loss = margin_mse(
            q_emb[:, None, :].expand(-1, k, -1), pos_e[:, None, :].expand(-1, k, -1), neg_e, t_margin, scale
        )
        pairs = [
            (i, j)
            for i, q in enumerate(qids)
            for j in range(b)
            if j != i and pos_docs[j] in self.scores.get(q, {}) and pos_docs[j] not in self.positives[q]
        ]
        if pairs and self.alpha > 0:
            ii, jj = torch.tensor([a for a, _ in pairs]), torch.tensor([c for _, c in pairs])
            t_in = torch.tensor(
                [self.scores[qids[a]][pos_docs[a]] - self.scores[qids[a]][pos_docs[c]] for a, c in pairs]
            )
            loss = loss + self.alpha * margin_mse(q_emb[ii], pos_e[ii], pos_e[jj], t_in, scale)
        return loss, len(pairs)
