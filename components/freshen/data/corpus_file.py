"""A corpus read lazily, for corpora larger than memory: one validating pass keeps each
document's id, byte offset and (unless told not to) content hash; texts are read back from the
file a range at a time. `LazyCorpus` is the same file as the id -> document mapping a
`BeirDataset` holds."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
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
        *,
        hash_texts: bool = True,
    ):
        self.path = Path(path)
        if ids is None or offsets is None:
            ids, starts, digests = [], [], []
            for _, offset, doc_id, title, text in iter_documents(self.path):
                ids.append(doc_id)
                starts.append(offset)
                if hash_texts:
                    digests.append(text_hash(doc_text({"title": title, "text": text})))
            if not ids:
                raise DataError(self.path, "corpus is empty")
            offsets = np.asarray(starts, dtype=np.int64)
            hashes = np.array(digests, dtype=HASH_DTYPE) if hash_texts else None
        self.ids, self.offsets, self._hashes = ids, offsets, hashes

    @property
    def hashes(self) -> np.ndarray:
        """`text_hash` of each document's text. Made by the validating pass, unless it was told
        not to (`hash_texts=False`: training reads texts, never their hashes); then by a second
        read of the documents, the first time they are asked for."""
        if self._hashes is None:
            texts = (doc_text(obj) for obj in self.documents(range(len(self))))
            self._hashes = np.array([text_hash(t) for t in texts], dtype=HASH_DTYPE)
        return self._hashes

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
        return [doc_text(obj) for obj in self.documents(range(start, stop))]

    def at(self, positions) -> list[str]:
        """Texts of the documents at `positions` (any order), the file opened once."""
        return [doc_text(obj) for obj in self.documents(positions)]

    def documents(self, positions) -> Iterator[dict]:
        """The JSON objects of the documents at `positions`, read in that order (a seek only where
        the next one does not follow: blank lines, or positions out of file order)."""
        positions = [int(i) for i in positions]
        if not positions:
            return
        with open(self.path, "rb") as fh:
            for i in positions:
                if int(self.offsets[i]) != fh.tell():
                    fh.seek(int(self.offsets[i]))
                obj = json.loads(fh.readline())
                if str(obj["_id"]) != self.ids[i]:
                    raise DataError(self.path, f"changed while being read: expected id '{self.ids[i]}'")
                yield obj

    def slice(self, start: int, stop: int) -> CorpusFile:
        return CorpusFile(self.path, self.ids[start:stop], self.offsets[start:stop], self._subset(slice(start, stop)))

    def take(self, rows: np.ndarray) -> CorpusFile:
        """The documents at positions `rows`, read lazily like the whole (fastest ascending)."""
        return CorpusFile(self.path, [self.ids[i] for i in rows], self.offsets[rows], self._subset(rows))

    def _subset(self, which) -> np.ndarray | None:
        """The hashes of a part of the documents; None (made when asked) if not made for the whole."""
        return self._hashes[which] if self._hashes is not None else None


class LazyCorpus(Mapping):
    """corpus.jsonl as the mapping a `BeirDataset` holds (id -> {"title", "text"}, file order),
    with no text in memory: each document is read from the file when asked for. `texts(ids)`
    gives passage texts by position, read lazily too (`BeirDataset.doc_texts`)."""

    def __init__(self, file: CorpusFile):
        self.file = file
        self.position = {doc_id: i for i, doc_id in enumerate(file.ids)}

    def __getitem__(self, doc_id: str) -> dict:
        obj = next(self.file.documents([self.position[doc_id]]))
        return {"title": obj.get("title") or "", "text": obj["text"]}

    def __iter__(self) -> Iterator[str]:
        return iter(self.file.ids)

    def __len__(self) -> int:
        return len(self.file)

    def __contains__(self, doc_id) -> bool:
        return doc_id in self.position

    def texts(self, ids: list[str]) -> CorpusFile:
        """The documents `ids` in that order, as passage texts read when indexed."""
        if ids == self.file.ids:
            return self.file
        return self.file.take(np.array([self.position[d] for d in ids], dtype=np.int64))
