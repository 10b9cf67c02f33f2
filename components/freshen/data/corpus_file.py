"""A corpus read lazily, for embedding corpora larger than memory: one validating pass keeps
each document's id and byte offset; texts are read back from the file a range at a time."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from freshen.data.beir import doc_text, iter_documents
from freshen.errors import DataError


class CorpusFile:
    """Documents of a corpus.jsonl by position: `len`, `ids`, `read(start, stop)` -> texts (title
    and body joined as `doc_text` does), and `slice(start, stop)` for a shard of it."""

    def __init__(self, path: str | Path, ids: list[str] | None = None, offsets: np.ndarray | None = None):
        self.path = Path(path)
        if ids is None or offsets is None:
            ids, starts = [], []
            for _, offset, doc_id, _, _ in iter_documents(self.path):
                ids.append(doc_id)
                starts.append(offset)
            if not ids:
                raise DataError(self.path, "corpus is empty")
            offsets = np.asarray(starts, dtype=np.int64)
        self.ids, self.offsets = ids, offsets

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> str:
        return self.read(i, i + 1)[0]

    def read(self, start: int, stop: int) -> list[str]:
        """Texts of documents [start, stop): one seek, then sequential reads."""
        if start >= stop:
            return []
        out = []
        with open(self.path, "rb") as fh:
            fh.seek(int(self.offsets[start]))
            for i in range(start, stop):
                if int(self.offsets[i]) != fh.tell():
                    fh.seek(int(self.offsets[i]))  # blank lines between documents
                obj = json.loads(fh.readline())
                if str(obj["_id"]) != self.ids[i]:
                    raise DataError(self.path, f"changed while being read: expected id '{self.ids[i]}'")
                out.append(doc_text(obj))
        return out

    def slice(self, start: int, stop: int) -> CorpusFile:
        return CorpusFile(self.path, self.ids[start:stop], self.offsets[start:stop])
