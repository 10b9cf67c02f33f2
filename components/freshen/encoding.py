"""Embedding many texts: length-sorted batches with dynamic padding, inference mode,
autocast where it is safe, rows written straight into a (memory-mapped) output array."""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass

import numpy as np
import torch

from freshen.errors import FreshenError
from freshen.progress import progress

SURROGATE = re.compile("[\ud800-\udfff]")


def set_threads(processes: int = 1) -> int:
    """torch's threads: this machine's cores (those this process may run on), shared among
    `processes` processes training side by side."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    n = max(1, n // processes)
    torch.set_num_threads(n)
    return n


@functools.cache
def cpu_has_bf16() -> bool:
    try:
        with open("/proc/cpuinfo") as fh:
            flags = fh.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """None for fp32; bf16/fp16 as asked; 'auto' picks bf16 on GPUs and on CPUs with native bf16."""
    if precision in (None, "fp32"):
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_has_bf16() else None
    raise FreshenError(f"encode.precision must be fp32, bf16, fp16 or auto, got '{precision}'")


def pick_device(name: str | None = "auto") -> torch.device:
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def clean_text(text: str) -> str:
    """The rule for awkward input (docs/pipeline.md, "Large corpora and awkward text"): blank or
    whitespace-only text is embedded as the empty string; unpaired surrogates (which JSON escapes
    can carry, but UTF-8 cannot) become U+FFFD. Text past max_len is truncated, and counted."""
    text = text.strip()
    return text if text.isascii() else SURROGATE.sub("\ufffd", text)


def token_lengths(features) -> np.ndarray:
    """Tokens each text became after truncation (special tokens included)."""
    ids = features["input_ids"]
    return np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))


def plan_batches(lengths: np.ndarray, batch_size: int, max_tokens: int | None = None) -> list[np.ndarray]:
    """Longest texts first; a batch closes at `batch_size` texts or when its padded size (texts x
    longest) would pass `max_tokens`, so short texts share big batches and long ones small ones."""
    order = np.argsort(-lengths, kind="stable")
    batches, current, longest = [], [], 0
    for i in order:
        width = max(longest, int(lengths[i]))
        if current and (len(current) >= batch_size or (max_tokens and width * (len(current) + 1) > max_tokens)):
            batches.append(np.asarray(current))
            current, width = [], int(lengths[i])
        current.append(i)
        longest = width
    if current:
        batches.append(np.asarray(current))
    return batches


@dataclass
class EncodeStats:
    texts: int = 0  # texts encoded by this call
    truncated: int = 0  # texts that reached max_len tokens (cut, or exactly that long)
    blank: int = 0  # blank or whitespace-only texts, embedded as the empty string
    batches: int = 0


def _read(texts, start: int, stop: int) -> list[str]:
    return texts.read(start, stop) if hasattr(texts, "read") else [texts[i] for i in range(start, stop)]


def encode_chunks(
    encoder,
    texts,
    kind: str,
    sink,
    batch_size: int = 64,
    precision: str = "auto",
    max_len: int | None = None,
    max_tokens: int | None = None,
    chunk_rows: int = 4096,
    start_row: int = 0,
    on_chunk=None,
    desc: str | None = None,
) -> EncodeStats:
    """Embed `texts[start_row:]` chunk by chunk: each chunk is read, length-sorted into batches
    under the token budget, embedded, and handed to `sink(first_row, float32 block)`; then
    `on_chunk(rows_done)` runs, which is where a caller records progress for a resume. Only one
    chunk of texts and embeddings is ever in memory. `texts` is any sequence (or has .read)."""
    n = len(texts)
    if not 0 <= start_row <= n:
        raise ValueError(f"start_row {start_row} outside 0..{n}")
    if max_len is None:
        max_len = encoder.config.query_max_len if kind == "query" else encoder.config.passage_max_len
    device = next(encoder.parameters()).device
    dtype = autocast_dtype(precision, device)
    stats = EncodeStats()
    was_training = encoder.training
    encoder.eval()
    try:
        with (
            torch.inference_mode(),
            progress(total=n, initial=start_row, desc=desc or f"embed {kind}", unit="text", mininterval=10) as bar,
        ):
            for first in range(start_row, n, chunk_rows):
                chunk = [clean_text(t) for t in _read(texts, first, min(n, first + chunk_rows))]
                # tokenized once: the lengths plan the batches, and each batch is padded from them
                features = encoder.tokenize(chunk, kind, max_len, pad=False)
                lengths = token_lengths(features)
                block = np.empty((len(chunk), encoder.dim), dtype=np.float32)
                for idx in plan_batches(lengths, batch_size, max_tokens):
                    batch = encoder.tokenizer.pad(
                        {k: [v[i] for i in idx] for k, v in features.items()}, return_tensors="pt"
                    )
                    with torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype is not None):
                        block[idx] = encoder.embed_tokens(batch, kind).float().cpu().numpy()
                    stats.batches += 1
                    bar.update(len(idx))
                stats.texts += len(chunk)
                stats.truncated += int((lengths >= max_len).sum())
                stats.blank += sum(1 for t in chunk if not t)
                sink(first, block)
                if on_chunk is not None:
                    on_chunk(first + len(chunk))
    finally:
        encoder.train(was_training)
    return stats


def encode_into(encoder, texts, kind: str, out: np.ndarray, **kw) -> np.ndarray:
    """Fill `out[i]` with the embedding of `texts[i]` (an array or a memmap)."""
    if len(texts) != out.shape[0]:
        raise ValueError(f"{len(texts)} texts for an output of {out.shape[0]} rows")

    def sink(first: int, block: np.ndarray) -> None:
        out[first : first + len(block)] = block

    encode_chunks(encoder, texts, kind, sink, **kw)
    return out


def encode(encoder, texts: list[str], kind: str, **kw) -> np.ndarray:
    out = np.zeros((len(texts), encoder.dim), dtype=np.float32)
    return encode_into(encoder, texts, kind, out, **kw)
