"""Read and validate a BEIR-format dataset: corpus.jsonl, queries.jsonl, qrels/<split>.tsv.

Every problem is reported with the file, line and field it sits on. The rules: files are UTF-8
(a leading BOM is ignored); ids are non-empty and contain no whitespace (TREC run files are
whitespace-separated); qrels grades are integers. A query with no judgement > 0 in a split is
left out of that split's evaluation (`BeirDataset.evaluation_qrels`)."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from freshen.data.lines import check_id_text, read_lines
from freshen.data.qrels import read_qrels
from freshen.errors import DataError
from freshen.jsonfile import json_message

SPLITS = ("train", "dev", "test")
log = logging.getLogger(__name__)


@dataclass
class BeirDataset:
    root: Path
    corpus: Mapping[str, dict]  # doc id -> {"title": str, "text": str}, file order kept (a dict, or LazyCorpus)
    queries: dict[str, str]  # query id -> text
    qrels: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)  # split -> qid -> docid -> rel
    _evaluated: dict = field(default_factory=dict, repr=False, compare=False)  # split -> (qrels, evaluation_qrels)

    def doc_ids(self) -> list[str]:
        return list(self.corpus)

    def doc_texts(self, ids: list[str] | None = None):
        """Texts of documents `ids` (all, in file order, by default): a list, or with a lazy
        corpus a sequence that reads each text from corpus.jsonl when indexed."""
        ids = list(self.corpus) if ids is None else ids
        lazy = getattr(self.corpus, "texts", None)
        return lazy(ids) if lazy is not None else [doc_text(self.corpus[d]) for d in ids]

    def positives(self, split: str, min_grade: int = 1, top: bool = False) -> dict[str, list[str]]:
        """Query id -> doc ids judged at least `min_grade` (default: relevant at all, > 0), for
        queries that have any; with `top`, only those of the highest grade the query has."""
        out = {}
        for qid, docs in self.qrels.get(split, {}).items():
            pos = [d for d, rel in docs.items() if rel >= max(min_grade, 1)]
            if top and pos:
                best = max(docs[d] for d in pos)
                pos = [d for d in pos if docs[d] == best]
            if pos:
                out[qid] = pos
        return out

    def evaluation_qrels(self, split: str) -> dict[str, dict[str, int]]:
        """The split's judgements as evaluation uses them: a query with no judgement > 0 would
        score 0 for every system and only lower the mean, so it is left out, with a warning
        naming the file and the count (once per split)."""
        source = self.qrels[split]
        if split not in self._evaluated or self._evaluated[split][0] is not source:  # computed, for these qrels
            self._evaluated[split] = (source, relevant_queries(source, self.root / "qrels" / f"{split}.tsv"))
        return self._evaluated[split][1]


def relevant_queries(qrels: dict[str, dict[str, int]], path: Path) -> dict[str, dict[str, int]]:
    """The queries of `qrels` with at least one judgement > 0; `path` names the split in messages."""
    kept = {qid: docs for qid, docs in qrels.items() if any(rel > 0 for rel in docs.values())}
    if not kept:
        raise DataError(path, "no query has a relevant judgement (score > 0): nothing to evaluate")
    left_out = len(qrels) - len(kept)
    if left_out:
        queries = "1 query has" if left_out == 1 else f"{left_out} queries have"
        log.warning("%s: %s no relevant judgement (score > 0); left out of evaluation", path, queries)
    return kept


def doc_text(doc: dict) -> str:
    """The text a passage is embedded from: title and body, as BEIR's dense baselines do."""
    title, text = doc.get("title") or "", doc.get("text") or ""
    return f"{title} {text}".strip() if title else text.strip()


def _read_jsonl(path: Path, offsets: bool = False):
    """(line number, object) per non-blank line; with `offsets`, (line number, byte offset, object)."""
    for lineno, at, text in read_lines(path):
        line = text.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(path, f"not valid JSON ({json_message(exc, line=False)})", lineno) from None
        if not isinstance(obj, dict):
            raise DataError(path, "each line must be a JSON object", lineno)
        yield (lineno, at, obj) if offsets else (lineno, obj)


def _check_unicode(path: Path, lineno: int, field_name: str, value: str) -> None:
    """JSON escapes can smuggle in unpaired surrogates ("\\ud800"), which no tokenizer accepts."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise DataError(
                path,
                f"unpaired surrogate {value[exc.start]!r} at character {exc.start + 1}: not valid Unicode text",
                lineno,
                field_name,
            ) from None


def _first_line_of(path: Path, key: str) -> int | None:
    """Only on the error path: find where a duplicated id first appeared without keeping a map."""
    for lineno, obj in _read_jsonl(path):
        if str(obj.get("_id")) == key:
            return lineno
    return None


def _check_id(path: Path, lineno: int, obj: dict, seen: set, first_line: dict[str, int] | None = None) -> str:
    if "_id" not in obj:
        raise DataError(path, "missing", lineno, "_id")
    raw = obj["_id"]
    if not isinstance(raw, (str, int)) or isinstance(raw, bool) or str(raw).strip() == "":
        raise DataError(path, f"must be a non-empty string, got {raw!r}", lineno, "_id")
    key = str(raw)
    check_id_text(path, lineno, "_id", key)
    _check_unicode(path, lineno, "_id", key)
    if key in seen:
        first = first_line[key] if first_line is not None else _first_line_of(path, key)
        where = f" (first seen on line {first})" if first else ""
        raise DataError(path, f"duplicate id '{key}'{where}", lineno, "_id")
    seen.add(key)
    return key


def iter_documents(path: str | Path):
    """Validate corpus.jsonl line by line: yields (line number, byte offset, id, title, text)."""
    path, seen = Path(path), set()
    for lineno, offset, obj in _read_jsonl(path, offsets=True):
        doc_id = _check_id(path, lineno, obj, seen)
        if "text" not in obj:
            raise DataError(path, "missing", lineno, "text")
        text, title = obj["text"], obj.get("title", "")
        if not isinstance(text, str):
            raise DataError(path, f"must be a string, got {type(text).__name__}", lineno, "text")
        if title is None:
            title = ""
        if not isinstance(title, str):
            raise DataError(path, f"must be a string, got {type(title).__name__}", lineno, "title")
        if not (title.strip() or text.strip()):
            raise DataError(path, "empty document: title and text are both blank", lineno, "text")
        _check_unicode(path, lineno, "title", title)
        _check_unicode(path, lineno, "text", text)
        yield lineno, offset, doc_id, title, text


def read_corpus(path: str | Path) -> dict[str, dict]:
    corpus = {doc_id: {"title": title, "text": text} for _, _, doc_id, title, text in iter_documents(path)}
    if not corpus:
        raise DataError(path, "corpus is empty")
    return corpus


def read_queries(path: str | Path) -> dict[str, str]:
    path = Path(path)
    queries, seen, first_line = {}, set(), {}
    for lineno, obj in _read_jsonl(path):
        qid = _check_id(path, lineno, obj, seen, first_line)
        first_line[qid] = lineno
        text = obj.get("text")
        if text is None:
            raise DataError(path, "missing", lineno, "text")
        if not isinstance(text, str) or not text.strip():
            raise DataError(path, "must be a non-empty string", lineno, "text")
        _check_unicode(path, lineno, "text", text)
        queries[qid] = text
    if not queries:
        raise DataError(path, "no queries")
    return queries


def load_beir(root: str | Path, splits=SPLITS, required=("train", "test"), lazy_corpus: bool = False) -> BeirDataset:
    """A BEIR folder, validated. With `lazy_corpus` the corpus holds ids and byte offsets only,
    its texts read from corpus.jsonl when asked for (`corpus_file.LazyCorpus`)."""
    root = Path(root)
    for name in ("corpus.jsonl", "queries.jsonl"):
        if not (root / name).is_file():
            raise DataError(root / name, "file not found (is this a BEIR dataset folder?)")
    if lazy_corpus:
        from freshen.data.corpus_file import CorpusFile, LazyCorpus  # it reads documents as this module does

        corpus = LazyCorpus(CorpusFile(root / "corpus.jsonl", hash_texts=False))
    else:
        corpus = read_corpus(root / "corpus.jsonl")
    queries = read_queries(root / "queries.jsonl")
    ds = BeirDataset(root=root, corpus=corpus, queries=queries)
    for split in splits:
        path = root / "qrels" / f"{split}.tsv"
        if path.is_file():
            ds.qrels[split] = read_qrels(path, corpus, queries)
        elif split in required:
            raise DataError(path, f"required split '{split}' not found")
    return ds


def carve_dev(train: dict[str, dict[str, int]], fraction: float, seed: int):
    """Split train qrels into (train, dev) by query, seeded; dev gets ceil(fraction * n) queries."""
    qids = sorted(train)
    if len(qids) < 2:
        raise DataError("qrels/train.tsv", "need at least 2 train queries to carve a dev split")
    n_dev = min(len(qids) - 1, max(1, math.ceil(fraction * len(qids))))
    order = np.random.default_rng(seed).permutation(len(qids))
    dev_ids = {qids[i] for i in order[:n_dev]}
    return ({q: train[q] for q in qids if q not in dev_ids}, {q: train[q] for q in qids if q in dev_ids})
