"""A corpus read lazily, for embedding corpora larger than memory: one validating pass keeps
each document's id, byte offset and content hash; texts are read back from the file a range at
a time."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from freshen.data.beir import doc_text, iter_documents
from freshen.errors import DataError

HASH_DTYPE = "S16"  # the first 16 bytes of a sha256


def text_hash(text: str) -> bytes:
    """What identifies a document's row in a cache: the digest of the text it is embedded from."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:16]


class CorpusFile:
    """Documents of a corpus.jsonl by position: `len`, `ids`, `hashes` (`text_hash` of each
    document's text), `read(start, stop)` -> texts (title and body joined as `doc_text` does),
    `slice(start, stop)` for a shard of it and `take(rows)` for any subset."""

    def __init__(
        self,
        path: str | Path,
        ids: list[str] | None = None,
        offsets: np.ndarray | None = None,
        hashes: np.ndarray | None = None,
    ):
        self.path = Path(path)
        if ids is None or offsets is None or hashes is None:
            ids, starts, digests = [], [], []
            for _, offset, doc_id, title, text in iter_documents(self.path):
                ids.append(doc_id)
                starts.append(offset)
                digests.append(text_hash(doc_text({"title": title, "text": text})))
            if not ids:
                raise DataError(self.path, "corpus is empty")
            offsets = np.asarray(starts, dtype=np.int64)
            hashes = np.array(digests, dtype=HASH_DTYPE)
        self.ids, self.offsets, self.hashes = ids, offsets, hashes

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, key):
        """The text of document `key`, or the list of texts of a slice: read from the file when
        asked, so a `CorpusFile` serves as passage texts that are never held in memory."""
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step != 1:
                raise ValueError("CorpusFile: slices take every document (step 1)")
            return self.read(start, stop)
        return self.read(key, key + 1)[0]

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
        return CorpusFile(self.path, self.ids[start:stop], self.offsets[start:stop], self.hashes[start:stop])

    def take(self, rows: np.ndarray) -> CorpusFile:
        """The documents at positions `rows` (ascending), read lazily like the whole."""
        return CorpusFile(self.path, [self.ids[i] for i in rows], self.offsets[rows], self.hashes[rows])
