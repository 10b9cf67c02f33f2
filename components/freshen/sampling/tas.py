"""Topic-aware sampling (TAS): each batch takes floor(b/n) queries from each of n random
clusters, topping up from other random clusters when one is too small. No epochs: batches
are drawn continuously. `RandomBatches` is the non-topic baseline."""

from __future__ import annotations

import numpy as np

from freshen.errors import FreshenError
from freshen.params.train import TrainParams


def check_batch_size(n_queries: int, batch_size: int) -> None:
    """`train.batch_size` queries, all different, must fit in the training queries."""
    if batch_size < 1:
        raise FreshenError(f"params.yaml: field 'train.batch_size': must be an integer >= 1, got {batch_size}")
    if n_queries < batch_size:
        raise FreshenError(
            f"params.yaml: field 'train.batch_size': {n_queries} training queries cannot fill a "
            f"batch of {batch_size} (lower it)"
        )


class TASBatches:
    def __init__(self, cluster_of: dict[str, int], batch_size: int, clusters_per_batch: int, rng: np.random.Generator):
        if clusters_per_batch < 1:
            raise FreshenError(
                f"params.yaml: field 'train.clusters_per_batch': must be an integer >= 1, got {clusters_per_batch}"
            )
        check_batch_size(len(cluster_of), batch_size)
        self.members: dict[int, list[str]] = {}
        for qid in sorted(cluster_of):
            self.members.setdefault(int(cluster_of[qid]), []).append(qid)
        self.clusters = sorted(self.members)
        self.batch_size, self.n = batch_size, min(clusters_per_batch, len(self.clusters))
        self.rng = rng

    def __iter__(self):
        return self

    def __next__(self) -> list[str]:
        per = self.batch_size // self.n
        order = [self.clusters[i] for i in self.rng.permutation(len(self.clusters))]
        batch: list[str] = []
        for i, cluster in enumerate(order):
            need = self.batch_size - len(batch)
            if need <= 0:
                break
            # clusters 1..n-1 give `per` each, the n-th the remainder; any later one tops up
            want = per if i < self.n - 1 else need
            pool = self.members[cluster]
            take = min(want, need, len(pool))
            batch += [pool[j] for j in self.rng.choice(len(pool), size=take, replace=False)]
        return batch


class RandomBatches:
    """Uniform random batches (the baseline TAS is compared against)."""

    def __init__(self, qids: list[str], batch_size: int, rng: np.random.Generator):
        check_batch_size(len(qids), batch_size)
        self.qids, self.batch_size, self.rng = sorted(qids), batch_size, rng

    def __iter__(self):
        return self

    def __next__(self) -> list[str]:
        return [self.qids[i] for i in self.rng.choice(len(self.qids), size=self.batch_size, replace=False)]


def make_batches(p: TrainParams, cluster_of: dict[str, int], train_qids: list[str], rng: np.random.Generator):
    """The batches `train.batching` asks for: TAS over the query clusters, or uniform random."""
    if p.batching == "tas":
        return TASBatches({q: cluster_of[q] for q in train_qids}, p.batch_size, p.clusters_per_batch, rng)
    return RandomBatches(train_qids, p.batch_size, rng)
