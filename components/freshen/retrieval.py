"""Search and scoring: a faiss inner-product index over a cache (exact `Flat` by default, or
any faiss index_factory string: `HNSW32`, `IVF4096,Flat`, ...), TREC run files, and
nDCG@10 / Recall@100 / MRR@10 computed by ir-measures (pytrec_eval underneath)."""

from __future__ import annotations

import warnings
from pathlib import Path

import faiss
import ir_measures
import numpy as np
from ir_measures import RR, R, nDCG

from freshen.errors import FreshenError
from freshen.params import EvaluateParams

MEASURES = {"ndcg_at_10": nDCG @ 10, "recall_at_100": R @ 100, "mrr_at_10": RR @ 10}
ADD_CHUNK = 65536  # rows converted to float32 and added at once
TRAIN_SAMPLE = 100_000  # at most this many rows (a seeded random sample) train an index that needs training


def index_settings(cfg: EvaluateParams, section: str = "evaluate") -> dict:
    """build_index keyword arguments from the `evaluate` section (index, nprobe, ef_search, use_gpu)."""
    return {
        "kind": cfg.index,
        "nprobe": cfg.nprobe,
        "ef_search": cfg.ef_search,
        "use_gpu": cfg.use_gpu,
        "param": f"{section}.index",
    }


def build_index(
    embeddings,
    kind: str = "Flat",
    nprobe: int | None = 32,
    ef_search: int | None = 128,
    use_gpu: bool | str = "auto",
    *,
    train_size: int = TRAIN_SAMPLE,
    seed: int = 0,
    param: str = "index",
) -> faiss.Index:
    """An inner-product faiss index over `embeddings` ([n, dim]; a float16 np.memmap, a torch
    tensor or an `NpyRowReader` are fine).

    `kind` is a faiss index_factory string ("Flat" exact, "HNSW32", "IVF4096,Flat", ...; "flat"
    is accepted too). An index that needs training is trained on a seeded random sample of at
    most `train_size` rows; rows are then added chunk by chunk, so no more than one chunk is
    ever converted to float32. `nprobe` (IVF) and `ef_search` (HNSW, and an HNSW coarse
    quantizer) are set after building. Flat and IVF indexes go to all GPUs when faiss has GPUs
    and `use_gpu` is "auto" or true (HNSW stays on the CPU). `param` names the setting in errors."""
    if hasattr(embeddings, "numpy"):  # a torch tensor
        embeddings = embeddings.numpy()
    elif not hasattr(embeddings, "shape"):  # arrays and row readers are sliced as they are
        embeddings = np.asarray(embeddings)
    n, dim = embeddings.shape
    factory = "Flat" if str(kind).strip().lower() == "flat" else str(kind).strip()
    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as err:
        raise FreshenError(
            f"params.yaml: field '{param}': '{kind}' is not a valid faiss index_factory string "
            f"(e.g. 'Flat', 'HNSW32', 'IVF4096,Flat'): {_faiss_message(err)}"
        ) from None
    ivf = faiss.try_extract_index_ivf(index)
    nlist = int(ivf.nlist) if ivf is not None else 0
    if nlist and n < nlist:
        raise FreshenError(
            f"params.yaml: field '{param}': '{kind}' has {nlist} inverted lists but there are only "
            f"{n} rows to train it on (use fewer lists, e.g. 'IVF{max(1, 4 * int(np.sqrt(n)))},Flat', "
            "or 'Flat')"
        )
    if not index.is_trained:
        if n > train_size:
            sample = np.sort(np.random.default_rng(seed).choice(n, size=train_size, replace=False))
            train = np.ascontiguousarray(embeddings[sample], dtype=np.float32)
        else:
            train = np.ascontiguousarray(embeddings[:n], dtype=np.float32)
        try:
            index.train(train)
        except RuntimeError as err:
            raise FreshenError(
                f"params.yaml: field '{param}': could not train '{kind}' on {len(train)} rows: {_faiss_message(err)}"
            ) from None
        del train
    hnsw = _is_hnsw(index)
    if _gpu_count(use_gpu, param) and isinstance(index, (faiss.IndexFlat, faiss.IndexIVF)) and not hnsw:
        try:  # trained on the CPU (bounded, reproducible); rows are added on the GPUs
            index = faiss.index_cpu_to_all_gpus(index)
        except (RuntimeError, AttributeError) as err:
            warnings.warn(
                f"{param}: '{kind}' stays on the CPU (faiss could not move it to the GPUs: {_faiss_message(err)})",
                stacklevel=2,
            )
    for start in range(0, n, ADD_CHUNK):
        index.add(np.ascontiguousarray(embeddings[start : start + ADD_CHUNK], dtype=np.float32))
    set_search_params(index, min(int(nprobe), nlist) if nprobe and nlist else None, ef_search if hnsw or ivf else None)
    return index


def set_search_params(index: faiss.Index, nprobe: int | None = None, ef_search: int | None = None) -> None:
    """nprobe for IVF indexes, efSearch for HNSW (and an IVF's HNSW quantizer); a setting that
    does not apply to the index is left alone. Works on CPU, GPU and replicated indexes."""
    ps = getattr(faiss, "GpuParameterSpace", faiss.ParameterSpace)() if on_gpu(index) else faiss.ParameterSpace()
    settings = [("nprobe", nprobe)] if nprobe else []
    settings += [("efSearch", ef_search), ("quantizer_efSearch", ef_search)] if ef_search else []
    for name, value in settings:
        try:
            ps.set_index_parameter(index, name, int(value))
        except RuntimeError:
            pass  # e.g. efSearch on an IVF index with a flat quantizer


def on_gpu(index: faiss.Index) -> bool:
    return type(index).__name__.startswith("Gpu") or isinstance(index, (faiss.IndexReplicas, faiss.IndexShards))


def to_cpu(index: faiss.Index) -> faiss.Index:
    """A CPU copy of a GPU index (faiss.write_index needs one); a CPU index as it is."""
    return faiss.index_gpu_to_cpu(index) if on_gpu(index) and hasattr(faiss, "index_gpu_to_cpu") else index


def _is_hnsw(index: faiss.Index) -> bool:
    while isinstance(index, faiss.IndexPreTransform):
        index = faiss.downcast_index(index.index)
    return isinstance(index, faiss.IndexHNSW)


def _gpu_count(use_gpu, param: str) -> int:
    if use_gpu is None or use_gpu is False or str(use_gpu).strip().lower() in ("false", "no", "off", "0", "cpu"):
        return 0
    count = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if not count and str(use_gpu).strip().lower() not in ("auto", ""):
        warnings.warn(
            f"{param}: use_gpu is {use_gpu!r} but faiss sees no GPU (faiss-cpu?); searching on the CPU", stacklevel=3
        )
    return count


def _faiss_message(err: Exception) -> str:
    """The useful tail of a faiss C++ exception ("Error in ... at file:line: could not parse ...")."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text.rsplit(": ", 1)[-1] if text.startswith("Error in") else text


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


def overlap_at(rows_a, rows_b) -> float:
    """Mean over queries of |a & b| / |a|: how much of each top-k list the other list holds."""
    return float(
        np.mean(
            [len(set(np.asarray(a).tolist()) & set(np.asarray(b).tolist())) / len(a) for a, b in zip(rows_a, rows_b)]
        )
    )


def write_trec(path: Path, run: dict[str, dict[str, float]], tag: str) -> None:
    lines = []
    for qid, docs in run.items():
        for rank, (doc, score) in enumerate(sorted(docs.items(), key=lambda x: -x[1]), start=1):
            lines.append(f"{qid} Q0 {doc} {rank} {score:.6f} {tag}")
    path.write_text("\n".join(lines) + "\n")


def bm25_run(doc_ids: list[str], doc_texts: list[str], qids: list[str], query_texts: list[str], k: int = 100):
    """BM25 baseline with bm25s (English stopwords), as in docs/method.md's reference figures."""
    import bm25s

    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(doc_texts, stopwords="en", show_progress=False), show_progress=False)
    results, scores = retriever.retrieve(
        bm25s.tokenize(query_texts, stopwords="en", show_progress=False), k=min(k, len(doc_ids)), show_progress=False
    )
    return to_run(qids, doc_ids, scores, results)
