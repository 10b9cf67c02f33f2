"""Step 5, evaluate: search dev and test queries and score nDCG@10, Recall@100, MRR@10 for
the trained model on the re-embedded cache, and, to show what training and the corrector
bought, the zero-shot encoder, the trained queries on the stale and on the corrected cache,
and BM25. Also measures the cache's drift over the whole corpus."""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

import numpy as np

from freshen.atomic import atomic_dir, write_json, write_text
from freshen.embed_corpus import encode_options, place
from freshen.encoding import encode, set_threads
from freshen.errors import DataError
from freshen.integrity import checkpoint_digest
from freshen.locks import hold
from freshen.modeling.corrector import Corrector
from freshen.modeling.encoder import Encoder
from freshen.params import EvaluateParams, Params
from freshen.retrieval import (
    bm25_run,
    build_index,
    evaluate_run,
    exclude_self,
    index_settings,
    overlap_at,
    search,
    to_run,
    write_trec,
)
from freshen.saturation import evaluation_note
from freshen.steps.common import NullLog, checked_cache, path, prepared

logger = logging.getLogger(__name__)

SECTIONS = ["model", "encode", "evaluate"]
NOT_SPLITS = ("drift", "vs_zero_shot")  # the top-level sections of the metrics that are no split
MEASURED = "measured"  # what the figures are of: digests of the model and caches (promote checks them)


def make_index(embeddings, cfg: EvaluateParams):
    """The search index over one cache, as `evaluate.index` / `nprobe` / `ef_search` / `use_gpu` say."""
    return build_index(embeddings, **index_settings(cfg))


def row_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float32), b.astype(np.float32)
    num = (a * b).sum(1)
    return float((num / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)).mean())


def run(params: Params, root: Path, log=NullLog()) -> dict:
    cfg = params.evaluate
    # one evaluate of this project at a time: the runs, the metrics and the plot table
    with hold(path(root, cfg.out_dir), path(root, cfg.metrics), path(root, cfg.plot)):
        return evaluate_and_write(params, root, log)


def evaluate_and_write(params: Params, root: Path, log=NullLog()) -> dict:
    """Search, score, and write the runs, metrics/eval.json and the plot table; returns the metrics."""
    set_threads()
    cfg, enc_p = params.evaluate, params.encode
    ds = prepared(params, root)
    stale = checked_cache(path(root, params.cache.out_dir), params, root, ds)
    fresh = checked_cache(path(root, params.reembed.out_dir), params, root, ds)
    if stale.ids != fresh.ids:
        raise DataError(
            fresh.path / "ids.json",
            f"documents are in another order than in {stale.path}: rebuild both caches (dvc repro)",
        )
    model_dir = path(root, params.train.out_dir)
    zero_shot = place(Encoder.from_params(params.model.model_dump(), root), enc_p.device)
    trained = place(Encoder.load(model_dir / "encoder"), enc_p.device)
    corrector = (
        Corrector.load(model_dir / "corrector", expect_dim=stale.dim) if (model_dir / "corrector").is_dir() else None
    )
    k = cfg.depth
    indexes = {"stale": make_index(stale.embeddings, cfg), "fresh": make_index(fresh.embeddings, cfg)}
    if corrector is not None:
        corrected = np.empty(stale.embeddings.shape, dtype=np.float32)
        corrector.correct_into(stale.embeddings, corrected)
        indexes["corrected"] = make_index(corrected, cfg)
    # `reembed.corrector: true` writes h(cache) instead of encoding the corpus: then there is no
    # fresh cache to measure drift and overlap against, and "trained" searches that estimate
    measured = not fresh.manifest.get("corrected", False)
    systems = {
        "zero_shot": ("zero_shot", "stale"),
        "trained": ("trained", "fresh"),
        "trained_stale_cache": ("trained", "stale"),
    }
    if corrector is not None:
        systems["trained_corrected_cache"] = ("trained", "corrected")

    metrics: dict = {}
    runs_out: dict[str, dict] = {}
    doc_texts = ds.doc_texts(stale.ids)
    splits = cfg.splits
    for split in splits:
        qrels = ds.evaluation_qrels(split)  # queries with a relevant judgement only
        qids = sorted(qrels)
        texts = [ds.queries[q] for q in qids]
        q_emb = {
            name: encode(enc, texts, "query", **encode_options(enc_p))
            for name, enc in (("zero_shot", zero_shot), ("trained", trained))
        }
        found = {}
        metrics[split] = {"queries": len(qids)}
        for system, (enc_name, index_name) in systems.items():
            scores, rows = search(indexes[index_name], q_emb[enc_name], k)
            found[system] = rows
            run_ = exclude_self(to_run(qids, stale.ids, scores, rows))
            metrics[split][system] = evaluate_run(qrels, run_)
            runs_out[f"{split}.{system}"] = run_
        if cfg.bm25:
            run_ = exclude_self(bm25_run(stale.ids, doc_texts, qids, texts, k))
            metrics[split]["bm25"] = evaluate_run(qrels, run_)
            runs_out[f"{split}.bm25"] = run_
        # how close the stale and corrected caches' top-100 are to the fresh cache's
        if measured:
            metrics[split]["top100_overlap_stale_vs_fresh"] = overlap_at(found["trained_stale_cache"], found["trained"])
        if measured and corrector is not None:
            metrics[split]["top100_overlap_corrected_vs_fresh"] = overlap_at(
                found["trained_corrected_cache"], found["trained"]
            )
    metrics["drift"] = {}
    if measured:
        metrics["drift"]["cos_stale_vs_fresh"] = row_cosine(stale.embeddings, fresh.embeddings)
    if measured and corrector is not None:
        metrics["drift"]["cos_corrected_vs_fresh"] = row_cosine(corrected, fresh.embeddings)
    # trained minus zero-shot nDCG@10: what training bought over the pre-trained encoder
    metrics["vs_zero_shot"] = {
        s: metrics[s]["trained"]["ndcg_at_10"] - metrics[s]["zero_shot"]["ndcg_at_10"] for s in splits
    }
    metrics[MEASURED] = {
        "model_digest": checkpoint_digest(model_dir),
        "stale_cache": stale.digest(),
        "fresh_cache": fresh.digest(),
    }

    with atomic_dir(path(root, cfg.out_dir)) as tmp:
        for name, run_ in runs_out.items():
            write_trec(tmp / f"{name}.trec", run_, name)
    write_json(path(root, cfg.metrics), metrics)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["split", "system", "ndcg_at_10", "recall_at_100", "mrr_at_10"])
    for split in splits:
        for system, m in metrics[split].items():
            if isinstance(m, dict):
                w.writerow(
                    [split, system, f"{m['ndcg_at_10']:.4f}", f"{m['recall_at_100']:.4f}", f"{m['mrr_at_10']:.4f}"]
                )
    write_text(path(root, cfg.plot), buf.getvalue())
    flat = {
        f"{split}.{system}.{name}": v
        for split in splits
        for system, m in metrics[split].items()
        if isinstance(m, dict)
        for name, v in m.items()
    }
    flat.update(
        {f"{split}.{key}": v for split in splits for key, v in metrics[split].items() if not isinstance(v, dict)}
    )
    flat.update({f"{section}.{k}": v for section in NOT_SPLITS for k, v in metrics[section].items()})
    log.metrics({k.replace("@", "_at_"): v for k, v in flat.items()})
    log.artifact(path(root, cfg.plot), "plots")
    logger.info(report(metrics))
    note = evaluation_note(metrics, "dev") if "dev" in splits else None
    if note:
        logger.warning(f"evaluate: {note}")
    if "dev" in splits and metrics["vs_zero_shot"]["dev"] <= 0:
        logger.info(
            f"evaluate: the trained model does not beat the pre-trained encoder on dev (nDCG@10 "
            f"{metrics['dev']['trained']['ndcg_at_10']:.4f} vs {metrics['dev']['zero_shot']['ndcg_at_10']:.4f})"
        )
    return metrics


def report(metrics: dict) -> str:
    lines = []
    for split, systems in metrics.items():
        if split in NOT_SPLITS or split == MEASURED:
            continue
        lines.append(f"{split:>5} {'system':<26} nDCG@10  R@100   MRR@10")
        for system, m in systems.items():
            if isinstance(m, dict):
                lines.append(
                    f"{'':>5} {system:<26} {m['ndcg_at_10']:.4f}   {m['recall_at_100']:.4f}  {m['mrr_at_10']:.4f}"
                )
            else:  # an overlap figure, or the split's query count
                lines.append(f"{'':>5} {system:<26} {m:.4f}" if isinstance(m, float) else f"{'':>5} {system:<26} {m}")
    lines.append(
        "drift: "
        + (
            ", ".join(f"{k}={v:.4f}" for k, v in metrics["drift"].items())
            or "not measured: the re-embedded cache is h(cache), not a fresh encoding"
        )
    )
    return "\n".join(lines)
