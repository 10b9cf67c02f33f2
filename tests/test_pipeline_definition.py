"""The one pipeline definition (freshen.orchestration.pipeline) and what must agree with it:
dvc.yaml's stages, order, commands and deps-outs graph as DVC itself reads them, the CLI's verbs,
params.yaml's default GPU steps and the step tables in docs/orchestration.md."""

import importlib
from pathlib import Path

import networkx as nx
import pytest
import yaml
from freshen.cli import build_parser
from freshen.errors import DataError, FreshenError
from freshen.orchestration import pipeline
from freshen.orchestration.pipeline import PIPELINES, REFRESH, TRAIN, cli_argv
from freshen.orchestration.stage_deps import load_stages, stage_edges
from freshen.params import validate_params
from freshen.steps import STEP_NAMES

REPO = Path(__file__).resolve().parents[1]


def reduced(edges) -> set[tuple[str, str]]:
    """The edges a DAG cannot do without (its transitive reduction)."""
    return set(nx.transitive_reduction(nx.DiGraph(list(edges))).edges)


def dvc_graph() -> tuple[list, set[tuple[str, str]]]:
    """dvc.yaml's stages, in order, and their (upstream, downstream) edges, as DVC builds them."""
    from dvc.repo import Repo

    with Repo(str(REPO)) as repo:
        stages = list(repo.index.stages)
        return stages, {(up.addressing, down.addressing) for down, up in repo.index.graph.edges}


@pytest.mark.parametrize("p", PIPELINES.values(), ids=lambda p: p.kind)
def test_every_step_comes_after_the_steps_it_needs(p):
    names = p.names
    assert len(set(names)) == len(names)
    for i, step in enumerate(p.steps):
        assert set(step.after) <= set(names[:i]), f"{step.name} runs after a later or unknown step"
    assert nx.is_directed_acyclic_graph(nx.DiGraph(list(p.edges())))


def test_the_last_steps_are_those_nothing_runs_after():
    assert TRAIN.last() == ("promote",) and REFRESH.last() == ("publish_index",)


@pytest.mark.parametrize("step", TRAIN.steps + REFRESH.steps, ids=lambda s: s.name)
def test_every_step_is_a_cli_verb_with_a_step_module(step):
    assert step.verb in build_parser()._actions[1].choices
    module = importlib.import_module(f"freshen.steps.{step.name}")
    assert callable(module.run)


def test_the_cli_knows_the_train_pipeline_in_its_order():
    assert STEP_NAMES == TRAIN.names


def test_dvc_stages_are_the_train_pipeline_in_order_with_its_commands():
    stages, _ = dvc_graph()
    assert [s.addressing for s in stages] == list(TRAIN.names)
    assert {s.addressing: s.cmd for s in stages} == {s.name: f"freshen {s.verb}" for s in TRAIN.steps}


def test_dvc_deps_and_outs_give_the_definition_edges():
    _, edges = dvc_graph()
    assert reduced(edges) == reduced(TRAIN.edges())
    assert reduced(TRAIN.edges()) == TRAIN.edges()  # the definition names no edge twice


def test_dvc_yaml_as_the_checks_read_it_is_as_dvc_reads_it():
    """stage_deps reads dvc.yaml itself (fast, and on copies): the same deps, outs and edges as DVC."""
    from dvc.dependency.param import ParamsDependency

    ours = load_stages(REPO / "dvc.yaml", REPO / "params.yaml")
    stages, edges = dvc_graph()
    for stage in stages:
        deps = [str(d.def_path) for d in stage.deps if not isinstance(d, ParamsDependency)]
        assert list(ours[stage.addressing].deps) == deps, stage.addressing
        params = [key for d in stage.deps if isinstance(d, ParamsDependency) for key in d.params]
        assert sorted(ours[stage.addressing].params) == sorted(params), stage.addressing
        assert sorted(ours[stage.addressing].outs) == sorted(str(o.def_path) for o in stage.outs), stage.addressing
    assert stage_edges(ours) == edges


def test_params_default_gpu_steps_are_the_steps_marked_gpu():
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    assert params["orchestration"]["gpu"]["steps"] == pipeline.default_gpu_steps()
    assert "promote" not in pipeline.default_gpu_steps() and "train" in pipeline.default_gpu_steps()


def test_an_unknown_gpu_step_names_the_channel_and_field():
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["orchestration"]["gpu"]["steps"] = ["train", "evalute"]
    with pytest.raises(FreshenError, match=r"orchestration.gpu.steps: .*unknown step 'evalute'"):
        validate_params(params, "params.yaml")
    params["orchestration"]["gpu"]["steps"] = []
    assert validate_params(params).orchestration.gpu.steps == []


def test_cli_argv():
    assert cli_argv("embed_cache", "/p", "params.yaml", "run1", '{"a": 1}') == [
        "embed-cache",
        "--root",
        "/p",
        "--params",
        "params.yaml",
        "--parent-run-id",
        "run1",
        "--set-json",
        '{"a": 1}',
    ]
    placeholder = object()  # a runner's stand-in for a value known only when the task runs
    assert cli_argv(
        "reembed_shard",
        "/p",
        "x.yaml",
        None,
        None,
        {"shard": 2, "num_shards": placeholder, "model_dir": None},
        skip_exit_code=0,
    ) == [
        "reembed-shard",
        "--root",
        "/p",
        "--params",
        "x.yaml",
        "--shard",
        "2",
        "--num-shards",
        placeholder,
        "--skip-exit-code",
        "0",
    ]
    parsed = build_parser().parse_args(
        cli_argv("reembed_shard", "/p", "x.yaml", "r", "{}", {"shard": 1, "num_shards": 3})
    )
    assert (parsed.step, parsed.shard, parsed.num_shards, parsed.parent_run_id) == ("reembed-shard", 1, 3, "r")


def test_the_docs_show_the_current_step_tables():
    text = pipeline.DOC.read_text(encoding="utf-8")
    assert pipeline.doc_with_tables(text) == text, "run: python -m freshen.orchestration.pipeline --docs"
    for p in PIPELINES.values():
        assert pipeline.steps_table(p) in text


def test_a_stale_step_table_is_rewritten_and_missing_markers_are_an_error():
    text = pipeline.DOC.read_text(encoding="utf-8")
    stale = text.replace("| `merge_shards` |", "| `merge` |", 1)  # the generated row comes first
    assert stale != text and pipeline.doc_with_tables(stale) == text
    with pytest.raises(DataError, match="markers of the refresh table missing"):
        pipeline.doc_with_tables(text.replace(pipeline.END.format(kind="refresh"), ""))


def test_the_table_says_what_runs_before_each_step():
    table = pipeline.steps_table(REFRESH)
    row = next(line for line in table.splitlines() if line.startswith("| `publish_index`"))
    assert "`version_cache`, `corrected_index` (also when skipped)" in row
    shard = next(line for line in table.splitlines() if line.startswith("| `reembed_shard`"))
    assert "--shard i --num-shards K" in shard and "| yes |" in shard
