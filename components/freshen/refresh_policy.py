"""Whether a cache refresh re-embeds the corpus with the champion (orchestration.refresh).

`always` re-embeds (rows the champion already embedded, for texts that did not change, are
copied, not encoded); `never` serves what `corrected_index` builds: h(stale row) for every text
the stale cache holds, the added and edited documents encoded; `drift` measures on a probe how
far h(stale cache) is from the champion's own embeddings and re-embeds past a threshold. A
champion without a corrector is always re-embedded: nothing else can serve it.

`fetch_champion` makes the decision once per refresh run and writes it beside the champion
(`refresh.json`, bound to the champion's encoder and the corpus version); the re-embedding
steps read it and skip when it says no."""

from __future__ import annotations

import numpy as np
import torch

from freshen.atomic import write_json
from freshen.cache import Cache
from freshen.embed_corpus import plan_rows
from freshen.encoding import encode
from freshen.errors import FreshenError
from freshen.jsonfile import read_json
from freshen.params import EncodeParams
from freshen.params.orchestration import RefreshParams
from freshen.retrieval import overlap_at

DECISION = "refresh.json"
OVERLAP_K = 10


def probe_drift(
    encoder, corrector, stale: Cache, corpus, refresh: RefreshParams, encode_params: EncodeParams, seed: int
):
    """Mean cosine between h(stale row) and the champion's embedding of the same text, and the
    top-10 overlap of the probe documents ranked against each other both ways, on a seeded
    sample of the documents the stale cache holds. Returns (stats, encoder passes spent)."""
    plan = plan_rows(corpus.hashes, [stale], [True])
    held = np.flatnonzero(plan.source == 0)
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
    drifted = stats["mean_cosine"] < refresh.min_cosine
    relation = "below" if drifted else "at or above"
    return {
        "policy": "drift",
        "reembed": bool(drifted),
        "reason": f"mean cosine of h(stale row) to the champion's row {stats['mean_cosine']} is {relation} "
        f"orchestration.refresh.min_cosine {refresh.min_cosine} (probe of {stats['probe_docs']} documents)",
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
