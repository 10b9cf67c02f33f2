"""Whether a cache refresh re-embeds the corpus with the champion (orchestration.refresh).

`always` re-embeds (rows the champion already embedded, for texts that did not change, are
copied, not encoded); `never` serves what `corrected_index` builds: h(stale row) for every text
the stale cache holds, the added and edited documents encoded; `drift` measures how far h(stale cache) has fallen
behind the champion and re-embeds past a threshold. Its `signal` is either `dev_ndcg` (the
champion's dev queries search h(stale cache); re-embed when their nDCG@10 is more than
`max_dev_drop` below the dev figure the champion was promoted on, its own re-embedding: labels,
no passage encoded) or `cosine` (a probe of documents encoded by the champion, compared with
h(stale row)). Cosine is the weaker predictor of retrieval (docs/results.md). A champion without
a corrector is always re-embedded: nothing else can serve it.

`fetch_champion` makes the decision once per refresh run and writes it beside the champion
(`refresh.json`, bound to the champion's encoder and the corpus version); the re-embedding
steps read it and skip when it says no."""

from __future__ import annotations

import numpy as np
import torch

from freshen.atomic import write_json
from freshen.cache import Cache
from freshen.encoding import encode
from freshen.errors import DataError, FreshenError
from freshen.jsonfile import read_json
from freshen.params import EncodeParams
from freshen.params.orchestration import RefreshParams
from freshen.retrieval import overlap_at
from freshen.row_plan import plan_rows

DECISION = "refresh.json"
OVERLAP_K = 10


def held_rows(stale: Cache, corpus):
    """The row plan of the corpus over the stale cache, and the documents whose text it holds."""
    if stale.rows is None:
        raise DataError(
            stale.path / "manifest.json",
            "records no row hashes (written by an older Freshen): re-run embed_cache",
            field="doc_hashes_sha256",
        )
    plan = plan_rows(corpus.hashes, [stale], [True])
    return plan, np.flatnonzero(plan.source == 0)


def probe_drift(
    encoder, corrector, stale: Cache, corpus, refresh: RefreshParams, encode_params: EncodeParams, seed: int
):
    """Mean cosine between h(stale row) and the champion's embedding of the same text, and the
    top-10 overlap of the probe documents ranked against each other both ways, on a seeded
    sample of the documents the stale cache holds. Returns (stats, encoder passes spent)."""
    plan, held = held_rows(stale, corpus)
    if len(held) < 2:
        raise FreshenError(f"{stale.path}: holds {len(held)} of the corpus's current texts; nothing to probe")
    rng = np.random.default_rng(seed)
    probe = np.sort(rng.choice(held, size=min(refresh.probe_docs, len(held)), replace=False))
    sample = corpus.take(probe)
    texts = sample.read(0, len(sample))  # one pass over the file, not one open per document
    fresh = encode(encoder, texts, "passage", batch_size=encode_params.batch_size, precision=encode_params.precision)
    with torch.inference_mode():
        corrected = corrector(torch.from_numpy(np.asarray(stale.embeddings[plan.row[probe]], np.float32))).numpy()
    cosine = (fresh * corrected).sum(1) / (np.linalg.norm(fresh, axis=1) * np.linalg.norm(corrected, axis=1) + 1e-12)
    k = min(OVERLAP_K, len(probe) - 1)
    top_fresh, top_corrected = (top_others(fresh @ rows.T, k) for rows in (fresh, corrected))
    overlap = overlap_at(top_fresh, top_corrected)
    stats = {"probe_docs": len(probe), "mean_cosine": round(float(cosine.mean()), 4)}
    stats[f"overlap_at_{k}"] = round(float(overlap), 4)
    return stats, len(probe)


def probe_dev(encoder, corrector, stale: Cache, corpus, queries: dict, qrels: dict, encode_params: EncodeParams):
    """Dev nDCG@10 of the champion's queries over h(stale row) of every document whose current
    text the stale cache holds (added and edited ones are left out: no passage is encoded), as
    `evaluate` scores it (top 100, a query never retrieves its own id). Returns (stats, 0 passes)."""
    import faiss

    from freshen.retrieval import evaluate_run, exclude_self, to_run

    plan, held = held_rows(stale, corpus)
    if not len(held):
        raise FreshenError(f"{stale.path}: holds none of the corpus's current texts; nothing to measure")
    table = np.empty((len(held), stale.dim), dtype=np.float32)
    corrector.eval()
    corrector.correct_into(stale.embeddings[plan.row[held]], table)
    qids = sorted(qrels)
    vectors = encode(encoder, [queries[q] for q in qids], "query", precision=encode_params.precision)
    index = faiss.IndexFlatIP(stale.dim)
    index.add(table)
    scores, rows = index.search(np.ascontiguousarray(vectors), min(100, len(held)))
    ids = [corpus.ids[i] for i in held]
    run = exclude_self(to_run(qids, ids, scores, rows))
    stats = {
        "dev_queries": len(qids),
        "dev_docs": len(held),
        "dev_ndcg_at_10": round(evaluate_run(qrels, run)["ndcg_at_10"], 4),
    }
    return stats, 0


def top_others(scores: np.ndarray, k: int) -> np.ndarray:
    """Each row's top `k` columns, its own (the diagonal) left out."""
    scores = scores.copy()
    np.fill_diagonal(scores, -np.inf)
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def decide(refresh: RefreshParams, has_corrector: bool, measure) -> dict:
    """The decision: {policy, reembed, reason, and what `measure()` (probe_drift's stats and passes)
    found when the policy is drift}."""
    if refresh.policy == "always":
        return {"policy": "always", "reembed": True, "reason": "orchestration.refresh.policy is always"}
    if not has_corrector:
        return {
            "policy": refresh.policy,
            "reembed": True,
            "reason": "the champion has no corrector: only its re-embedding can serve it",
        }
    if refresh.policy == "never":
        return {
            "policy": "never",
            "reembed": False,
            "reason": "orchestration.refresh.policy is never: corrected_index serves h(stale cache) "
            "plus the added and edited documents encoded",
        }
    stats, passes = measure()
    if refresh.signal == "dev_ndcg":
        drop = round(stats["promoted_dev_ndcg_at_10"] - stats["dev_ndcg_at_10"], 4)
        drifted = drop > refresh.max_dev_drop
        reason = (
            f"dev nDCG@10 over h(stale cache) {stats['dev_ndcg_at_10']} is {drop} below the champion's promoted "
            f"{stats['promoted_dev_ndcg_at_10']} ({'more than' if drifted else 'within'} "
            f"orchestration.refresh.max_dev_drop {refresh.max_dev_drop}; {stats['dev_queries']} dev queries)"
        )
        stats = {**stats, "dev_drop": drop}
    else:
        drifted = stats["mean_cosine"] < refresh.min_cosine
        reason = (
            f"mean cosine of h(stale row) to the champion's row {stats['mean_cosine']} is "
            f"{'below' if drifted else 'at or above'} orchestration.refresh.min_cosine {refresh.min_cosine} "
            f"(probe of {stats['probe_docs']} documents)"
        )
    return {
        "policy": "drift",
        "signal": refresh.signal,
        "reembed": bool(drifted),
        "reason": reason,
        "probe_passes": passes,
        **stats,
    }


def write_decision(folder, decision: dict, encoder_digest: str, corpus_sha256: str) -> dict:
    full = {**decision, "encoder_digest": encoder_digest, "corpus_sha256": corpus_sha256}
    write_json(folder / DECISION, full)
    return full


def reembed_skip_reason(refresh: RefreshParams, folder, encoder_digest: str, corpus_sha256: str) -> str | None:
    """Why a re-embedding step has nothing to do under this policy (None: it runs)."""
    if refresh.policy == "always":
        return None
    path = folder / DECISION
    if not path.is_file():
        raise FreshenError(f"{path}: no refresh decision (run `freshen fetch-champion` first)")
    decision = read_json(path)
    if (decision.get("encoder_digest"), decision.get("corpus_sha256")) != (encoder_digest, corpus_sha256):
        raise FreshenError(
            f"{path}: the decision was made for another champion or corpus version (run `freshen fetch-champion` again)"
        )
    if decision.get("policy") != refresh.policy:
        raise FreshenError(
            f"{path}: field 'policy': decided under '{decision.get('policy')}', "
            f"orchestration.refresh.policy is '{refresh.policy}' (run `freshen fetch-champion` again)"
        )
    return None if decision.get("reembed") else f"no re-embedding: {decision['reason']}"
