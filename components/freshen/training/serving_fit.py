"""The serving fit: after training, the corrector is fitted once more, for retrieval.

During training h is fitted to track the encoder (the drift loss to fresh embeddings and a
cross-entropy term on each step's logits), which is what scoring negatives needs. Serving
h(stale cache) without re-embedding asks something else: that the trained queries find their
judged passages. This fit starts from the trained h and minimises, over the training queries,
the cross-entropy of each query's softmax over candidate rows (the batch's top
`candidates` of h'(cache) and its positives) against its judged positives, plus `anchor` times
the squared distance from h'(c) to h(c) on those rows, which keeps the rows no query reaches
where h put them. After each epoch the dev queries search h'(cache); the epoch with the best dev
nDCG@10 is kept, and h itself (epoch 0) when none beats it. No passage is encoded: the cost is
the queries and a pass of h' over the cache per epoch."""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field

import numpy as np
import torch

from freshen.encoding import encode
from freshen.modeling.corrector import Corrector
from freshen.params import EncodeParams, ServingFitParams, TrainParams
from freshen.progress import progress
from freshen.retrieval import evaluate_run

logger = logging.getLogger(__name__)


@dataclass
class ServingFit:
    """The corrector to serve, the epoch it is from (0: h unchanged) and dev nDCG@10 per epoch."""

    corrector: Corrector
    epoch: int
    dev_ndcg_at_10: list[float] = field(default_factory=list)


def corrected(corrector: Corrector, stale: np.ndarray) -> np.ndarray:
    out = np.empty(stale.shape, dtype=np.float32)
    corrector.eval()
    corrector.correct_into(stale, out)
    return out


class TableIndex:
    """A table [n, dim] and its exact inner-product index (faiss), built once: each epoch's
    table is searched twice, by the dev queries and for the next epoch's candidates."""

    def __init__(self, table: np.ndarray):
        import faiss

        self.table = np.ascontiguousarray(table, dtype=np.float32)
        self.index = faiss.IndexFlatIP(self.table.shape[1])
        self.index.add(self.table)

    def top_rows(self, queries: np.ndarray, k: int) -> np.ndarray:
        """Each query's top `k` rows by inner product (exact)."""
        return self.index.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, len(self.table)))[1]


def fit(
    corrector: Corrector,
    stale: np.ndarray,
    queries: np.ndarray,
    positives: list[list[int]],
    dev_score,
    p: ServingFitParams,
    temperature: float,
    seed: int,
) -> ServingFit:
    """Fit a copy of `corrector` for retrieval (module docstring). `queries[i]` is a training
    query's embedding by the trained encoder and `positives[i]` its judged rows of `stale`;
    `dev_score(index)` is the dev nDCG@10 of the trained queries over `index.table` (h'(stale))."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    start = corrected(corrector, stale)
    table = TableIndex(start)
    history = [dev_score(table)]
    best = (history[0], 0, corrector)
    model = copy.deepcopy(corrector).train()
    opt = torch.optim.AdamW(model.parameters(), lr=p.lr, weight_decay=0.0)
    q_all = torch.from_numpy(np.asarray(queries, dtype=np.float32))
    for epoch in progress(range(1, p.epochs + 1), desc="serving fit", unit="epoch"):
        cands = table.top_rows(queries, p.candidates)
        for batch in np.array_split(rng.permutation(len(queries)), max(1, -(-len(queries) // p.batch_queries))):
            rows = np.unique(np.concatenate([cands[batch].ravel(), *(positives[i] for i in batch)]))
            rows = rows[rows >= 0]
            col = {int(r): j for j, r in enumerate(rows)}
            target = torch.zeros(len(batch), len(rows))
            for b, i in enumerate(batch):
                target[b, [col[r] for r in positives[i]]] = 1.0 / len(positives[i])
            c = torch.from_numpy(np.asarray(stale[rows], dtype=np.float32))
            anchor = torch.from_numpy(start[rows])
            out = model(c)
            logits = q_all[batch] @ out.T / temperature
            loss = -(target * torch.log_softmax(logits, dim=-1)).sum(-1).mean()
            loss = loss + p.anchor * ((out - anchor) ** 2).sum(-1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        table = TableIndex(corrected(model, stale))
        history.append(dev_score(table))
        if history[-1] > best[0]:
            best = (history[-1], epoch, copy.deepcopy(model))
        model.train()
    kept = best[2].eval()
    logger.info(f"serving fit: epoch {best[1]} kept, dev nDCG@10 {history[0]:.4f} (h) -> {best[0]:.4f}")
    return ServingFit(kept, best[1], history)


def dev_scorer(queries: np.ndarray, qids: list[str], doc_ids: list[str], qrels: dict):
    """`dev_score(index)`: nDCG@10 of these queries' top 100 over `index.table` (a `TableIndex`
    of the rows of `doc_ids`)."""

    def dev_score(index: TableIndex) -> float:
        rows = index.top_rows(queries, 100)
        scores = np.einsum("qd,qkd->qk", queries, index.table[rows])
        run = {q: {doc_ids[r]: float(s) for r, s in zip(rows[i], scores[i]) if r >= 0} for i, q in enumerate(qids)}
        return evaluate_run(qrels, run)["ndcg_at_10"]

    return dev_score


def fit_for_serving(encoder, corrector: Corrector, cache, dataset, p: TrainParams, seed: int, encode_p: EncodeParams):
    """`fit` on a training run's outcome: its training queries (positives as training takes them,
    `min_positive_grade`, `positive_grades`) and dev queries embedded by the trained `encoder`,
    over the rows of `cache` (the stale cache)."""
    row_of = cache.row_of()
    train = dataset.positives("train", p.min_positive_grade, top=p.positive_grades == "top")
    qids = sorted(q for q in train if q in dataset.queries and any(d in row_of for d in train[q]))
    positives = [sorted({row_of[d] for d in train[q] if d in row_of}) for q in qids]
    dev_qrels = dataset.evaluation_qrels("dev")
    dev_qids = sorted(dev_qrels)
    kw = {"batch_size": encode_p.batch_size, "precision": encode_p.precision}
    train_q = encode(encoder, [dataset.queries[q] for q in qids], "query", **kw)
    dev_q = encode(encoder, [dataset.queries[q] for q in dev_qids], "query", **kw)
    dev_score = dev_scorer(dev_q, dev_qids, cache.ids, dev_qrels)
    stale = np.asarray(cache.embeddings)
    return fit(corrector, stale, train_q, positives, dev_score, p.corrector.serving_fit, p.temperature, seed)
