"""Step 1, cluster_queries (TAS): embed the training queries with the initial encoder and
run faiss k-means once; every query keeps its cluster id for batch composition."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np

from freshen.atomic import atomic_dir, write_json
from freshen.embed_corpus import encode_options, place
from freshen.encoding import encode, set_threads
from freshen.locks import hold
from freshen.modeling.encoder import Encoder
from freshen.params import Params
from freshen.params.sections import ClusterParams
from freshen.steps.common import NullLog, path, prepared

SECTIONS = ["seed", "model", "encode", "cluster"]


def choose_k(n_queries: int, cluster: ClusterParams) -> int:
    """k from params, else scaled with the query count (TAS: 2000 clusters for 400K queries)."""
    if cluster.k:
        return max(1, min(cluster.k, n_queries))
    return max(1, min(n_queries, round(n_queries / float(cluster.queries_per_cluster))))


def kmeans(emb: np.ndarray, k: int, niter: int, seed: int, spherical: bool):
    km = faiss.Kmeans(
        emb.shape[1],
        k,
        niter=niter,
        seed=seed,
        spherical=spherical,
        verbose=False,
        min_points_per_centroid=1,
        max_points_per_centroid=100000,
    )
    km.train(np.ascontiguousarray(emb, dtype=np.float32))
    _, assign = km.index.search(np.ascontiguousarray(emb, dtype=np.float32), 1)
    return km.centroids, assign[:, 0], float(km.obj[-1]) if len(km.obj) else 0.0


def run(params: Params, root: Path, log=NullLog()) -> dict:
    cfg = params.cluster
    with hold(path(root, cfg.out_dir), path(root, cfg.metrics)):  # one cluster-queries at a time
        stats = cluster(params, root)
    log.metrics(stats)
    return stats


def cluster(params: Params, root: Path) -> dict:
    """Embed the training queries, run k-means, write the clusters and their metrics."""
    set_threads()
    ds = prepared(params, root)
    cfg = params.cluster
    qids = sorted(ds.positives("train"))
    encoder = place(Encoder.from_params(params.model.model_dump(), root), params.encode.device)
    emb = encode(encoder, [ds.queries[q] for q in qids], "query", **encode_options(params.encode))
    k = choose_k(len(qids), cfg)
    centroids, assign, objective = kmeans(emb, k, cfg.niter, params.seed, encoder.config.normalize)
    sizes = np.bincount(assign, minlength=k)
    stats = {
        "k": k,
        "queries": len(qids),
        "size_min": int(sizes.min()),
        "size_median": float(np.median(sizes)),
        "size_max": int(sizes.max()),
        "empty_clusters": int((sizes == 0).sum()),
        "objective": objective,
    }
    with atomic_dir(path(root, cfg.out_dir)) as tmp:
        lines = ["query-id\tcluster"] + [f"{q}\t{int(c)}" for q, c in zip(qids, assign)]
        (tmp / "assignments.tsv").write_text("\n".join(lines) + "\n")
        np.save(tmp / "centroids.npy", centroids.astype(np.float32))
        write_json(tmp / "stats.json", {**stats, "sizes": sizes.tolist()})
    write_json(path(root, cfg.metrics), stats)
    return stats
