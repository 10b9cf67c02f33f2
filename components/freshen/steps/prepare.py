"""Step 0, prepare: find (or fetch) the dataset, validate it, carve a seeded dev split when
it has none, and write a normalised copy that every later step and DVC depend on."""

from __future__ import annotations

import json
from pathlib import Path

from freshen.atomic import atomic_dir, write_json
from freshen.data.beir import carve_dev, load_beir, write_qrels
from freshen.data.fetch import resolve_dataset_dir
from freshen.steps.common import NullLog, path

SECTIONS = ["seed", "data"]


def run(params: dict, root: Path, log=NullLog()) -> dict:
    data = params["data"]
    source = resolve_dataset_dir(data, root)
    ds = load_beir(source, required=("train", "test"))
    splits = dict(ds.qrels)
    if "dev" not in splits:
        splits["train"], splits["dev"] = carve_dev(splits["train"], float(data.get("dev_fraction", 0.1)),
                                                   int(params["seed"]))
    out = path(root, data["out_dir"])
    with atomic_dir(out) as tmp:
        with open(tmp / "corpus.jsonl", "w", encoding="utf-8") as fh:
            for doc_id, doc in ds.corpus.items():
                fh.write(json.dumps({"_id": doc_id, "title": doc["title"], "text": doc["text"]}) + "\n")
        with open(tmp / "queries.jsonl", "w", encoding="utf-8") as fh:
            for qid, text in ds.queries.items():
                fh.write(json.dumps({"_id": qid, "text": text}) + "\n")
        for split, qrels in splits.items():
            write_qrels(tmp / "qrels" / f"{split}.tsv", qrels)
        summary = {"dataset": data.get("name"), "docs": len(ds.corpus), "queries": len(ds.queries),
                   **{f"{s}_queries": len(q) for s, q in splits.items()},
                   "dev_carved": "dev" not in ds.qrels}
        write_json(tmp / "manifest.json", {**summary, "source": str(source)})
    log.metrics({k: v for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    return summary
