"""Search and scoring: a faiss inner-product index over a cache, TREC run files, and
nDCG@10 / Recall@100 / MRR@10 computed by ir-measures (pytrec_eval underneath)."""

from __future__ import annotations

from pathlib import Path

import faiss
import ir_measures
import numpy as np
from ir_measures import RR, R, nDCG

MEASURES = {"ndcg_at_10": nDCG @ 10, "recall_at_100": R @ 100, "mrr_at_10": RR @ 10}


def build_index(embeddings: np.ndarray, kind: str = "flat") -> faiss.Index:
    """Exact inner-product search (flat) by default; chunked adds keep memory to one chunk."""
    dim = embeddings.shape[1]
    if kind != "flat":
        raise ValueError(f"index kind '{kind}' is not supported yet (use 'flat')")
    index = faiss.IndexFlatIP(dim)
    for start in range(0, embeddings.shape[0], 65536):
        index.add(np.ascontiguousarray(embeddings[start:start + 65536], dtype=np.float32))
    return index


def search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores, rows = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    return scores, rows


def to_run(qids: list[str], doc_ids: list[str], scores: np.ndarray, rows: np.ndarray) -> dict[str, dict[str, float]]:
    run: dict[str, dict[str, float]] = {}
    for qi, qid in enumerate(qids):
        run[qid] = {doc_ids[r]: float(s) for r, s in zip(rows[qi], scores[qi]) if r >= 0}
    return run


def exclude_self(run: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """BEIR convention: a query never retrieves a document with its own id."""
    return {q: {d: s for d, s in docs.items() if d != q} for q, docs in run.items()}


def evaluate_run(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]]) -> dict[str, float]:
    agg = ir_measures.calc_aggregate(list(MEASURES.values()), qrels, run)
    return {name: float(agg[m]) for name, m in MEASURES.items()}


def write_trec(path: Path, run: dict[str, dict[str, float]], tag: str) -> None:
    lines = []
    for qid, docs in run.items():
        for rank, (doc, score) in enumerate(sorted(docs.items(), key=lambda x: -x[1]), start=1):
            lines.append(f"{qid} Q0 {doc} {rank} {score:.6f} {tag}")
    path.write_text("\n".join(lines) + "\n")


def bm25_run(doc_ids: list[str], doc_texts: list[str], qids: list[str], query_texts: list[str], k: int = 100):
    """BM25 baseline with bm25s (English stopwords), as in METHOD.md's reference figures."""
    import bm25s

    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(doc_texts, stopwords="en", show_progress=False), show_progress=False)
    results, scores = retriever.retrieve(bm25s.tokenize(query_texts, stopwords="en", show_progress=False),
                                         k=min(k, len(doc_ids)), show_progress=False)
    return to_run(qids, doc_ids, scores, results)
