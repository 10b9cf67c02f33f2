"""The retriever's side of a step: the loss over the step's query and passage embeddings (the
positives first, then each query's k negatives) and the optimiser update.

The loss is cross-entropy of each query's positive against every passage of the step (its
negatives and the in-batch passages), or Margin-MSE against teacher scores when they are given.
`mask[i, j]` hides passage j from query i: another positive of query i, a filled-up negative of
the false-negative filter, or an in-batch passage its margin rule flags."""

from __future__ import annotations

import torch
from transformers import get_linear_schedule_with_warmup

from freshen.integrity import check_finite_value
from freshen.params import TrainParams
from freshen.training.distributed import World
from freshen.training.losses import contrastive_loss


class RetrieverUpdate:
    def __init__(self, encoder, p: TrainParams, teacher=None, world: World = World()):
        self.encoder, self.teacher, self.world = encoder, teacher, world
        self.opt = torch.optim.AdamW(encoder.parameters(), lr=p.lr, weight_decay=p.weight_decay)
        self.sched = get_linear_schedule_with_warmup(self.opt, int(p.warmup_ratio * p.steps), p.steps)
        self.temperature, self.grad_clip = p.temperature, p.grad_clip

    @staticmethod
    def mask(pos_rows: list[list[int]], rows: list[int], unusable: torch.Tensor) -> torch.Tensor:
        """mask[i, j]: passage j of the step (`rows`: the b positives, then k negatives per query)
        is a positive of query i (`pos_rows[i]`: every row judged relevant to it) other than its
        own (column i), or one of query i's negatives flagged `unusable` [b, k]."""
        rows_t = torch.tensor(rows)
        b = len(pos_rows)
        mask = torch.zeros((b, len(rows)), dtype=torch.bool)
        for i, own in enumerate(pos_rows):
            mask[i] = torch.isin(rows_t, torch.tensor(own))
            mask[i, i] = False
        mask[:, b:] |= torch.block_diag(*unusable.unbind(0)) if unusable.numel() else False
        return mask

    def step(
        self,
        step: int,
        qids: list[str],
        pos_docs: list[str],
        neg_rows: torch.Tensor,
        q_emb: torch.Tensor,
        p_emb: torch.Tensor,
        mask: torch.Tensor,
        targets: torch.Tensor | None = None,
    ) -> dict:
        """One optimiser update of the encoder; the step's record (its loss, and with a teacher
        the number of in-batch Margin-MSE pairs). `q_emb` [b, dim] and `mask` [b, n]: the
        queries this rank embedded, `targets`: their positives' columns in `p_emb` (default:
        the first b); with more than one rank the gradients and the loss are averaged over ranks."""
        record: dict = {}
        if self.teacher is None:
            targets = torch.arange(len(q_emb)) if targets is None else targets
            loss = contrastive_loss(q_emb, p_emb, targets, mask, self.temperature)
        else:
            loss, record["teacher_inbatch_pairs"] = self.teacher.loss(
                qids, pos_docs, neg_rows, q_emb, p_emb, self.temperature
            )
        check_finite_value(float(loss.detach()), f"train: step {step}: the retriever loss")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.world.average_gradients(self.encoder.parameters())
        torch.nn.utils.clip_grad_norm_(self.encoder.parameters(), self.grad_clip)
        self.opt.step()
        self.sched.step()
        return {"loss": self.world.mean(float(loss.detach())), **record}
