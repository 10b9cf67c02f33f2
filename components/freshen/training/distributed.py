"""Data-parallel training over torch.distributed (NCCL on GPUs, Gloo on CPUs), launched by
`torchrun` (`freshen train --nproc N` runs it for you).

How a step is split (docs/pipeline.md, "More than one process"): every rank draws the same global
batch (the same random streams); each embeds its own share of the queries and of their passages,
with gradient, in micro-batches whose dropout streams are seeded by (seed, step, micro-batch); the passages are gathered across ranks with their gradients, so each query's
softmax covers the global batch; the encoder's gradients are averaged. What is cheap and must be
the same everywhere is computed by every rank on the gathered (detached) embeddings: the
negatives of the global batch (the corrector's pass over the cache, which dominates, is the same
for b or B queries, and the random draws stay those of one process), the corrector's update
(its parameters are then broadcast from rank 0, so devices cannot drift apart) and the dev
validation. Bulk encoding (refreshes, refits, measurement) is split over ranks and gathered.
Counters count the global batch, so every rank holds the sums; rank 0 alone writes and logs."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class World:
    """This process's place among `size` ranks (one process: rank 0 of 1, every call a no-op)."""

    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @classmethod
    def from_env(cls) -> World:
        """The world torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK), its process group joined:
        NCCL with this rank's GPU when CUDA is there, else Gloo. One process without them."""
        size = int(os.environ.get("WORLD_SIZE", "1"))
        if size <= 1:
            return cls()
        import torch.distributed as dist

        if not dist.is_initialized():
            cuda = torch.cuda.is_available()
            if cuda:
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            dist.init_process_group("nccl" if cuda else "gloo")
        return cls(dist.get_rank(), dist.get_world_size())

    def close(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()

    def barrier(self) -> None:
        """Wait for every rank (a rank that died makes this fail instead of hang)."""
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def bounds(self, n: int) -> tuple[int, int]:
        """This rank's share [start, stop) of n items, in rank order (the first n % size ranks take one more)."""
        base, extra = divmod(n, self.size)
        start = self.rank * base + min(self.rank, extra)
        return start, start + base + (self.rank < extra)

    def share(self, n: int) -> slice:
        return slice(*self.bounds(n))

    def gather(self, part: torch.Tensor, n: int, grad: bool = False) -> torch.Tensor:
        """The n rows that ranks hold in shares (`bounds`), concatenated in rank order. With
        `grad`, gradients flow back to each rank's own share (summed over the ranks' losses)."""
        if not self.distributed:
            return part
        import torch.distributed as dist

        width = -(-n // self.size)  # shares differ by one row at most: pad to the largest
        padded = torch.cat([part, part.new_zeros((width - len(part), *part.shape[1:]))])
        padded = padded.to(_collective_device()).contiguous()
        if grad:  # sentence-transformers' gather for in-batch losses across devices
            from sentence_transformers.util.distributed import all_gather

            with warnings.catch_warnings():  # torch deprecates the autograd all_gather it calls for a private one
                warnings.filterwarnings("ignore", "torch.distributed.nn.functional.all_gather", FutureWarning)
                pieces = all_gather(padded, with_grad=True).split(width)
        else:
            pieces = [torch.empty_like(padded) for _ in range(self.size)]
            dist.all_gather(pieces, padded)
        sizes = [World(r, self.size).bounds(n) for r in range(self.size)]
        return torch.cat([p[: stop - start] for p, (start, stop) in zip(pieces, sizes)]).to(part.device)

    def average_gradients(self, parameters) -> None:
        """Each parameter's gradient replaced by its mean over ranks (the global batch's gradient:
        each rank's loss is the mean over its share of the queries)."""
        if not self.distributed:
            return
        import torch.distributed as dist

        grads = [p.grad for p in parameters if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads]).to(_collective_device())
        dist.all_reduce(flat)
        flat /= self.size
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g).to(g.device))
            offset += g.numel()

    def mean(self, value: float) -> float:
        """`value` averaged over ranks (the global batch's loss, from each rank's share)."""
        if not self.distributed:
            return value
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.float64, device=_collective_device())
        dist.all_reduce(t)
        return float(t) / self.size

    def broadcast(self, module: torch.nn.Module) -> None:
        """Rank 0's parameters and buffers copied into every rank's `module`."""
        if not self.distributed:
            return
        import torch.distributed as dist

        with torch.no_grad():
            for t in [*module.parameters(), *module.buffers()]:
                buf = t.detach().to(_collective_device())
                dist.broadcast(buf, 0)
                t.copy_(buf.to(t.device))


def _collective_device() -> torch.device:
    """Where collectives run: this rank's GPU under NCCL, the CPU under Gloo."""
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def rank_seed(seed: int, rank: int) -> int:
    """Rank `rank`'s torch seed (dropout) derived from `seed`; rank 0 keeps `seed` itself."""
    return seed if rank == 0 else int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])


def stream_seed(seed: int, *keys: int) -> int:
    """A torch seed derived from `seed` and `keys` (a step, a micro-batch, a role): the same on every rank."""
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1)[0])
