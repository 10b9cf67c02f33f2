"""Benchmark: Freshen's encoder against sentence-transformers `encode` on the same weights,
the same texts, the same max length and batch size. Checks the outputs agree (cosine per text)
and reports throughput and the ratio. Not a test: run it by hand.

    python -m benchmarks.encode_throughput --docs 1000 --out benchmarks/results/encode_throughput.md
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import command_line, machine, write_report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="../shared/datasets/scifact", help="BEIR folder (corpus.jsonl)")
    ap.add_argument("--docs", type=int, default=1000)
    ap.add_argument("--max-len", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--max-tokens", type=int, default=16384, help="Freshen's token budget per batch (0: none)")
    ap.add_argument("--out", default=None, help="write a markdown report here")
    args = ap.parse_args()

    from freshen.data.beir import doc_text, read_corpus
    from freshen.encoding import autocast_dtype, encode, set_threads
    from freshen.modeling.encoder import Encoder, default_model_path
    from sentence_transformers import SentenceTransformer

    threads = set_threads()
    corpus = read_corpus(Path(args.data) / "corpus.jsonl")
    texts = [doc_text(d) for d in list(corpus.values())[: args.docs]]
    path = default_model_path()

    st = SentenceTransformer(path, device="cpu")
    st.max_seq_length = args.max_len
    st.encode(texts[:8], batch_size=8)  # warm-up
    t = time.perf_counter()
    ref = st.encode(texts, batch_size=args.batch_size, convert_to_numpy=True, normalize_embeddings=False)
    st_s = time.perf_counter() - t

    enc = Encoder.from_params({"name_or_path": None, "passage_max_len": args.max_len})
    encode(enc, texts[:8], "passage", batch_size=8, precision=args.precision)  # warm-up
    t = time.perf_counter()
    ours = encode(
        enc, texts, "passage", batch_size=args.batch_size, precision=args.precision, max_tokens=args.max_tokens or None
    )
    ours_s = time.perf_counter() - t

    cos = (ours * ref).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(ref, axis=1))
    dtype = autocast_dtype(args.precision, torch.device("cpu"))
    result = {
        "docs": len(texts),
        "max_len": args.max_len,
        "batch_size": args.batch_size,
        "max_tokens": args.max_tokens,
        "threads": threads,
        "precision": str(dtype).replace("torch.", "") if dtype else "fp32",
        "sentence_transformers_docs_per_s": round(len(texts) / st_s, 2),
        "freshen_docs_per_s": round(len(texts) / ours_s, 2),
        "ratio": round(st_s / ours_s, 3),
        "cosine_min": float(cos.min()),
        "cosine_mean": float(cos.mean()),
        "agree_at_0999": bool(cos.min() >= 0.999),
        "machine": f"{machine()}, {threads} threads, torch {torch.__version__}",
    }
    print(json.dumps(result, indent=2))
    if args.out:
        rows = "\n".join(f"| {k} | {v} |" for k, v in result.items())
        write_report(
            Path(args.out),
            "# Encoding throughput: Freshen vs sentence-transformers\n\n"
            f"Command: `{command_line('encode_throughput')}`\n\n| what | value |\n| --- | --- |\n{rows}\n",
        )


if __name__ == "__main__":
    main()
