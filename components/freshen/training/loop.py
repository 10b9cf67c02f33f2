"""Retriever + corrector training (METHOD.md section 1), on TAS batches (section 2).

One step: embed the batch's queries; score the whole cache through the corrector, in chunks;
select k negatives per query (never a positive); embed positives and negatives fresh; the
retriever learns from cross-entropy over them and the in-batch passages; the corrector learns
from the drift between its output and those fresh embeddings, with its own optimiser."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import get_linear_schedule_with_warmup

from freshen.encoding import autocast_dtype, encode_into
from freshen.errors import FreshenError
from freshen.modeling.corrector import Corrector
from freshen.sampling.negatives import SELECTIONS, select_negatives
from freshen.sampling.tas import RandomBatches, TASBatches
from freshen.training.losses import contrastive_loss, drift_loss, mean_cosine

log = logging.getLogger(__name__)
STRATEGIES = ("in_batch", "stale", "corrected", "refresh")


@dataclass
class Counters:
    """Target-encoder forward passes (the cost unit of METHOD.md) and wall time."""

    train_passage_passes: int = 0
    reembed_passes: int = 0
    refreshes: int = 0
    query_passes: int = 0
    wall_seconds: float = 0.0

    def as_dict(self) -> dict:
        return {**self.__dict__, "target_passes_total": self.train_passage_passes + self.reembed_passes}


@dataclass
class TrainResult:
    encoder: object
    corrector: Corrector | None
    counters: Counters
    curve: list[dict] = field(default_factory=list)


def check_train_params(p: dict) -> None:
    neg = p.get("negatives", {})
    if neg.get("strategy") not in STRATEGIES:
        raise FreshenError(f"params.yaml: field 'train.negatives.strategy': must be one of {STRATEGIES}, "
                           f"got {neg.get('strategy')!r}")
    if neg.get("selection", "topk") not in SELECTIONS:
        raise FreshenError(f"params.yaml: field 'train.negatives.selection': must be one of {SELECTIONS}, "
                           f"got {neg.get('selection')!r}")
    if p.get("batching", "tas") not in ("tas", "random"):
        raise FreshenError(f"params.yaml: field 'train.batching': must be 'tas' or 'random', got {p.get('batching')!r}")


def make_batches(p: dict, cluster_of: dict[str, int], train_qids: list[str], rng: np.random.Generator):
    if p.get("batching", "tas") == "tas":
        return TASBatches({q: cluster_of[q] for q in train_qids}, int(p["batch_size"]),
                          int(p.get("clusters_per_batch", 1)), rng)
    return RandomBatches(train_qids, int(p["batch_size"]), rng)


def train(encoder, dataset, cache, cluster_of: dict[str, int], p: dict, seed: int,
          on_log=None) -> TrainResult:
    """Train `encoder` in place; return it with its corrector, the counters and the curve."""
    check_train_params(p)
    neg_p, cor_p = p["negatives"], p.get("corrector", {})
    strategy, k = neg_p["strategy"], int(neg_p.get("k", 4))
    refresh_every = int(neg_p.get("refresh_every", 0) or 0)
    if strategy == "refresh" and refresh_every <= 0:
        raise FreshenError("params.yaml: field 'train.negatives.refresh_every': must be > 0 for strategy 'refresh'")
    if strategy == "in_batch":
        k = 0

    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)

    positives = dataset.positives("train")
    train_qids = sorted(q for q in positives if q in cluster_of or p.get("batching") == "random")
    if not train_qids:
        raise FreshenError("no training queries with positives (check qrels/train.tsv and the clusters)")
    batches = make_batches(p, cluster_of, train_qids, rng)
    row_of = cache.row_of()
    missing = [d for q in train_qids for d in positives[q] if d not in row_of]
    if missing:
        raise FreshenError(f"{cache.path}: cache lacks {len(missing)} judged documents, e.g. '{missing[0]}'")
    doc_ids = cache.ids
    doc_texts = dataset.doc_texts(doc_ids)
    pos_rows = {q: [row_of[d] for d in positives[q]] for q in train_qids}

    # The stale cache, in memory as float16 (it is the training-time index, not the artifact).
    table = torch.from_numpy(np.array(cache.embeddings, dtype=np.float16))  # a private copy
    use_corrector = strategy in ("corrected",) or (strategy == "refresh" and cor_p.get("with_refresh", False))
    corrector = Corrector.from_params(cache.dim, cor_p) if strategy != "in_batch" else None
    cor_opt = torch.optim.Adam(corrector.parameters(), lr=float(cor_p.get("lr", 1e-3))) if corrector else None
    cor_warmup = int(cor_p.get("warmup_steps", 0))

    steps = int(p["steps"])
    opt = torch.optim.AdamW(encoder.parameters(), lr=float(p["lr"]), weight_decay=float(p.get("weight_decay", 0.0)))
    sched = get_linear_schedule_with_warmup(opt, int(float(p.get("warmup_ratio", 0.1)) * steps), steps)
    temperature = float(p.get("temperature", 0.05))
    passage_len = int(p.get("passage_max_len") or encoder.config.passage_max_len)
    amp = autocast_dtype(p.get("precision", "fp32"), torch.device("cpu"))  # training runs on the CPU here
    counters, curve = Counters(), []
    started = time.perf_counter()
    encoder.train()

    from tqdm.auto import tqdm

    for step in tqdm(range(1, steps + 1), desc="train", unit="step", mininterval=20, disable=False):
        qids = next(batches)
        pos_docs = [positives[q][int(rng.integers(len(positives[q])))] for q in qids]
        with torch.autocast("cpu", dtype=amp, enabled=amp is not None):
            q_emb = encoder.embed([dataset.queries[q] for q in qids], "query")
        counters.query_passes += len(qids)

        # 2-3. score the (corrected) cache and pick negatives, never a positive of the query
        neg_rows = torch.empty((len(qids), 0), dtype=torch.long)
        correcting = corrector is not None and use_corrector and step > cor_warmup
        if k > 0:
            neg_rows = select_negatives(
                q_emb.detach().float(), table, k, [pos_rows[q] for q in qids],
                corrector=corrector if correcting else None, selection=neg_p.get("selection", "topk"),
                beta=float(neg_p.get("beta", 20.0)), candidates=int(neg_p.get("candidates", 100)),
                bins=int(neg_p.get("bins", 10)), positive_rows=[row_of[d] for d in pos_docs],
                chunk_size=int(neg_p.get("chunk_size", 65536)), generator=gen, rng=rng)

        # 4. fresh embeddings of positives and negatives, with gradients
        rows = [row_of[d] for d in pos_docs] + neg_rows.flatten().tolist()
        with torch.autocast("cpu", dtype=amp, enabled=amp is not None):
            p_emb = encoder.embed([doc_texts[r] for r in rows], "passage", max_len=passage_len)
        counters.train_passage_passes += len(rows)

        # 5. retriever loss over sampled negatives + in-batch passages
        rows_t = torch.tensor(rows)
        mask = torch.zeros((len(qids), len(rows)), dtype=torch.bool)
        for i, q in enumerate(qids):
            mask[i] = torch.isin(rows_t, torch.tensor(pos_rows[q]))
            mask[i, i] = False
        loss = contrastive_loss(q_emb.float(), p_emb.float(), torch.arange(len(qids)), mask, temperature)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(encoder.parameters(), float(p.get("grad_clip", 1.0)))
        opt.step()
        sched.step()

        # 6. corrector: drift loss on every target embedded fresh this step
        record = {"step": step, "loss": float(loss.detach())}
        if corrector is not None:
            fresh = p_emb.detach().float()
            stale = table[rows_t].float()
            corrected = corrector(stale)
            record["cos_stale_fresh"] = mean_cosine(stale, fresh)
            record["cos_corrected_fresh"] = mean_cosine(corrected.detach(), fresh)
            c_loss = drift_loss(corrected, fresh)
            cor_opt.zero_grad(set_to_none=True)
            c_loss.backward()
            cor_opt.step()
            record["corrector_loss"] = float(c_loss.detach())

        # 7. optional refresh: re-embed the whole corpus with the current g
        if refresh_every and step % refresh_every == 0 and step < steps:
            fresh_table = np.zeros((len(doc_ids), cache.dim), dtype=np.float32)
            encode_into(encoder, doc_texts, "passage", fresh_table, batch_size=int(p.get("encode_batch_size", 64)),
                        precision=p.get("encode_precision", "auto"), desc=f"refresh@{step}", max_len=passage_len)
            table = torch.from_numpy(fresh_table.astype(np.float16))
            counters.reembed_passes += len(doc_ids)
            counters.refreshes += 1
            encoder.train()

        counters.wall_seconds = time.perf_counter() - started
        record.update(train_passage_passes=counters.train_passage_passes, reembed_passes=counters.reembed_passes)
        curve.append(record)
        if on_log and (step % int(p.get("log_every", 10)) == 0 or step == steps):
            on_log(record, step)
    counters.wall_seconds = time.perf_counter() - started
    return TrainResult(encoder, corrector, counters, curve)
