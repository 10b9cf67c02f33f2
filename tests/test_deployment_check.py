"""The deployment check's own logic (benchmarks/deployment.py), without a container engine:
which step calls it makes, and how it tells expected differences from real ones."""

import json
from pathlib import Path

from freshen.orchestration.pipeline import REFRESH, TRAIN

from benchmarks.deployment import CONTAINER_ROOT, WATCHED, compare, inputs_digest, step_calls, unreadable


def test_every_step_of_both_pipelines_is_called_a_mapped_one_once_per_shard():
    calls = step_calls(num_shards=3)
    labels = [label for label, _ in calls]
    assert labels[: len(TRAIN.steps)] == list(TRAIN.names)
    shards = [label for label in labels if label.startswith("reembed_shard")]
    assert shards == ["reembed_shard[0]", "reembed_shard[1]", "reembed_shard[2]"]
    assert {label.split("[")[0] for label in labels} == set(TRAIN.names) | set(REFRESH.names)
    argv = dict(calls)["reembed_shard[2]"]
    assert argv[:3] == ["reembed-shard", "--root", CONTAINER_ROOT]
    assert argv[argv.index("--shard") + 1] == "2" and argv[argv.index("--num-shards") + 1] == "3"


def test_compare_separates_identical_volatile_and_differing_files(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for root, seconds, digest in ((a, 1.0, "x"), (b, 2.0, "x")):
        (root / "metrics").mkdir(parents=True)
        (root / "metrics" / "train.json").write_text(json.dumps({"wall_seconds": seconds, "ndcg": 0.5}))
        (root / "artifacts").mkdir()
        (root / "artifacts" / "same.bin").write_bytes(b"same")
        (root / "artifacts" / "model.json").write_text(json.dumps({"digest": digest + str(seconds)}))
        (root / "mlflow.db").write_bytes(str(seconds).encode())
        (root / "params.yaml").write_text(str(seconds))  # an input: not compared
        (root / "artifacts" / "manifest.json").write_text(json.dumps({"source": f"{root}/beir", "n": 3}))
    out = compare(a, b, container_root=str(a))
    assert out["identical"] == ["artifacts/same.bin"]
    assert out["same_but_project_path"] == ["artifacts/manifest.json"]
    assert out["volatile_same_content"] == ["metrics/train.json"]
    assert out["differ"] == ["artifacts/model.json"]
    assert [v.split(":")[0] for v in out["volatile"]] == ["mlflow.db"]
    # a volatile JSON file differing beyond its volatile keys is a real difference
    (b / "metrics" / "train.json").write_text(json.dumps({"wall_seconds": 2.0, "ndcg": 0.6}))
    assert "metrics/train.json" in compare(a, b)["differ"]


def test_unreadable_names_files_and_folders_another_uid_cannot_read(tmp_path):
    (tmp_path / "ok").write_text("x")
    (tmp_path / "secret").write_text("x")
    (tmp_path / "secret").chmod(0o600)
    (tmp_path / "closed").mkdir()
    (tmp_path / "closed").chmod(0o700)
    tmp_path.chmod(0o755)
    assert sorted(unreadable(tmp_path)) == ["closed (0o700)", "secret (0o600)"]


def test_the_committed_deployment_report_was_made_from_the_current_containers_dags_and_orchestration():
    """The check takes most of an hour, longer than CI: it is rerun by hand on every change to
    what it exercises, and its output committed. This fails when that output is stale."""
    committed = Path(__file__).resolve().parents[1] / "benchmarks/results/deployment/inputs.sha256"
    assert committed.read_text().strip() == inputs_digest(), (
        f"{', '.join(WATCHED)} changed since benchmarks/results/deployment/ was made: "
        "rerun sudo scripts/check_deployment.sh and commit its output"
    )
