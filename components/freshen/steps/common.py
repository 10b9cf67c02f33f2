"""Helpers the steps share: where things live, loading the prepared data, a null logger."""

from __future__ import annotations

from pathlib import Path

from freshen.cache import EMBEDDINGS, Cache, load_cache
from freshen.data.beir import load_beir
from freshen.data.lines import check_id_text, read_lines
from freshen.errors import DataError
from freshen.integrity import check_cache_corpus, check_finite_rows
from freshen.params import Params

ASSIGNMENTS_HEADER = ["query-id", "cluster"]


class NullLog:
    """What a step logs through; the CLI passes an MLflow-backed one."""

    parent_run_id: str | None = None

    def metrics(self, values: dict, step: int | None = None) -> None:
        pass

    def artifact(self, path, subdir: str | None = None) -> None:
        pass

    def tags(self, values: dict) -> None:
        pass


def path(root: Path, rel: str) -> Path:
    return (root / rel) if not Path(rel).is_absolute() else Path(rel)


def shown(p: Path, root: Path) -> str:
    """`p` as recorded in a manifest: relative to the project when inside it, so a DVC-tracked
    output has the same bytes (and hash) in every checkout; absolute only when outside."""
    try:
        return Path(p).resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return str(p)


def prepared(params: Params, root: Path, lazy_corpus: bool = False):
    """The prepared dataset; with `lazy_corpus`, document texts stay in corpus.jsonl until read."""
    return load_beir(path(root, params.data.out_dir), required=("train", "dev", "test"), lazy_corpus=lazy_corpus)


def checked_cache(folder: Path, params: Params, root: Path, ds) -> Cache:
    """A cache a step is about to rank or train with: of the prepared corpus, every row finite."""
    cache = load_cache(folder)
    check_cache_corpus(cache, ds.corpus, path(root, params.data.out_dir) / "corpus.jsonl")
    check_finite_rows(cache.embeddings, cache.path / EMBEDDINGS, cache.ids)
    return cache


def read_clusters(folder: Path) -> dict[str, int]:
    """cluster_queries' assignments.tsv: `query-id<TAB>cluster` rows under a header line."""
    path = Path(folder) / "assignments.tsv"
    if not path.is_file():
        raise DataError(path, "cluster assignments missing (run cluster_queries first)")
    out: dict[str, int] = {}
    for lineno, _, raw in read_lines(path):
        cols = raw.rstrip("\r\n").split("\t")
        if cols == [""] or (lineno == 1 and cols == ASSIGNMENTS_HEADER):
            continue
        if len(cols) != 2:
            raise DataError(path, f"the row has {len(cols)} columns, 2 expected (query-id, cluster)", lineno)
        qid, cluster = cols
        check_id_text(path, lineno, "query-id", qid)
        if qid in out:
            raise DataError(path, f"duplicate query id '{qid}'", lineno, "query-id")
        if not (cluster.isascii() and cluster.isdigit()):
            raise DataError(path, f"must be an integer >= 0, got {cluster!r}", lineno, "cluster")
        out[qid] = int(cluster)
    if not out:
        raise DataError(path, "no cluster assignments (run cluster_queries again)")
    return out
