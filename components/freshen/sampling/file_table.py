"""The training-time cache read from its file as rows are needed, for a cache larger than
`train.negatives.memory_gb`. Never memory-mapped: the page cache maps large folios, so a few
thousand random rows read through a mapping leave gigabytes resident in the process (measured:
16,000 random rows of a 10M-row cache, 2.6 GiB, with or without MADV_RANDOM); plain reads leave
nothing behind but the rows asked for."""

from __future__ import annotations

import numpy as np
import torch

from freshen.cache import NpyRowReader


class FileTable:
    """[n, dim] float16 rows of a .npy file, indexed like the in-memory table: `table[rows]`
    (a tensor or list of rows, any shape) and `table[start:stop]` give float16 tensors."""

    device = torch.device("cpu")  # rows come back in host memory

    def __init__(self, reader: NpyRowReader):
        self.reader = reader
        self.shape = torch.Size(reader.shape)

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, key) -> torch.Tensor:
        if isinstance(key, slice):
            return torch.from_numpy(self.reader[key])
        rows = key.numpy() if torch.is_tensor(key) else np.asarray(key, dtype=np.int64)
        return torch.from_numpy(self.reader[rows.reshape(-1)]).view(*rows.shape, self.shape[1])
