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
    ap.add_argument("--device", default="auto", help="auto (the GPU when there is one), cpu, cuda")
    ap.add_argument("--model", default=None, help="a sentence-transformers folder (default: the packaged MiniLM)")
    ap.add_argument("--out", default=None, help="write a markdown report here")
    args = ap.parse_args()

    from freshen.data.beir import doc_text, read_corpus
    from freshen.encoding import autocast_dtype, encode, pick_device, set_threads
    from freshen.modeling.encoder import Encoder, resolve_model_path
    from sentence_transformers import SentenceTransformer

    threads = set_threads()
    corpus = read_corpus(Path(args.data) / "corpus.jsonl")
    texts = [doc_text(d) for d in list(corpus.values())[: args.docs]]
    path = str(resolve_model_path(args.model))
    device = pick_device(args.device)
    dtype = autocast_dtype(args.precision, device)

    def sentence_transformers(dtype) -> tuple[np.ndarray, float]:
        """sentence-transformers' `encode` over the texts (weights in `dtype` when given), and its seconds."""
        st = SentenceTransformer(path, device=str(device))
        if dtype is not None:
            st = st.to(dtype)
        st.max_seq_length = args.max_len
        st.encode(texts[:8], batch_size=8)  # warm-up
        t = time.perf_counter()
        out = st.encode(texts, batch_size=args.batch_size, convert_to_numpy=True, normalize_embeddings=False)
        return np.asarray(out, dtype=np.float32), time.perf_counter() - t

    ref, st_s = sentence_transformers(None)
    _, st_same_s = sentence_transformers(dtype) if dtype is not None else (ref, st_s)

    enc = Encoder.from_params({"name_or_path": args.model, "passage_max_len": args.max_len}).to(device)
    encode(enc, texts[:8], "passage", batch_size=8, precision=args.precision)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    ours = encode(
        enc, texts, "passage", batch_size=args.batch_size, precision=args.precision, max_tokens=args.max_tokens or None
    )
    ours_s = time.perf_counter() - t

    cos = (ours * ref).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(ref, axis=1))
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
        "sentence_transformers_same_precision_docs_per_s": round(len(texts) / st_same_s, 2),
        "ratio_same_precision": round(st_same_s / ours_s, 3),
        "device": str(device),
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
