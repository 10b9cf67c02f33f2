"""Query-document pairs with a value per row: qrels (integer grades) and teacher scores.

`query-id<TAB>doc-id<TAB>value` rows (BEIR), or `qid Q0 docid rel` (TREC) for qrels; a header
line is optional; every id is checked against the dataset and every problem names its line."""

from __future__ import annotations

import math
from pathlib import Path

from freshen.data.lines import check_id_text, read_lines
from freshen.errors import DataError


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _columns(line: str, trec: bool, doc_field: str, path: Path, lineno: int) -> list[str]:
    """The three columns of a row: tab-separated, or with `trec` also a whitespace-separated
    `qid Q0 docid rel` row (its second column "0" or "Q0"); any other width is refused."""
    cols = line.split("\t") if "\t" in line or not trec else line.split()
    if trec and len(cols) == 4 and cols[1].strip() in ("0", "Q0"):
        cols = [cols[0], cols[2], cols[3]]
    if len(cols) != 3:
        raise DataError(path, f"the row has {len(cols)} columns, 3 expected (query-id, {doc_field}, score)", lineno)
    return [c.strip() for c in cols]


def read_scored_pairs(
    path: str | Path, corpus: dict, queries: dict, parse, doc_field: str = "corpus-id", trec: bool = False
) -> dict[str, dict[str, float]]:
    """Rows of `query-id<TAB>doc-id<TAB>value` (qrels, teacher scores), header line optional, LF or
    CRLF, every id checked against the dataset. `parse` turns the value into a number or raises
    ValueError saying what it must be. With `trec`, `qid Q0 docid rel` rows are read too."""
    path = Path(path)
    pairs: dict[str, dict] = {}
    for lineno, _, raw in read_lines(path):
        line = raw.rstrip("\r\n")
        if not line.strip():
            continue
        qid, docid, raw_value = _columns(line, trec, doc_field, path, lineno)
        try:
            value = parse(raw_value)
        except ValueError as exc:
            # a header, e.g. "query-id corpus-id score": line 1, its ids no known ids
            if lineno == 1 and not _is_number(raw_value) and qid not in queries and docid not in corpus:
                continue
            raise DataError(path, f"{exc}, got {raw_value!r}", lineno, "score") from None
        check_id_text(path, lineno, "query-id", qid)
        check_id_text(path, lineno, doc_field, docid)
        if qid not in queries:
            raise DataError(path, f"unknown query id '{qid}' (not in queries.jsonl)", lineno, "query-id")
        if docid not in corpus:
            raise DataError(path, f"unknown document id '{docid}' (not in corpus.jsonl)", lineno, doc_field)
        pairs.setdefault(qid, {})[docid] = value
    return pairs


def _relevance(text: str) -> int:
    """A qrels grade: an integer (`2.0` is read as 2); `0.7` is refused, not truncated to 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value.is_integer():
        raise ValueError("must be an integer grade (0, 1, 2, ...)")
    return int(value)


def read_qrels(path: str | Path, corpus: dict, queries: dict) -> dict[str, dict[str, int]]:
    """Qrels as `query-id<TAB>corpus-id<TAB>score` (BEIR) or `qid Q0 docid rel` (TREC)."""
    qrels = read_scored_pairs(path, corpus, queries, _relevance, trec=True)
    if not qrels:
        raise DataError(path, "split is empty: no judgements")
    return qrels


def write_qrels(path: Path, qrels: dict[str, dict[str, int]]) -> str:
    lines = ["query-id\tcorpus-id\tscore"]
    for qid, docs in qrels.items():
        for docid, rel in docs.items():
            lines.append(f"{qid}\t{docid}\t{rel}")
    text = "\n".join(lines) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return text
