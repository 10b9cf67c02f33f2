"""Embedding many texts: length-sorted batches with dynamic padding, inference mode,
autocast where it is safe, rows written straight into a (memory-mapped) output array."""

from __future__ import annotations

import functools
import os

import numpy as np
import torch
from tqdm.auto import tqdm

from freshen.errors import FreshenError


def set_threads() -> int:
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
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


def encode_into(encoder, texts: list[str], kind: str, out: np.ndarray, batch_size: int = 64,
                precision: str = "auto", desc: str | None = None, max_len: int | None = None) -> np.ndarray:
    """Fill `out[i]` with the embedding of `texts[i]`; longest texts first so padding is small."""
    if len(texts) != out.shape[0]:
        raise ValueError(f"{len(texts)} texts for an output of {out.shape[0]} rows")
    device = next(encoder.parameters()).device
    dtype = autocast_dtype(precision, device)
    order = np.argsort([-len(t) for t in texts], kind="stable")
    was_training = encoder.training
    encoder.eval()
    with torch.inference_mode(), tqdm(total=len(texts), desc=desc or f"embed {kind}s", unit=kind,
                                      mininterval=10, disable=False) as bar:
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            with torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype is not None):
                emb = encoder.embed([texts[i] for i in idx], kind, max_len=max_len)
            out[np.sort(idx)] = emb.float().cpu().numpy()[np.argsort(idx)]
            bar.update(len(idx))
    encoder.train(was_training)
    return out


def encode(encoder, texts: list[str], kind: str, **kw) -> np.ndarray:
    out = np.zeros((len(texts), encoder.dim), dtype=np.float32)
    return encode_into(encoder, texts, kind, out, **kw)
