"""Losses: the retriever's contrastive cross-entropy and the corrector's drift loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def contrastive_loss(
    q: torch.Tensor, p: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Cross-entropy of each query's positive against every passage of the step (its sampled
    negatives and the in-batch passages). `mask[i, j]` hides passages that are also positives
    of query i, so a duplicate positive is never pushed down."""
    scores = (q @ p.T) / temperature
    scores = scores.masked_fill(mask, float("-inf"))
    return F.cross_entropy(scores, targets)


def drift_loss(corrected: torch.Tensor, fresh: torch.Tensor) -> torch.Tensor:
    """||h(C[d]) - stop_grad(g(d))||^2, averaged over the targets embedded fresh this step."""
    return ((corrected - fresh.detach()) ** 2).sum(-1).mean()


def corrected_logits_loss(
    q: torch.Tensor,
    corrected: torch.Tensor,
    fresh: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor,
    temperature: float,
    target: str,
) -> torch.Tensor:
    """The corrector's optional cross-entropy term on the step's corrected logits <f(q), h(C[d])>
    (docs/method.md step 1.6). `positive`: the retriever's own loss with h(C[d]) in place of g(d);
    `fresh`: against the softmax of the fresh logits <f(q), g(d)>, so the corrected cache ranks
    the step's targets the way the current encoder does. `mask` hides the same passages as the
    retriever's loss (and held-out probes); query i's positive is column labels[i]."""
    hidden = torch.finfo(torch.float32).min / 2  # not -inf: a zero target times -inf is nan
    logits = (q.detach() @ corrected.T / temperature).masked_fill(mask, hidden)
    if target == "positive":
        return F.cross_entropy(logits, labels)
    soft = torch.softmax((q.detach() @ fresh.detach().T / temperature).masked_fill(mask, hidden), dim=-1)
    return F.cross_entropy(logits, soft)


def mean_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a.float(), b.float(), dim=-1).mean())


def margin_mse(
    q: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, teacher_margin: torch.Tensor, scale: float
) -> torch.Tensor:
    """TAS-Balanced Margin-MSE: MSE((s(q,p+) - s(q,p-)) - (t(q,p+) - t(q,p-))), with student
    scores scaled by `scale` (1/temperature) to the teacher's range."""
    student = ((q * pos).sum(-1) - (q * neg).sum(-1)) * scale
    return F.mse_loss(student, teacher_margin)
