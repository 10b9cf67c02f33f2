"""Does the default recipe help on data nobody tuned for? One command: for each dataset and
stress variant, the whole pipeline (`freshen prepare ... promote`, the README's "another
dataset" path: a BEIR folder with graded qrels and a dev split, `data.verify: false`) on each
seed, and a table of zero-shot against trained test nDCG@10.

    python -m benchmarks.generalize                               # scifact + both stress variants, seeds 13-17
    python -m benchmarks.generalize --datasets scifact-dense --seeds 13
    python -m benchmarks.generalize --dataset mine=/data/beir/mine   # any BEIR folder as well
    python -m benchmarks.generalize --set train.lr=2e-5 --out benchmarks/results/generalize-lr2e-5

Stress variants, built from SciFact (`--source`) into the work folder, never committed:
- `scifact-incomplete`: a seeded `--drop` fraction of the train and dev judgements removed (a
  query left with none leaves the split); test intact. The removed positives stay in the corpus,
  unjudged, where the sampler may pick them as negatives.
- `scifact-dense`: every abstract cut into passages of `--sentences` sentences, each with the
  title; every passage of a relevant abstract is relevant, graded 2 for the passage sharing the
  most words with the query and 1 for the others; train and dev keep the grade-2 passage and a
  seeded half of the others (dense relevance, incompletely judged); test judges every passage.
- `scifact-topics`: each split's queries clustered into topics of about 20; a query's own
  abstracts are grade 2, the other abstracts of its topic grade 1: dozens of graded positives a
  query, most of them only on topic (as in a corpus whose labels come from topic pages).

Each (dataset, seed) runs in its own project folder under `--work` (its own MLflow store and
registry); the prepared data and the initial cache are built once per dataset and shared by its
seeds. A finished (dataset, seed) is not run again, so a stopped benchmark resumes. Not a test:
about 15 minutes a run on 2 CPU cores."""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from benchmarks.common import RESULTS, ROOT, command_line, machine, write_keeping_notes, write_report

VARIANTS = ("scifact-incomplete", "scifact-dense", "scifact-topics")
DEFAULT_DATASETS = ("scifact", *VARIANTS)
PIPELINE = ("prepare", "cluster-queries", "embed-cache", "train", "reembed", "evaluate", "promote")
SHARED = ("prepare", "embed-cache")  # seed-independent: once per dataset
# the goal: trained above zero-shot on the mean of GOAL_SEEDS seeds, and no seed below it by more than this
WORST_SEED_GOAL, GOAL_SEEDS = -0.005, 5
WORD = re.compile(r"[a-z0-9]+")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\[])")


# -- the stress variants -----------------------------------------------------------------
def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _write_jsonl(path: Path, rows) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        cols = line.split("\t")
        if i == 0 and not cols[-1].strip().lstrip("-").isdigit():
            continue  # header
        out.setdefault(cols[0], {})[cols[1]] = int(cols[2])
    return out


def write_qrels(path: Path, qrels: dict[str, dict[str, int]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{r}" for q, docs in qrels.items() for d, r in docs.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def split_dev(train: dict, fraction: float, rng: np.random.Generator) -> tuple[dict, dict]:
    """(train, dev) by query: a seeded `fraction` of the queries, at least one, goes to dev."""
    qids = sorted(train)
    n_dev = max(1, math.ceil(fraction * len(qids)))
    dev = {qids[i] for i in rng.permutation(len(qids))[:n_dev]}
    return {q: train[q] for q in qids if q not in dev}, {q: train[q] for q in qids if q in dev}


def drop_judgements(qrels: dict, fraction: float, rng: np.random.Generator, keep=None) -> dict:
    """Each positive judgement removed with probability `fraction` (except those `keep(q, d)`
    protects); a query left with no positive is dropped."""
    out = {}
    for q in sorted(qrels):
        docs = {
            d: r
            for d, r in sorted(qrels[q].items())
            if r <= 0 or (keep is not None and keep(q, d)) or rng.random() >= fraction
        }
        if any(r > 0 for r in docs.values()):
            out[q] = docs
    return out


def _copy_base(source: Path, out: Path, corpus: list[dict] | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    _write_jsonl(out / "corpus.jsonl", corpus if corpus is not None else _read_jsonl(source / "corpus.jsonl"))
    queries = [{"_id": q["_id"], "text": q["text"]} for q in _read_jsonl(source / "queries.jsonl")]
    _write_jsonl(out / "queries.jsonl", queries)


def make_incomplete(source: Path, out: Path, drop: float = 0.5, dev_fraction: float = 0.1, seed: int = 0) -> dict:
    """SciFact with a seeded `drop` fraction of its train and dev positives removed; test intact."""
    rng = np.random.default_rng([seed, 1])
    train, dev = split_dev(read_qrels(source / "qrels" / "train.tsv"), dev_fraction, rng)
    _copy_base(source, out)
    splits = {
        "train": drop_judgements(train, drop, rng),
        "dev": drop_judgements(dev, drop, rng),
        "test": read_qrels(source / "qrels" / "test.tsv"),
    }
    for name, qrels in splits.items():
        write_qrels(out / "qrels" / f"{name}.tsv", qrels)
    return _describe(out, splits)


def passages_of(doc: dict, sentences: int) -> list[dict]:
    """An abstract cut into passages of `sentences` sentences, each carrying the title."""
    parts = [s for s in SENTENCE_END.split(doc.get("text", "").strip()) if s.strip()] or [doc.get("text", "")]
    chunks = [" ".join(parts[i : i + sentences]) for i in range(0, len(parts), sentences)]
    return [{"_id": f"{doc['_id']}#{i}", "title": doc.get("title", ""), "text": c} for i, c in enumerate(chunks)]


def grade_passages(query: str, passages: list[dict]) -> dict[str, int]:
    """2 for the passage sharing the most words with the query (the first on a tie), 1 for the rest."""
    words = set(WORD.findall(query.lower()))
    shared = [len(words & set(WORD.findall(p["text"].lower()))) for p in passages]
    best = int(np.argmax(shared))
    return {p["_id"]: 2 if i == best else 1 for i, p in enumerate(passages)}


def make_dense(
    source: Path, out: Path, sentences: int = 3, keep_other: float = 0.5, dev_fraction: float = 0.1, seed: int = 0
) -> dict:
    """SciFact with every abstract cut into passages: dense, graded relevance; train and dev judge
    the grade-2 passage and a seeded `keep_other` share of the rest, test judges them all."""
    rng = np.random.default_rng([seed, 2])
    docs = _read_jsonl(source / "corpus.jsonl")
    passages = {d["_id"]: passages_of(d, sentences) for d in docs}
    queries = {q["_id"]: q["text"] for q in _read_jsonl(source / "queries.jsonl")}
    _copy_base(source, out, [p for d in docs for p in passages[d["_id"]]])

    def expand(qrels: dict) -> dict:
        return {
            q: {
                pid: g
                for d, r in sorted(docs_.items())
                if r > 0
                for pid, g in grade_passages(queries[q], passages[d]).items()
            }
            for q, docs_ in qrels.items()
        }

    train, dev = split_dev(read_qrels(source / "qrels" / "train.tsv"), dev_fraction, rng)
    splits = {"train": expand(train), "dev": expand(dev), "test": expand(read_qrels(source / "qrels" / "test.tsv"))}
    for name in ("train", "dev"):
        graded = splits[name]
        splits[name] = drop_judgements(graded, 1.0 - keep_other, rng, keep=lambda q, d, g=graded: g[q][d] == 2)
    for name, qrels in splits.items():
        write_qrels(out / "qrels" / f"{name}.tsv", qrels)
    return _describe(out, splits)


def make_topics(
    source: Path, out: Path, per_topic: int = 20, dev_fraction: float = 0.1, seed: int = 0, model: dict | None = None
) -> dict:
    """SciFact with topical relevance: the queries of each split clustered (k-means on the
    pre-trained encoder, about `per_topic` queries a topic); a query's own judged abstracts are
    grade 2, those of the other queries of its topic grade 1 (dozens of positives, most of them
    only on topic). Train and dev are so labelled; test too, from test's own queries. `model`:
    params.yaml's `model` section (default: the pre-trained encoder)."""
    from freshen.encoding import encode
    from freshen.modeling.encoder import Encoder
    from freshen.steps.cluster_queries import kmeans

    rng = np.random.default_rng([seed, 3])
    queries = {q["_id"]: q["text"] for q in _read_jsonl(source / "queries.jsonl")}
    encoder = Encoder.from_params(model or {"name_or_path": None})
    _copy_base(source, out)

    def topical(qrels: dict) -> dict:
        qids = sorted(qrels)
        # fp32, not the "auto" bf16 of CPUs that have it: bf16 moved queries across topics, so one
        # seed's test split differed from another's built on another host
        emb = encode(encoder, [queries[q] for q in qids], "query", precision="fp32")
        _, topic, _ = kmeans(emb, max(1, round(len(qids) / per_topic)), 25, seed, spherical=True)
        members: dict[int, list[str]] = {}
        for q, t in zip(qids, topic.tolist()):
            members.setdefault(t, []).append(q)
        out_ = {}
        for q, t in zip(qids, topic.tolist()):
            weak = {d: 1 for other in members[t] for d, r in qrels[other].items() if r > 0}
            out_[q] = {**weak, **{d: 2 for d, r in qrels[q].items() if r > 0}}
        return out_

    train, dev = split_dev(read_qrels(source / "qrels" / "train.tsv"), dev_fraction, rng)
    splits = {"train": topical(train), "dev": topical(dev), "test": topical(read_qrels(source / "qrels" / "test.tsv"))}
    for name, qrels in splits.items():
        write_qrels(out / "qrels" / f"{name}.tsv", qrels)
    return _describe(out, splits)


def dataset_digest(folder: Path) -> str:
    """sha256 of a BEIR folder's corpus, queries and qrels: runs of one dataset are compared
    only when they trained and were judged on the same bytes."""
    h = hashlib.sha256()
    for f in [folder / "corpus.jsonl", folder / "queries.jsonl", *sorted((folder / "qrels").glob("*.tsv"))]:
        h.update(f.name.encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _describe(out: Path, splits: dict) -> dict:
    info = {
        "docs": sum(1 for line in open(out / "corpus.jsonl", encoding="utf-8") if line.strip()),
        "sha256": dataset_digest(out),
    }
    for name, qrels in splits.items():
        pos = [sum(1 for r in docs.values() if r > 0) for docs in qrels.values()]
        info[name] = {"queries": len(qrels), "positives_per_query": round(float(np.mean(pos)), 2) if pos else 0.0}
    (out / "VARIANT.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


# raised whenever a builder's output changes (2: topics from fp32 query embeddings)
BUILDER_VERSION = 2
BUILDERS = {"scifact-incomplete": make_incomplete, "scifact-dense": make_dense, "scifact-topics": make_topics}


# -- running the pipeline -------------------------------------------------------------------
def dataset_params(base: dict, name: str, folder: Path, shared: Path, seed: int, overrides: dict) -> dict:
    """One run's params: the project's params.yaml, the dataset as a BEIR folder of the user's
    own (no checksums), the seed, the shared prepared data and cache, then `--set` overrides."""
    p = json.loads(json.dumps(base))
    p["seed"] = seed
    p["data"].update(name=name, local_dir=str(folder), verify=False, sha256={}, out_dir=str(shared / "prepared"))
    p["cache"]["out_dir"] = str(shared / "cache")
    for key, value in overrides.items():
        node = p
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        if last not in node:
            raise SystemExit(f"--set {key}: no such key in params.yaml")
        node[last] = value
    return p


def freshen(step: str, project: Path, nproc: int = 1) -> None:
    """One step in `project`; `train` in `nproc` ranks (`freshen train --nproc`) when nproc > 1."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("FRESHEN_DATA_DIR", None)
    ranks = ["--nproc", str(nproc)] if step == "train" and nproc > 1 else []
    subprocess.run(
        [sys.executable, "-m", "freshen", "--root", str(project), "--params", "params.yaml", step, *ranks],
        check=True,
        env=env,
    )


def weights_md5(model_dir: Path) -> dict[str, str]:
    """md5 of every weights file of a trained model (encoder and corrector), to compare runs."""
    return {
        str(f.relative_to(model_dir)): hashlib.md5(f.read_bytes()).hexdigest()
        for f in sorted(model_dir.rglob("*.safetensors"))
    }


def run_one(
    base: dict, name: str, folder: Path, seed: int, work: Path, overrides: dict, base_seed: int, nproc: int = 1
) -> dict:
    project = work / name / f"seed{seed}"
    done = project / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    shared = work / name / "shared"
    project.mkdir(parents=True, exist_ok=True)
    p = dataset_params(base, name, folder, shared, seed, overrides)
    started = time.perf_counter()
    for step in PIPELINE:
        if step in SHARED and (shared / ("prepared" if step == "prepare" else "cache")).is_dir():
            continue
        # the shared steps run with the base seed: every seed trains on the same dev split and cache
        run_p = {**p, "seed": base_seed} if step in SHARED else p
        (project / "params.yaml").write_text(yaml.safe_dump(run_p, sort_keys=False))
        freshen(step, project, nproc)
    ev = json.loads((project / p["evaluate"]["metrics"]).read_text())
    tr = json.loads((project / p["train"]["metrics"]).read_text())
    promo = json.loads((project / p["promote"]["out"]).read_text())
    result = {
        "dataset": name,
        "seed": seed,
        "data_sha256": dataset_digest(folder),
        **{
            f"{split}_{system}": ev[split][system]["ndcg_at_10"]
            for split in ("dev", "test")
            for system in ("zero_shot", "trained", "bm25")
            if system in ev[split]
        },
        "best_step": tr.get("best_step"),
        "steps_run": tr.get("steps_run"),
        "false_negatives": {k: v for k, v in tr.items() if k.startswith("fn_")},
        "promoted": promo.get("promoted"),
        "promotion_reason": promo.get("reason"),
        "model_digest": (ev.get("measured") or {}).get("model_digest"),
        "weights_md5": weights_md5(project / p["train"]["out_dir"]),
        "overrides": overrides,
        "false_negative_params": p["train"]["negatives"].get("false_negatives"),
        "command": command_line("generalize"),
        "nproc": nproc,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    done.write_text(json.dumps(result, indent=2) + "\n")
    return result


# -- how many cached negatives are unjudged positives ----------------------------------------
def full_labels(name: str, source: Path, folder: Path) -> dict[str, set[str]]:
    """Every passage relevant to each training query by the complete SciFact judgements: the
    labels the variant's train split only partly shows."""
    judged = {
        q: {d for d, r in docs.items() if r > 0} for q, docs in read_qrels(source / "qrels" / "train.tsv").items()
    }
    if name != "scifact-dense":
        return judged
    ids = [json.loads(line)["_id"] for line in (folder / "corpus.jsonl").read_text().splitlines() if line.strip()]
    by_doc: dict[str, set[str]] = {}
    for pid in ids:
        by_doc.setdefault(pid.split("#")[0], set()).add(pid)
    return {q: set().union(*(by_doc[d] for d in docs)) for q, docs in judged.items()}


def audit(
    name: str,
    source: Path,
    folder: Path,
    shared: Path,
    k: int,
    candidates: int,
    margins: list[float],
    model: dict | None = None,
) -> list[dict]:
    """For every (training query, judged positive) of the variant: of the top-k negatives the
    pre-trained encoder's cache gives (judged passages excluded), the share that the complete
    labels call relevant, without and with the relative-margin rule; and how many candidates the
    rule removes. No training: the cache and the pre-trained query encoder only."""
    import torch
    from freshen.cache import load_cache
    from freshen.encoding import encode
    from freshen.modeling.encoder import Encoder
    from freshen.sampling.false_negatives import FalseNegativeFilter

    train = read_qrels(shared / "prepared" / "qrels" / "train.tsv")
    full = full_labels(name, source, folder)
    cache = load_cache(shared / "cache")
    row_of = {d: i for i, d in enumerate(cache.ids)}
    table = torch.from_numpy(np.asarray(cache.embeddings, dtype=np.float32))
    qids = sorted(q for q in train if q in full)
    queries = {q["_id"]: q["text"] for q in _read_jsonl(source / "queries.jsonl")}
    q_emb = torch.from_numpy(
        encode(Encoder.from_params(model or {"name_or_path": None}), [queries[q] for q in qids], "query")
    )
    scores = q_emb @ table.T
    out = []
    for margin in [None, *margins]:
        rule = FalseNegativeFilter(relative_margin=margin)
        picked = relevant = removed = removed_relevant = 0
        for i, q in enumerate(qids):
            judged = {row_of[d] for d, r in train[q].items() if r > 0}
            s = scores[i].clone()
            s[list(judged)] = float("-inf")
            top = s.topk(candidates)
            truth = torch.tensor([cache.ids[int(r)] in full[q] for r in top.indices])
            for pos in sorted(judged):
                flagged = (
                    rule.too_close(top.values[None, :], scores[i, pos][None])[0]
                    if margin is not None
                    else torch.zeros(candidates, dtype=torch.bool)
                )
                chosen = (~flagged).nonzero().flatten()[:k]
                picked += len(chosen)
                relevant += int(truth[chosen].sum())
                removed += int(flagged.sum())
                removed_relevant += int((flagged & truth).sum())
        out.append(
            {
                "relative_margin": margin,
                "negatives_relevant": relevant / max(picked, 1),
                "removed_per_pair": removed / max(sum(len(train[q]) for q in qids), 1),
                "removed_relevant": removed_relevant / max(removed, 1),
            }
        )
    return out


# -- the report -------------------------------------------------------------------------------
def summarise(results: list[dict]) -> list[dict]:
    """Per dataset: zero-shot, BM25, the trained mean and se over seeds, and the goal."""
    rows = []
    for name in dict.fromkeys(r["dataset"] for r in results):
        rs = [r for r in results if r["dataset"] == name]
        diff = np.array([r["test_trained"] - r["test_zero_shot"] for r in rs])
        trained = np.array([r["test_trained"] for r in rs])
        se = float(diff.std(ddof=1) / math.sqrt(len(diff))) if len(diff) > 1 else float("nan")
        rows.append(
            {
                "dataset": name,
                "seeds": [r["seed"] for r in rs],
                "zero_shot": rs[0]["test_zero_shot"],
                "bm25": rs[0].get("test_bm25"),
                "trained": [r["test_trained"] for r in rs],
                "trained_mean": float(trained.mean()),
                "diff_mean": float(diff.mean()),
                "diff_se": se,
                "worst_diff": float(diff.min()),
                "promoted": sum(bool(r["promoted"]) for r in rs),
                "met": bool(diff.mean() > 0 and diff.min() >= WORST_SEED_GOAL),
            }
        )
        rows[-1]["verdict"] = ("met" if rows[-1]["met"] else "not met") + (
            "" if len(rs) >= GOAL_SEEDS else f" so far ({len(rs)} of {GOAL_SEEDS} seeds)"
        )
        versions = {r.get("data_sha256", "unrecorded") for r in rs}
        if len(versions) > 1:  # seeds that saw different bytes are not seeds of one experiment
            rows[-1]["met"] = False
            rows[-1]["verdict"] = (
                f"not comparable: {len(versions)} versions of the data ({', '.join(sorted(v[:12] for v in versions))})"
            )
    return rows


def report(results: list[dict], command: str, overrides: dict) -> str:
    ran = sorted({r["command"] for r in results if "command" in r})
    out = [
        "# Zero-shot against trained, per dataset (test nDCG@10)",
        "",
        f"Machine: {machine()}",
        *[f"Runs made by: `{c}`" for c in ran],
        f"Command: `{command}`",
        f"Params: the project's params.yaml{', with ' + json.dumps(overrides) if overrides else ''}.",
        "",
        "| dataset | zero-shot | BM25 | trained, per seed | trained mean | minus zero-shot (se) | worst seed | "
        "promoted | goal |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in summarise(results):
        per_seed = ", ".join(f"{s}: {v:.4f}" for s, v in zip(r["seeds"], r["trained"]))
        bm25 = f"{r['bm25']:.4f}" if r["bm25"] is not None else "-"
        se = f"{r['diff_se']:.4f}" if math.isfinite(r["diff_se"]) else "one seed"
        out.append(
            f"| {r['dataset']} | {r['zero_shot']:.4f} | {bm25} | {per_seed} | {r['trained_mean']:.4f} | "
            f"{r['diff_mean']:+.4f} ({se}) | {r['worst_diff']:+.4f} | "
            f"{r['promoted']} of {len(r['seeds'])} | {r['verdict']} |"
        )
    out += [
        "",
        f"Goal: trained above zero-shot on the mean of {GOAL_SEEDS} seeds, and no seed below it by more than "
        f"{-WORST_SEED_GOAL}. "
        "`promoted`: seeds whose model `promote` made champion (it must beat zero-shot on dev).",
        "",
        "| dataset | seed | dev zero-shot | dev trained | best step | test zero-shot | test trained | "
        "promotion | false negatives removed |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        fn = ", ".join(f"{k.removeprefix('fn_')} {v}" for k, v in sorted(r.get("false_negatives", {}).items())) or "-"
        out.append(
            f"| {r['dataset']} | {r['seed']} | {r['dev_zero_shot']:.4f} | {r['dev_trained']:.4f} | "
            f"{r['best_step']} | {r['test_zero_shot']:.4f} | {r['test_trained']:.4f} | "
            f"{r['promotion_reason']} | {fn} |"
        )
    return "\n".join(out) + "\n"


def parse_set(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item}: must look like key.sub=value")
        out[key.strip()] = yaml.safe_load(raw)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", default=",".join(DEFAULT_DATASETS), help="scifact and/or the stress variants")
    ap.add_argument("--dataset", action="append", default=[], metavar="NAME=FOLDER", help="another BEIR folder")
    ap.add_argument("--seeds", default="13,14,15,16,17")
    ap.add_argument("--source", default=str(ROOT.parent / "shared" / "datasets" / "scifact"), help="SciFact folder")
    ap.add_argument("--work", default=str(ROOT / "artifacts" / "generalize"), help="run folders (not git)")
    ap.add_argument("--out", default=str(RESULTS / "generalize"), help="report folder")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--drop", type=float, default=0.5, help="scifact-incomplete: judgements removed")
    ap.add_argument("--sentences", type=int, default=3, help="scifact-dense: sentences a passage")
    ap.add_argument("--nproc", type=int, default=1, help="ranks of the train step (freshen train --nproc)")
    ap.add_argument("--report-only", action="store_true", help="rewrite the report from finished runs")
    ap.add_argument(
        "--audit",
        action="store_true",
        help="no training: the share of the cache's top-k negatives "
        "that the complete labels call relevant, without and with the relative-margin rule "
        "(stress variants whose shared cache exists)",
    )
    args = ap.parse_args()
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    overrides = parse_set(args.overrides)
    work = Path(args.work).resolve()
    source = Path(args.source).resolve()
    folders = {}
    for name in [d for d in args.datasets.split(",") if d]:
        if (name == "scifact" or name in BUILDERS) and not (source / "corpus.jsonl").is_file():
            raise SystemExit(f"--source {source}: no corpus.jsonl there; {name} needs a BEIR SciFact folder")
        if name == "scifact":
            folders[name] = source
        elif name in BUILDERS:
            folders[name] = work / "datasets" / name
            options = {
                "scifact-incomplete": {"drop": args.drop},
                "scifact-dense": {"sentences": args.sentences},
                "scifact-topics": {"model": base["model"]},
            }[name]
            built_with = {"builder": BUILDER_VERSION, "seed": int(base["seed"]), **options}
            marker = folders[name] / "VARIANT.json"
            stale = not marker.is_file() or json.loads(marker.read_text()).get("built_with") != built_with
            if stale and not args.report_only:  # built once; again when the builder or its options change
                info = {
                    **BUILDERS[name](source, folders[name], seed=int(base["seed"]), **options),
                    "built_with": built_with,
                }
                marker.write_text(json.dumps(info, indent=2) + "\n")
                print(name, info)
        else:
            raise SystemExit(
                f"unknown dataset '{name}': expected scifact, {', '.join(VARIANTS)} or --dataset NAME=FOLDER"
            )
    for item in args.dataset:
        name, sep, folder = item.partition("=")
        if not sep:
            raise SystemExit(f"--dataset {item}: must look like NAME=FOLDER")
        folders[name] = Path(folder).resolve()
    command = command_line("generalize")
    if args.audit:
        lines = [
            "# Cached negatives that are unjudged positives (pre-trained encoder, no training)",
            "",
            f"Machine: {machine()}",
            f"Command: `{command}`",
            "",
            "| dataset | relative margin | top-4 negatives relevant by the complete labels | "
            "candidates removed a (query, positive) | of which relevant |",
            "| --- | --- | --- | --- | --- |",
        ]
        for name in (n for n in folders if n in ("scifact-incomplete", "scifact-dense")):  # complete labels known
            for r in audit(
                name, source, folders[name], work / name / "shared", 4, 100, [0.01, 0.02, 0.05, 0.1], base["model"]
            ):
                lines.append(
                    f"| {name} | {r['relative_margin'] if r['relative_margin'] is not None else 'off'} | "
                    f"{r['negatives_relevant']:.3f} | {r['removed_per_pair']:.2f} | {r['removed_relevant']:.3f} |"
                )
        write_report(Path(args.out) / "audit.md", "\n".join(lines) + "\n")
        print("\n".join(lines))
        return
    results = []
    for name, folder in folders.items():
        for seed in [int(s) for s in args.seeds.split(",")]:
            if args.report_only:
                done = work / name / f"seed{seed}" / "result.json"
                if done.is_file():
                    results.append(json.loads(done.read_text()))
                continue
            results.append(run_one(base, name, folder, seed, work, overrides, int(base["seed"]), args.nproc))
            print(json.dumps(results[-1]))
    out = Path(args.out)
    write_keeping_notes(out / "report.md", report(results, command, overrides))  # hand-written notes stay
    write_report(out / "results.json", json.dumps(results, indent=2) + "\n")
    print(report(results, command, overrides))


if __name__ == "__main__":
    main()
