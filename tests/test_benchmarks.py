"""The benchmarks package: every benchmark imports as a module of it (no sys.path edits), and the
report helpers they share write what they say."""

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from benchmarks import common, stage_times

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = sorted(p.stem for p in (REPO / "benchmarks").glob("*.py") if p.stem not in ("__init__", "common"))


def test_the_benchmarks_are_the_ones_the_package_documents():
    documented = importlib.import_module("benchmarks").__doc__
    assert BENCHMARKS == sorted(
        [
            "ablation",
            "corpus_update",
            "deployment",
            "encode_memory",
            "encode_throughput",
            "faults",
            "generalize",
            "kfp_local",
            "scale",
            "search",
            "seeds",
            "serving_fit",
            "stage_times",
        ]
    )
    assert all(f"- {name}:" in documented for name in BENCHMARKS)


@pytest.mark.parametrize("name", BENCHMARKS)
def test_every_benchmark_is_a_module_with_a_main_and_no_path_edits(name):
    module = importlib.import_module(f"benchmarks.{name}")
    assert callable(module.main)
    assert "sys.path" not in (REPO / "benchmarks" / f"{name}.py").read_text()


def test_a_benchmark_runs_from_the_repository_root_as_a_module():
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.faults", "--help"], check=False, cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "--only" in done.stdout


def test_the_command_line_names_the_module_and_quotes_its_arguments():
    assert common.command_line("generalize", ["--seeds", "13", "--set", "a b=1"]) == (
        "python -m benchmarks.generalize --seeds 13 --set 'a b=1'"
    )
    assert common.command_line("seeds", []) == "python -m benchmarks.seeds"


def test_the_machine_line_names_cpu_cores_and_python():
    line = common.machine()
    assert f"{common.cores()} cores" in line and line.startswith(common.cpu_model())
    assert "python 3." in line


def test_a_report_is_written_with_its_folder_and_keeps_its_notes(tmp_path):
    report = tmp_path / "new" / "report.md"
    common.write_keeping_notes(report, "# table 1\n")
    assert report.read_text() == "# table 1\n"
    report.write_text("# table 1\n\n" + common.NOTES_MARKER + "\nhow it was run\n")
    common.write_keeping_notes(report, "# table 2\n")
    assert report.read_text() == "# table 2\n\n" + common.NOTES_MARKER + "\nhow it was run\n"
    assert [p.name for p in report.parent.iterdir()] == ["report.md"]  # no temporary left behind


def test_the_scale_benchmark_trains_over_a_mapped_cache_and_compares_ann_with_exact(tmp_path, tiny_model):
    """benchmarks/scale.py at toy sizes: the small corpus scored exactly from memory, the large one
    read from the file past `memory_gb`, through an ANN index past `ann_threshold`."""
    import json

    from benchmarks import scale

    out = tmp_path / "out"
    scale.main(
        [
            "--rows", "400,3000", "--dim", "32", "--steps", "1", "--queries", "40", "--overlap-queries", "8",
            "--work", str(tmp_path / "work"), "--out", str(out),
            "--set", f"model.name_or_path={tiny_model}", "--set", "train.passage_max_len=32",
            "--set", "train.precision=fp32", "--set", "train.negatives.ann_threshold=1000",
            "--set", "train.negatives.ann_index=IVF8,Flat", "--set", "train.negatives.ann_candidates=200",
            "--set", "train.negatives.memory_gb=0.00005",
        ]
    )  # fmt: skip
    small, large = json.loads((out / "results.json").read_text())
    assert (small["rows"], small["path"], small["table"]) == (400, "exact", "in memory")
    assert (large["rows"], large["path"], large["table"]) == (3000, "ann", "file")
    assert "ann_overlap_at_100" not in small and 0.5 <= large["ann_overlap_at_100"] <= 1.0
    for r in (small, large):
        assert {"step_s", *(f"{part}_s" for part in scale.PARTS)} <= r.keys()  # the split is reported
        assert r["cache_gib"] == round(r["rows"] * 32 * 2 / 2**30, 3)  # the float16 cache, rows x dim
        rss = r["peak_rss_gib"]
        assert r["rss_over_cache"] == pytest.approx(rss / (r["rows"] * 32 * 2 / 2**30), rel=0.01, abs=0.01)
    report = (out / "report.md").read_text()
    assert "| 3,000 | " in report and "(goal: within 2x)" in report


def test_stage_times_runs_the_train_pipeline_but_promote_and_reports_each_step(tmp_path, tiny_params):
    params_file = tmp_path / "proj" / "params.yaml"
    params_file.parent.mkdir()
    params_file.write_text(yaml.safe_dump(tiny_params, sort_keys=False))
    times = stage_times.run_steps(params_file, ["train.steps=2"])
    steps = ["prepare", "cluster_queries", "embed_cache", "train", "reembed", "evaluate"]
    assert [t["step"] for t in times] == steps and all(t["seconds"] > 0 for t in times)
    assert json.loads((params_file.parent / tiny_params["train"]["metrics"]).read_text())["steps_run"] == 2
    assert not (params_file.parent / tiny_params["promote"]["out"]).exists()  # promote: not run
    evaluation = json.loads((params_file.parent / tiny_params["evaluate"]["metrics"]).read_text())
    text = stage_times.report(times, evaluation, "cpu")
    assert f"| trained | {evaluation['test']['trained']['ndcg_at_10']:.4f} |" in text
    assert f"| all | {sum(t['seconds'] for t in times):.1f} |" in text and "| train |" in text


def test_stage_times_points_the_repository_params_at_the_data_and_devices(tmp_path):
    written = stage_times.project_params(tmp_path / "w", tmp_path / "beir", "cuda", "/models/m")
    p = yaml.safe_load(written.read_text())
    assert p["data"]["local_dir"] == str((tmp_path / "beir").resolve()) and p["model"]["name_or_path"] == "/models/m"
    assert p["encode"]["device"] == p["train"]["device"] == "cuda"
    assert p["train"]["steps"] == yaml.safe_load((REPO / "params.yaml").read_text())["train"]["steps"]
