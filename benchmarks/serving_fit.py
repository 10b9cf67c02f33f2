"""Benchmark: the serving fit (train.corrector.serving_fit) on a project where `dvc repro` ran,
against the corrector as trained and the re-embedded cache (issue 30: a corrected index as good
as a fresh one). Not a test: run it by hand.

It takes the project's trained encoder and corrector, stale cache (`cache.out_dir`) and
re-embedded cache (`reembed.out_dir`), runs `freshen.training.serving_fit.fit_for_serving` with
the project's params (plus `--set` overrides), and reports dev and test nDCG@10 of the trained
queries over: the stale cache, h(stale), h'(stale) (the fitted corrector) and the re-embedded
cache. Test queries are split by whether any of their judged documents is also judged for a
training query, since the fit moves exactly those rows.

The project must have been trained with the fit off (`epochs: 0`, the default before 22a46d7):
its saved corrector is then h as trained; a project whose `train` fitted it is refused.

    python -m benchmarks.serving_fit --project PATH [--set train.corrector.serving_fit.epochs=40]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from freshen.cache import load_cache
from freshen.data.beir import load_beir
from freshen.encoding import encode, set_threads
from freshen.modeling.corrector import Corrector
from freshen.modeling.encoder import Encoder
from freshen.params import load_params
from freshen.training.serving_fit import TableIndex, corrected, dev_scorer, fit_for_serving

from benchmarks.common import RESULTS, command_line, machine, write_keeping_notes

SYSTEMS = ("stale", "h", "fitted", "reembedded")


def ndcg(queries: np.ndarray, qids: list[str], table: np.ndarray, ids: list[str], qrels: dict) -> float:
    return dev_scorer(queries, qids, ids, {q: qrels[q] for q in qids})(TableIndex(table)) if qids else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serving_fit", description=__doc__.split("\n")[0])
    parser.add_argument("--project", type=Path, required=True, help="a project folder where `dvc repro` ran")
    parser.add_argument("--set", action="append", default=[], help="params override, as `freshen --set`")
    parser.add_argument("--out", type=Path, default=RESULTS / "serving_fit")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    set_threads()
    project = args.project.resolve()
    params = load_params(project / "params.yaml", sets=args.set)
    if params.train.corrector.serving_fit.epochs < 1:
        parser.error("train.corrector.serving_fit.epochs is 0 in that project: give --set ...epochs=N")
    trained = project / params.train.metrics
    if trained.is_file() and json.loads(trained.read_text()).get("serving_fit_epoch"):
        raise SystemExit(  # the saved corrector is h' already: fitting it again would be labelled h
            f"{trained}: field 'serving_fit_epoch': the saved corrector was fitted for serving by `train`; "
            "this benchmark needs the corrector as trained (train with train.corrector.serving_fit.epochs=0)"
        )
    ds = load_beir(project / params.data.out_dir, splits=("train", "dev", "test"))
    model = project / params.train.out_dir
    encoder = Encoder.load(model / "encoder")
    stale = load_cache(project / params.cache.out_dir)
    fresh = load_cache(project / params.reembed.out_dir)
    if fresh.ids != stale.ids:
        raise SystemExit(f"{fresh.path}: its rows are not the stale cache's ({stale.path})")
    h = Corrector.load(model / "corrector", expect_dim=stale.dim).eval()
    fit = fit_for_serving(encoder, h, stale, ds, params.train, params.seed, params.encode)
    fit_seconds = time.perf_counter() - started
    tables = {
        "stale": np.asarray(stale.embeddings, dtype=np.float32),
        "h": corrected(h, np.asarray(stale.embeddings)),
        "fitted": corrected(fit.corrector, np.asarray(stale.embeddings)),
        "reembedded": np.asarray(fresh.embeddings, dtype=np.float32),
    }
    train_docs = {d for q, docs in ds.qrels["train"].items() for d, g in docs.items() if g > 0}
    figures: dict = {}
    for split in ("dev", "test"):
        qrels = ds.evaluation_qrels(split)
        qids = sorted(qrels)
        queries = encode(encoder, [ds.queries[q] for q in qids], "query", precision=params.encode.precision)
        shared = [q for q in qids if set(qrels[q]) & train_docs]
        groups = {"all": qids, "shares a judged document with train": shared}
        groups["judged documents unseen in train"] = [q for q in qids if q not in set(shared)]
        for group, members in groups.items():
            pick = [qids.index(q) for q in members]
            figures[(split, group)] = {
                "queries": len(members),
                **{s: ndcg(queries[pick], members, t, stale.ids, qrels) for s, t in tables.items()},
            }
    summary = {
        "project": str(project),
        "params": params.train.corrector.serving_fit.model_dump(),
        "seed": params.seed,
        "epoch_kept": fit.epoch,
        "dev_ndcg_per_epoch": [round(x, 4) for x in fit.dev_ndcg_at_10],
        "fit_seconds": round(fit_seconds, 1),
        "figures": [{"split": s, "queries_group": g, **v} for (s, g), v in figures.items()],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    write_keeping_notes(args.out / "report.md", report(summary))
    print((args.out / "report.md").read_text())
    return 0


def report(summary: dict) -> str:
    lines = [
        "# The serving fit: h(stale cache) fitted for retrieval after training",
        "",
        f"Machine: {machine()}",
        f"Command: `{command_line('serving_fit')}`",
        f"Project: its trained model and its stale and re-embedded caches (seed {summary['seed']}); "
        f"serving_fit {summary['params']}.",
        f"Kept epoch {summary['epoch_kept']} by dev nDCG@10 (per epoch, 0 = h as trained: "
        f"{summary['dev_ndcg_per_epoch']}); fit and its evaluations {summary['fit_seconds']} s.",
        "",
        "| split | queries | n | stale | h(stale) | h'(stale) (fitted) | re-embedded | fitted minus re-embedded |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for f in summary["figures"]:
        lines.append(
            f"| {f['split']} | {f['queries_group']} | {f['queries']} | {f['stale']:.4f} | {f['h']:.4f} | "
            f"{f['fitted']:.4f} | {f['reembedded']:.4f} | {f['fitted'] - f['reembedded']:+.4f} |"
        )
    lines += [
        "",
        "nDCG@10 of the trained encoder's queries over each table (exact search, top 100). The fit "
        "sees the training queries and their judged documents only; dev picks the epoch.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
