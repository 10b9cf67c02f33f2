"""Benchmark: a corpus update of a few percent of the documents, refreshed without re-embedding
what did not change (issue 30). Not a test: run it by hand on a project where `dvc repro` ran.

From the project's prepared corpus (version 0) it makes, for each update fraction f, a version 1
(the corpus minus a seeded held-out set, which version 2 adds back: added documents are real
ones with their relevance judgements) and a version 2 (f of the documents changed: a third added,
a third edited, a third removed). The version-1 caches are the project's caches restricted to
version 1: the stale cache (pre-trained encoder) and the fresh one (the trained encoder's
re-embedding). Then version 2 is served three ways, each timed, with its encoder passes counted:

- full: every document of version 2 encoded by the trained encoder (the reference);
- delta: rows of the fresh version-1 cache for unchanged texts, the rest encoded (policy `always`
  after a re-embedding: what the refresh shards do);
- corrected: h(stale row) for unchanged texts, the rest encoded (no re-embedding ever: what
  `corrected_index` serves).

Test nDCG@10 of each, with test queries encoded by the trained encoder, and a check that no
removed document is ever retrieved.

    python -m benchmarks.corpus_update --project PATH --fractions 0.01,0.1
"""

from __future__ import annotations

import argparse
import json
import random
import re
import tempfile
import time
from pathlib import Path

import numpy as np
from freshen.cache import Cache, load_cache, write_cache
from freshen.cache_rows import Rows
from freshen.data.beir import load_beir
from freshen.data.corpus_file import CorpusFile
from freshen.embed_corpus import embed_to_cache, embedding_key
from freshen.encoding import encode, set_threads
from freshen.integrity import file_sha256
from freshen.modeling.corrector import Corrector
from freshen.modeling.encoder import Encoder, model_digest
from freshen.params import EncodeParams
from freshen.retrieval import build_index, evaluate_run, exclude_self, search, to_run

from benchmarks.common import RESULTS, command_line, machine, write_keeping_notes

K = 100


def edited(text: str) -> str:
    """An edit as a curator makes one: the last sentence dropped, or a sentence added to a short text."""
    sentences = re.split(r"(?<=[.!?])\s+", text.strip())
    return " ".join(sentences[:-1]) if len(sentences) > 1 else text + " This abstract was revised."


def write_corpus(path: Path, docs: dict[str, dict]) -> CorpusFile:
    with open(path, "w", encoding="utf-8") as fh:
        for doc_id, doc in docs.items():
            fh.write(json.dumps({"_id": doc_id, "title": doc["title"], "text": doc["text"]}) + "\n")
    return CorpusFile(path)


def restricted(cache: Cache, corpus: CorpusFile, out: Path, key: str | None = None) -> Cache:
    """`cache` (written before caches recorded row hashes, for a superset of `corpus` with the same
    texts) as a cache of `corpus`'s documents, with the row hashes of their texts; `key`: its
    embedding key as this version computes it (the old one also named the corpus file)."""
    row = cache.row_of()
    rows = np.array([row[i] for i in corpus.ids])

    def fill(arr):
        arr[:] = cache.embeddings[rows]

    keep = {k: v for k, v in cache.manifest.items() if k in ("model", "model_digest", "source")}
    if key is not None:
        keep["embedding_key"] = key
    return write_cache(out, corpus.ids, cache.dim, fill, keep, Rows.all(corpus.hashes, "encoded"))


def ndcg(cache: Cache, queries: np.ndarray, qids: list[str], qrels: dict, removed: set[str]) -> float:
    scores, rows = search(build_index(cache.embeddings, use_gpu=False), queries, K)
    run = exclude_self(to_run(qids, cache.ids, scores, rows))
    leaked = {d for docs in run.values() for d in docs} & removed
    if leaked:
        raise AssertionError(f"removed documents retrieved: {sorted(leaked)[:5]}")
    return evaluate_run(qrels, run)["ndcg_at_10"]


def one_update(project: Path, fraction: float, seed: int, work: Path, encode_params: EncodeParams, ctx: dict) -> dict:
    ds, n0 = ctx["dataset"], len(ctx["dataset"].corpus)
    rng = random.Random(seed)
    changed = rng.sample(sorted(ds.corpus), max(3, round(fraction * n0)))
    third = len(changed) // 3
    added, removed, edits = changed[:third], changed[third : 2 * third], changed[2 * third :]
    v1_docs = {d: doc for d, doc in ds.corpus.items() if d not in set(added)}
    v2_docs = {d: doc for d, doc in v1_docs.items() if d not in set(removed)}
    for d in edits:
        v2_docs[d] = {**v2_docs[d], "text": edited(v2_docs[d]["text"])}
    v2_docs.update({d: ds.corpus[d] for d in added})
    v1 = write_corpus(work / "v1.jsonl", v1_docs)
    v2 = write_corpus(work / "v2.jsonl", v2_docs)
    stale_v1 = restricted(load_cache(project / "artifacts/cache/initial"), v1, work / "stale-v1")
    manifest = {"model": "trained", "model_digest": ctx["encoder_digest"], "source": "benchmark"}
    key = embedding_key(ctx["encoder"], manifest, encode_params)
    fresh_v1 = restricted(load_cache(project / "artifacts/cache/reembedded"), v1, work / "fresh-v1", key)
    out = {"fraction": fraction, "docs_v1": len(v1), "docs_v2": len(v2), "added": len(added)}
    out.update(edited=len(edits), removed=len(removed))
    systems = {
        "full": {"reuse_from": []},
        "delta": {"reuse_from": [fresh_v1.path]},
        "corrected": {"reuse_from": [], "corrected": (stale_v1, ctx["corrector"])},
    }
    for name, kw in systems.items():
        started = time.perf_counter()
        cache, stats = embed_to_cache(
            ctx["encoder"], v2, work / name, encode_params, manifest, f"{name} {fraction}", **kw
        )
        build_index(cache.embeddings, use_gpu=False)  # what serving it costs besides the rows
        seconds = time.perf_counter() - started
        score = ndcg(cache, ctx["queries"], ctx["qids"], ctx["qrels"], set(removed))
        out[name] = {"passes": stats["passes"], "seconds": round(seconds, 1), "ndcg_at_10": round(score, 4)}
        out[name]["rows"] = cache.rows.counts()
    out["delta"]["passes_vs_full"] = round(out["delta"]["passes"] / out["full"]["passes"], 4)
    return out


def report(results: list[dict], args, seconds: float) -> str:
    lines = [
        "# A corpus update refreshed without re-embedding what did not change",
        "",
        f"Machine: {machine()}",
        f"Command: `{command_line('corpus_update')}`",
        f"Project: the outputs of `dvc repro` with the default params (trained encoder and corrector, "
        f"stale and re-embedded caches); test queries encoded by the trained encoder; {args.seconds_note}",
        f"The project's own re-embedded cache of the unchanged corpus: test nDCG@10 {args.v0:.4f}.",
        "",
        "| update | added / edited / removed | system | encoder passes | share of full | wall s | test nDCG@10 | minus full |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        full = r["full"]
        for name in ("full", "delta", "corrected"):
            s = r[name]
            lines.append(
                f"| {r['fraction']:.0%} | {r['added']} / {r['edited']} / {r['removed']} | {name} | {s['passes']} | "
                f"{s['passes'] / full['passes']:.2%} | {s['seconds']} | {s['ndcg_at_10']:.4f} | "
                f"{s['ndcg_at_10'] - full['ndcg_at_10']:+.4f} |"
            )
    lines += [
        "",
        "full: every document of the new version encoded. delta: rows of the re-embedded cache of the "
        "old version for unchanged texts, the added and edited documents encoded. corrected: h(stale "
        "row) for unchanged texts, the added and edited documents encoded (no re-embedding ever). No "
        "removed document was retrieved by any system (checked on every top-100 list).",
        "",
        f"Goal (issue 30): after a 1% update, at most 2% of a full re-embedding's passes and test "
        f"nDCG@10 within 0.005 of it. Total {seconds:.0f} s.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.corpus_update", description=__doc__.split("\n")[0])
    parser.add_argument("--project", type=Path, required=True, help="a project folder where `dvc repro` ran")
    parser.add_argument("--fractions", default="0.01,0.1")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "corpus_update")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    set_threads()
    project = args.project.resolve()
    model = project / "artifacts/model"
    ds = load_beir(project / "data/prepared", required=("test",))
    qids = sorted(ds.evaluation_qrels("test"))
    encoder = Encoder.load(model / "encoder")
    encode_params = EncodeParams(precision="auto")
    ctx = {
        "dataset": ds,
        "qrels": ds.evaluation_qrels("test"),
        "qids": qids,
        "encoder": encoder,
        "encoder_digest": model_digest(model / "encoder"),
        "corrector": Corrector.load(model / "corrector").eval(),
        "queries": encode(encoder, [ds.queries[q] for q in qids], "query", precision="auto"),
    }
    v0 = load_cache(project / "artifacts/cache/reembedded")
    args.v0 = ndcg(v0, ctx["queries"], qids, ctx["qrels"], set())
    args.seconds_note = f"corpus sha256 {file_sha256(project / 'data/prepared/corpus.jsonl')[:12]}."
    results = []
    for fraction in [float(f) for f in args.fractions.split(",")]:
        with tempfile.TemporaryDirectory(prefix="corpus-update-") as tmp:
            results.append(one_update(project, fraction, args.seed, Path(tmp), encode_params, ctx))
        print(json.dumps(results[-1]))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    write_keeping_notes(args.out / "report.md", report(results, args, time.perf_counter() - started))
    print((args.out / "report.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
