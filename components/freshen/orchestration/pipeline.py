"""The pipelines, written once: their steps, what runs before each, and the `freshen` argv.

Everything that runs the steps is built from here or checked against it:

- the Airflow DAGs (dags/, through `airflow_tasks.steps`) and the Kubeflow pipelines
  (`kfp_pipeline`) add one task per step, with these edges, running `cli_argv(...)`;
- dvc.yaml declares the train pipeline's steps as its stages, in this order, and its deps/outs
  graph must give these edges (tests/test_pipeline_definition.py holds the two together);
- docs/orchestration.md shows `steps_table()` (`python -m freshen.orchestration.pipeline --docs`
  rewrites it; a test fails when it is stale).

Which steps get a GPU is a setting (orchestration.gpu.steps in params.yaml); `Step.gpu` marks the
steps that encode text or train, which is that setting's default.

This module imports neither Airflow nor kfp."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from freshen.errors import DataError


@dataclass(frozen=True)
class Step:
    """One `freshen <verb>` call: the module freshen.steps.<name>, one task in every runner."""

    name: str
    about: str = ""  # one line for the docs and the Airflow UI
    after: tuple[str, ...] = ()  # steps that must finish first
    gpu: bool = False  # encodes text or trains: in orchestration.gpu.steps by default
    mapped: bool = False  # K tasks in parallel, one per corpus shard: `--shard i --num-shards K`
    serves: bool = False  # makes a new index the serving one (Airflow: the freshen_serving_index Asset)
    after_skipped: bool = False  # runs when a step before it was skipped (Airflow trigger rule none_failed)

    @property
    def verb(self) -> str:
        return self.name.replace("_", "-")


@dataclass(frozen=True)
class Pipeline:
    kind: str  # the MLflow parent run's name and `freshen start-run --kind`
    dag_id: str  # the Airflow DAG; Kubeflow's pipeline is the same with dashes
    about: str
    steps: tuple[Step, ...]  # in an order that runs every step after its `after`

    @property
    def kfp_name(self) -> str:
        return self.dag_id.replace("_", "-")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.steps)

    def edges(self) -> set[tuple[str, str]]:
        """(upstream, downstream) pairs, as written in `after`."""
        return {(up, s.name) for s in self.steps for up in s.after}

    def last(self) -> tuple[str, ...]:
        """The steps nothing runs after."""
        return tuple(n for n in self.names if not any(n in s.after for s in self.steps))


TRAIN = Pipeline(
    kind="train",
    dag_id="freshen_train",
    about="train a retriever and its corrector, evaluate it, promote it",
    steps=(
        Step("prepare", about="the dataset, checked, with a dev split carved from train when it has none"),
        Step("cluster_queries", after=("prepare",), gpu=True,
             about="k-means over the training queries' embeddings (TAS batches)"),
        Step("embed_cache", after=("prepare",), gpu=True,
             about="the corpus embedded by the pre-trained encoder: the stale cache"),
        Step("train", after=("cluster_queries", "embed_cache"), gpu=True,
             about="the encoder and its corrector, negatives from the stale cache"),
        Step("reembed", after=("train",), gpu=True,
             about="the corpus re-embedded by the trained encoder: the fresh cache"),
        Step("evaluate", after=("reembed",), gpu=True,
             about="zero-shot, trained, corrected (and BM25) on dev and test"),
        Step("promote", after=("evaluate",),
             about="registers the model; moves `champion` when it beats the current one"),
    ),
)  # fmt: skip

REFRESH = Pipeline(
    kind="refresh",
    dag_id="freshen_cache_refresh",
    about="re-embed the corpus with the champion, serve a fresh index",
    steps=(
        Step("fetch_champion",
             about="copies the registry's champion (encoder + corrector) to orchestration.champion_dir"),
        Step("corrected_index", after=("fetch_champion",), serves=True,
             about="serves at once: the champion's corrector over the old cache, with an index"),
        Step("reembed_shard", after=("fetch_champion",), gpu=True, mapped=True,
             about="one corpus shard embedded by the champion's encoder (copied when a cache of that model has it)"),
        Step("merge_shards", after=("reembed_shard",),
             about="checks the shard set and merges it into orchestration.refresh_dir"),
        Step("build_index", after=("merge_shards",),
             about="a faiss index over the merged cache"),
        Step("version_cache", after=("build_index",),
             about="`dvc add` of the merged cache (skipped unless orchestration.dvc.enabled)"),
        Step("publish_index", after=("version_cache", "corrected_index"), serves=True, after_skipped=True,
             about="serves the re-embedded cache and its index, replacing the corrected one"),
    ),
)  # fmt: skip

CORPUS = Pipeline(
    kind="corpus",
    dag_id="freshen_corpus_update",
    about="prepare the corpus's new version; the refresh serves it",
    steps=(
        Step("prepare", about="the dataset's new version, checked (the train pipeline's first step)"),
    ),
)  # fmt: skip

PIPELINES = {p.kind: p for p in (TRAIN, REFRESH, CORPUS)}


def all_steps() -> tuple[Step, ...]:
    return TRAIN.steps + REFRESH.steps


def default_gpu_steps() -> list[str]:
    return [s.name for s in all_steps() if s.gpu]


def cli_argv(
    step: str,
    root,
    params_file,
    parent_run_id,
    set_json,
    options: dict | None = None,
    skip_exit_code: int | None = None,
) -> list:
    """`freshen` arguments (after the entrypoint) for one step, as every runner passes them.

    Values may be strings or a runner's placeholders (Airflow templates, Kubeflow inputs): they
    are placed as given; numbers in `options` become strings. A None value leaves its option out."""
    argv = [step.replace("_", "-"), "--root", root, "--params", params_file]
    if parent_run_id is not None:
        argv += ["--parent-run-id", parent_run_id]
    if set_json is not None:
        argv += ["--set-json", set_json]
    for key, value in (options or {}).items():
        if value is not None:
            argv += [f"--{key.replace('_', '-')}", str(value) if isinstance(value, (int, float)) else value]
    if skip_exit_code is not None:
        argv += ["--skip-exit-code", str(skip_exit_code)]
    return argv


def steps_table(pipeline: Pipeline) -> str:
    """The pipeline as a Markdown table: step, command, what runs before it, what it does."""
    rows = ["| step | command | after | GPU by default | what it does |", "|---|---|---|---|---|"]
    for s in pipeline.steps:
        command = f"`freshen {s.verb}" + (" --shard i --num-shards K`, K tasks" if s.mapped else "`")
        after = ", ".join(f"`{a}`" for a in s.after) or "–"
        if s.after_skipped:
            after += " (also when skipped)"
        rows.append(f"| `{s.name}` | {command} | {after} | {'yes' if s.gpu else ''} | {s.about} |")
    return "\n".join(rows)


DOC = Path(__file__).resolve().parents[3] / "docs" / "orchestration.md"
BEGIN, END = (
    "<!-- steps of {kind}: generated by `python -m freshen.orchestration.pipeline --docs` -->",
    "<!-- end of steps of {kind} -->",
)


def doc_with_tables(text: str) -> str:
    """`text` (docs/orchestration.md) with each pipeline's table between its markers replaced."""
    for pipeline in PIPELINES.values():
        begin, end = BEGIN.format(kind=pipeline.kind), END.format(kind=pipeline.kind)
        head, found, rest = text.partition(begin)
        _, found_end, tail = rest.partition(end)
        if not (found and found_end):
            raise DataError(DOC, f"markers of the {pipeline.kind} table missing ({begin} ... {end})")
        text = f"{head}{begin}\n{steps_table(pipeline)}\n{end}{tail}"
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m freshen.orchestration.pipeline",
        description="Print the pipelines' steps, or rewrite their tables in the docs.",
    )
    parser.add_argument("--docs", action="store_true", help=f"rewrite the step tables in {DOC.name}")
    args = parser.parse_args(argv)
    if args.docs:
        DOC.write_text(doc_with_tables(DOC.read_text(encoding="utf-8")), encoding="utf-8")
        print(f"wrote {DOC}", file=sys.stderr)
    else:
        for pipeline in PIPELINES.values():
            print(f"{pipeline.dag_id}: {pipeline.about}\n\n{steps_table(pipeline)}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
