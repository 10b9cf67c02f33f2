"""The corpus as the encoder being trained sees it: passage texts by cache row, embedded for
training (with gradient), fresh without gradient, or encoded in batches (measurement, refits,
refreshes). Outputs come back to the CPU as float32, where the losses run; the encoder stays
where it was placed (a GPU when there is one), and the cache scoring and the corrector move what
they take to theirs (`CacheScorer.device`).

Training passes run at `train.precision`, passages cut at `train.passage_max_len`; bulk encoding
(refreshes, refits, measurement) takes the `encode` section's batch size, token budget and
precision. With more than one rank, bulk encoding is split over the ranks and gathered."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch

from freshen.encoding import autocast_dtype, encode, encode_into
from freshen.params import EncodeParams, TrainParams
from freshen.training.distributed import World


class Passages:
    """`texts`: passage texts by cache row, a list or a `CorpusFile` (read from the file when asked)."""

    def __init__(self, encoder, texts, p: TrainParams, encode_p: EncodeParams, world: World = World()):
        self.encoder, self.texts, self.world = encoder, texts, world
        self.max_len = p.passage_max_len or encoder.config.passage_max_len
        self.device = next(encoder.parameters()).device
        self.amp = autocast_dtype(p.precision, self.device)
        self.batch_size, self.precision = encode_p.batch_size, encode_p.precision
        self.max_tokens = encode_p.max_tokens

    def autocast(self):
        """The training precision (`train.precision`) for the encoder's forward passes."""
        return torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None)

    @contextmanager
    def dropout_stream(self, seed: int):
        """Forward passes in the block draw their dropout from a stream of their own, seeded by
        `seed`; the global random state is left as it was."""
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(seed)
            yield

    def embed_queries(self, texts: list[str]) -> torch.Tensor:
        """Training query embeddings [b, dim], with gradient."""
        with self.autocast():
            return self.encoder.embed(texts, "query").float().cpu()

    def embed(self, rows: list[int]) -> torch.Tensor:
        """Training passage embeddings [n, dim], with gradient."""
        with self.autocast():
            return self.encoder.embed(self.texts_of(rows), "passage", max_len=self.max_len).float().cpu()

    def texts_of(self, rows: list[int]) -> list[str]:
        """The texts of `rows` (a CorpusFile reads them with the file opened once)."""
        at = getattr(self.texts, "at", None)
        return at(rows) if at is not None else [self.texts[r] for r in rows]

    def embed_fresh(self, rows) -> torch.Tensor:
        """The current encoder's embeddings of `rows`, no gradient, in training mode (as a step sees them)."""
        rows = [int(r) for r in rows]
        return self._split(len(rows), lambda a, b: self._fresh(rows[a:b]))

    def _fresh(self, rows: list[int]) -> torch.Tensor:
        with torch.no_grad(), self.autocast():
            fresh = self.encoder.embed(self.texts_of(rows), "passage", max_len=self.max_len)
        return fresh.float().cpu()

    def encode(self, rows, desc: str) -> torch.Tensor:
        """`rows` encoded in inference batches of `encode.batch_size`."""
        rows = [int(r) for r in rows]
        return self._split(len(rows), lambda a, b: self._encode(self.texts_of(rows[a:b]), desc))

    def encode_all(self, dim: int, desc: str) -> np.ndarray:
        """The whole corpus encoded [n, dim] (a refresh)."""
        return self._split(len(self.texts), lambda a, b: torch.from_numpy(self._encode_into(a, b, dim, desc))).numpy()

    def _encode_into(self, start: int, stop: int, dim: int, desc: str) -> np.ndarray:
        table = np.zeros((stop - start, dim), dtype=np.float32)
        encode_into(
            self.encoder,
            self.texts[start:stop],
            "passage",
            table,
            batch_size=self.batch_size,
            max_tokens=self.max_tokens,
            precision=self.precision,
            desc=desc,
            max_len=self.max_len,
        )
        return table

    def measure(self, rows) -> torch.Tensor:
        """`rows` encoded to measure the encoder (probe and overlap passages)."""
        rows = [int(r) for r in rows]
        return self._split(len(rows), lambda a, b: self._encode(self.texts_of(rows[a:b])))

    def _encode(self, texts: list[str], desc: str | None = None) -> torch.Tensor:
        return torch.from_numpy(
            encode(
                self.encoder,
                texts,
                "passage",
                batch_size=self.batch_size,
                max_tokens=self.max_tokens,
                precision=self.precision,
                max_len=self.max_len,
                **({"desc": desc} if desc is not None else {}),
            )
        )

    def measure_queries(self, texts: list[str]) -> torch.Tensor:
        return self._split(
            len(texts),
            lambda a, b: torch.from_numpy(encode(self.encoder, texts[a:b], "query", precision=self.precision)),
        )

    def _split(self, n: int, embed) -> torch.Tensor:
        """`embed(start, stop)` [stop - start, dim]: the items [0, n) in one process; with more
        than one rank, each embeds its share and the shares are gathered."""
        if not self.world.distributed:
            return embed(0, n)
        start, stop = self.world.bounds(n)
        part = embed(start, stop) if stop > start else torch.zeros((0, self.encoder.dim))
        return self.world.gather(part.float(), n)
