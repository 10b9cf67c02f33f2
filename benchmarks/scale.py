"""Training at corpus scale (issue 29): step latency, peak memory and the ANN path's fidelity as
the cached corpus grows from 100k to 10M passages x 384.

    python -m benchmarks.scale                                   # 100k, 1M, 10M rows; all-MiniLM-L6-v2
    python -m benchmarks.scale --rows 3000,30000 --steps 2 --set train.negatives.ann_threshold=10000 \\
        --set train.negatives.ann_index=IVF16,Flat --out /tmp/scale      # a quick look

Each size is written once under --work: a corpus.jsonl of generated texts (a topic's words among
filler words) and a cache of random but clustered embeddings (a topic's random unit centre plus
noise, normalised, float16), in corpus order. Each size then trains in a fresh process, so that
its peak RSS (ru_maxrss) is its own: a `Trainer` with the default `train` section (change it
with --set) over that cache, on --queries generated training queries, passage texts read from
the corpus file by byte offset (`CorpusFile`), never held in memory. The corrector samples from
the first step (`train.corrector.warmup_steps=0`), so every timed step pays for the corrected
scoring; one untimed step first, then --steps timed steps, split into negatives (candidate
generation and scoring through the corrector: exact below `ann_threshold` rows, faiss
candidates rescored past it), encode (the encoder's forward passes), backward (loss, backward
pass, optimiser step) and corrector (its update). Past `ann_threshold`, the ANN path's top-100
(`CacheScorer`: faiss candidates rescored through the trained corrector) for --overlap-queries
queries drawn near cache rows is compared with exact search through the corrector.

The goals (issue 29): step latency at 10M rows within 2x of 100k; peak RSS below 1.5x the
float16 cache."""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS, ROOT, command_line, machine, write_keeping_notes
from benchmarks.encode_memory import vocabulary
from benchmarks.search import near_rows

TOPICS, CHUNK = 1000, 200_000
PARTS = ("negatives", "encode", "backward", "corrector")


def write_data(folder: Path, n: int, dim: int, words: list[str], seed: int = 13) -> Path:
    """corpus.jsonl and cache/ for n passages of `dim` (kept: written once per size, width and seed)."""
    from freshen.cache import write_cache

    folder.mkdir(parents=True, exist_ok=True)
    if (folder / "cache" / "manifest.json").is_file():
        return folder
    rng = np.random.default_rng(seed)
    vocab = np.array(words)
    topic_words = rng.integers(len(vocab), size=(TOPICS, 8))
    with open(folder / "corpus.jsonl", "w", encoding="utf-8") as fh:
        for start in range(0, n, CHUNK):
            rows = np.arange(start, min(n, start + CHUNK))
            own = topic_words[rows % TOPICS][np.arange(len(rows))[:, None], rng.integers(8, size=(len(rows), 4))]
            filler = rng.integers(len(vocab), size=(len(rows), 24))
            for i, r in enumerate(rows):
                text = " ".join(vocab[np.concatenate([own[i], filler[i]])])
                fh.write(json.dumps({"_id": f"d{r}", "title": "", "text": text}) + "\n")
    centres = rng.standard_normal((TOPICS, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)

    def fill(arr: np.ndarray) -> None:
        for start in range(0, n, CHUNK):
            rows = np.arange(start, min(n, start + CHUNK))
            emb = centres[rows % TOPICS] + 0.06 * rng.standard_normal((len(rows), dim)).astype(np.float32)
            arr[start : start + len(rows)] = emb / np.linalg.norm(emb, axis=1, keepdims=True)

    write_cache(folder / "cache", [f"d{i}" for i in range(n)], dim, fill, {"model_digest": "synthetic"})
    return folder


class SyntheticDataset:
    """What `Trainer` reads of a dataset: training queries, their judged passages, and passage
    texts by cache row (the corpus file itself: rows are in corpus order)."""

    def __init__(self, corpus, n_queries: int, seed: int = 13):
        rng = np.random.default_rng([seed, 1])
        self.corpus = corpus
        docs = rng.choice(len(corpus), size=n_queries, replace=False)
        self.queries = {f"q{i}": " ".join(corpus[int(d)].split()[:4]) for i, d in enumerate(docs)}
        self.qrels = {"train": {f"q{i}": {f"d{d}": 1} for i, d in enumerate(docs)}}
        clusters = max(1, n_queries // 40)  # TAS clusters of about 40 queries, by topic
        self.clusters = {f"q{i}": int(d) % TOPICS % clusters for i, d in enumerate(docs)}

    def positives(self, split: str, min_grade: int = 1, top: bool = False) -> dict[str, list[str]]:
        return {q: sorted(d for d, g in docs.items() if g >= min_grade) for q, docs in self.qrels[split].items()}

    def doc_texts(self, ids):
        return self.corpus


def child(args) -> None:
    """One size: train --steps steps after a warm-up step, then the ANN overlap; prints JSON."""
    import torch
    from freshen.cache import EMBEDDINGS, NpyRowReader, load_cache
    from freshen.data.corpus_file import CorpusFile
    from freshen.embed_corpus import place
    from freshen.encoding import set_threads
    from freshen.modeling.encoder import Encoder
    from freshen.params import load_params
    from freshen.sampling.negatives import chunked_topk
    from freshen.training.loop import Trainer

    threads = set_threads()
    params = load_params(ROOT / "params.yaml", ["train.corrector.warmup_steps=0", *args.set])
    p = params.train
    folder = Path(args.data)
    started = time.perf_counter()
    corpus = CorpusFile(folder / "corpus.jsonl")
    ds = SyntheticDataset(corpus, args.queries, args.seed)
    cache = load_cache(folder / "cache")
    encoder = place(Encoder.from_params(params.model.model_dump(), ROOT), p.device)
    trainer = Trainer(encoder, ds, cache, ds.clusters, p, args.seed, encode_p=params.encode)
    setup_s = time.perf_counter() - started
    encoder.train()
    trainer.step(1)  # warm-up, untimed
    before, step_s = dict(trainer.timings), []
    for step in range(2, args.steps + 2):
        t0 = time.perf_counter()
        trainer.step(step)
        step_s.append(time.perf_counter() - t0)
    parts = {k: (trainer.timings[k] - before.get(k, 0.0)) / args.steps for k in PARTS}
    result = {
        "rows": len(cache),
        "cache_gib": round(len(cache) * cache.dim * 2 / 2**30, 3),
        "path": "ann" if trainer.scorer.index is not None else "exact",
        "table": "file" if trainer.scorer.source is not None else "in memory",
        "setup_s": round(setup_s, 1),
        "index_build_s": round(trainer.scorer.index_build_s, 1),
        "step_s": round(float(np.median(step_s)), 3),
        **{f"{k}_s": round(v, 3) for k, v in parts.items()},
        "threads": threads,
    }
    # training's peak, before the measurement below
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    result["peak_rss_gib"] = round(peak_gib, 3)
    result["rss_over_cache"] = round(peak_gib / (len(cache) * cache.dim * 2 / 2**30), 2)
    if trainer.scorer.index is not None:  # the ANN path's top-100 against exact search through the corrector
        # queries drawn near cache rows (the encoder's own queries know nothing of the random rows)
        reader = NpyRowReader(folder / "cache" / EMBEDDINGS)  # read, not mapped: RSS stays that of training
        q, _ = near_rows(reader, args.overlap_queries, 0.5, np.random.default_rng([args.seed, 2]))
        q = torch.from_numpy(q)
        none = [[] for _ in range(len(q))]
        t0 = time.perf_counter()
        ann = trainer.scorer._candidates(q, 100, none, trainer.corrector)
        result["ann_top100_s"] = round(time.perf_counter() - t0, 3)
        t0 = time.perf_counter()
        exact, _ = chunked_topk(q, reader, 100, none, trainer.corrector, p.negatives.chunk_size)
        result["exact_top100_s"] = round(time.perf_counter() - t0, 3)
        result["ann_overlap_at_100"] = round(
            float(np.mean([len(set(a.tolist()) & set(e.tolist())) / 100 for a, e in zip(ann, exact)])), 4
        )
    print(json.dumps(result), flush=True)


def report(results: list[dict], args, argv: list[str]) -> str:
    lines = [
        "# Training at corpus scale: step latency, peak memory, ANN fidelity",
        "",
        f"Command: `{command_line('scale', argv)}`  ",
        f"Machine: {machine()}  ",
        f"Settings: the repository's params.yaml `train` section with `train.corrector.warmup_steps=0`"
        f"{''.join(f', `{s}`' for s in args.set)}; {args.queries} generated training queries; "
        f"median of {args.steps} steps after a warm-up step (seconds per step; the parts are means).",
        "",
        "| rows | cache GiB | path | table | index build s | step s | negatives s | encode s | backward s "
        "| corrector s | ANN overlap@100 | peak RSS GiB | RSS / cache |",
        "| " + " | ".join(["---"] * 13) + " |",
    ]
    for r in results:
        overlap = r.get("ann_overlap_at_100", "exact path")
        lines.append(
            f"| {r['rows']:,} | {r['cache_gib']} | {r['path']} | {r['table']} | {r['index_build_s']} | {r['step_s']} "
            f"| {r['negatives_s']} | {r['encode_s']} | {r['backward_s']} | {r['corrector_s']} | {overlap} "
            f"| {r['peak_rss_gib']} | {r['rss_over_cache']} |"
        )
    first, last = results[0], results[-1]
    if len(results) > 1:
        ratio = last["step_s"] / first["step_s"]
        lines += [
            "",
            f"Step latency at {last['rows']:,} rows is {ratio:.2f}x the latency at {first['rows']:,} "
            f"(goal: within 2x): **{'met' if ratio <= 2 else 'not met'}**.  ",
            f"Peak RSS at {last['rows']:,} rows is {last['rss_over_cache']}x its float16 cache "
            f"(goal: below 1.5x): **{'met' if last['rss_over_cache'] < 1.5 else 'not met'}**.",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", default="100000,1000000,10000000", help="corpus sizes, comma-separated")
    ap.add_argument("--steps", type=int, default=5, help="timed training steps per size")
    ap.add_argument("--queries", type=int, default=2000, help="generated training queries")
    ap.add_argument("--overlap-queries", type=int, default=64)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--dim", type=int, default=384, help="embedding width (the encoder's: all-MiniLM-L6-v2 has 384)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a params override (repeatable)")
    ap.add_argument("--work", default="/tmp/freshen-scale", help="where the synthetic corpora and caches are kept")
    ap.add_argument("--out", default=str(RESULTS / "scale"), help="folder of report.md and results.json")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        args.data = args.child
        child(args)
        return
    words = vocabulary()
    results = []
    for n in [int(x) for x in args.rows.split(",")]:
        folder = write_data(
            Path(args.work) / f"rows-{n}-dim-{args.dim}-seed-{args.seed}", n, args.dim, words, args.seed
        )
        cmd = [sys.executable, "-m", "benchmarks.scale", "--child", str(folder), *argv]
        res = subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.PIPE, text=True)
        results.append(json.loads(res.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    write_keeping_notes(out / "report.md", report(results, args, argv))
    print((out / "report.md").read_text())


if __name__ == "__main__":
    main()
