"""Step 0, prepare: find (or fetch) the dataset, validate it, carve a seeded dev split when
it has none, and write a normalised copy that every later step and DVC depend on."""

from __future__ import annotations

import json
from pathlib import Path

from freshen.atomic import atomic_dir, write_json
from freshen.data.beir import carve_dev, load_beir
from freshen.data.fetch import resolve_dataset_dir
from freshen.data.qrels import write_qrels
from freshen.errors import DataError
from freshen.locks import hold
from freshen.params import Params
from freshen.steps.common import NullLog, path

SECTIONS = ["seed", "data"]


def check_dev_size(dev: dict, least: int, source: Path, given: bool) -> None:
    """Promotion and keep_best judge models on dev: with too few queries a better model cannot be
    told from noise (nDCG@10 moves by 1/n a query), so prepare refuses such a split."""
    judged = sum(1 for docs in dev.values() if any(r > 0 for r in docs.values()))
    if judged >= least:
        return
    where = source / "qrels" / ("dev.tsv" if given else "train.tsv")
    fix = "add judged dev queries" if given else "raise data.dev_fraction or add a qrels/dev.tsv"
    carved = "" if given else ", carved by data.dev_fraction,"
    raise DataError(
        where,
        f"dev split{carved} has {judged} queries with a relevant document; promotion needs at least {least} "
        f"(data.min_dev_queries) to judge a model: {fix}, or lower data.min_dev_queries "
        "if you accept a noisier judgement",
    )


def run(params: Params, root: Path, log=NullLog()) -> dict:
    out = path(root, params.data.out_dir)
    with hold(out):  # one prepare of this project at a time
        summary = write_prepared(params, root, out)
    log.metrics({k: v for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    return summary


def write_prepared(params: Params, root: Path, out: Path) -> dict:
    """Read and check the dataset, then write its normalised copy to `out`; returns the summary."""
    data = params.data
    source = resolve_dataset_dir(data, root)
    ds = load_beir(source, required=("train", "test"))
    splits = dict(ds.qrels)
    if "dev" not in splits:
        splits["train"], splits["dev"] = carve_dev(splits["train"], data.dev_fraction, params.seed)
    check_dev_size(splits["dev"], data.min_dev_queries, source, "dev" in ds.qrels)
    with atomic_dir(out) as tmp:
        with open(tmp / "corpus.jsonl", "w", encoding="utf-8") as fh:
            for doc_id, doc in ds.corpus.items():
                fh.write(json.dumps({"_id": doc_id, "title": doc["title"], "text": doc["text"]}) + "\n")
        with open(tmp / "queries.jsonl", "w", encoding="utf-8") as fh:
            for qid, text in ds.queries.items():
                fh.write(json.dumps({"_id": qid, "text": text}) + "\n")
        for split, qrels in splits.items():
            write_qrels(tmp / "qrels" / f"{split}.tsv", qrels)
        summary = {
            "dataset": data.name,
            "docs": len(ds.corpus),
            "queries": len(ds.queries),
            **{f"{s}_queries": len(q) for s, q in splits.items()},
            "dev_carved": "dev" not in ds.qrels,
        }
        write_json(tmp / "manifest.json", {**summary, "source": str(source)})
    return summary
