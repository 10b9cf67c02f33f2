"""End to end on tiny data: every step through the CLI, then `dvc repro` in a fresh git+DVC
repo; checks the artifacts, the MLflow runs, the registry aliases and the served model."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
import yaml
from freshen.params import validate_params
from freshen.steps import STEP_NAMES
from mlflow.tracking import MlflowClient

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _env():
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def sh(root, *cmd, ok=True):
    res = subprocess.run(list(cmd), cwd=root, env=_env(), capture_output=True, text=True)
    if ok and res.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return res


def freshen(root, *args, ok=True):
    """One `freshen` call; a successful one leaves stderr empty (Airflow files each of its lines as
    an error): logs, warnings and progress bars, the libraries' included, go to stdout."""
    res = sh(root, sys.executable, "-m", "freshen", *args, ok=ok)
    if ok:
        assert res.stderr == "", f"freshen {' '.join(args)} wrote to stderr:\n{res.stderr[-3000:]}"
    return res


@pytest.fixture()
def project(tmp_path, tiny_params):
    root = tmp_path / "proj"
    root.mkdir()
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    shutil.copytree(
        REPO / "components", root / "components", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_params, sort_keys=False))
    return root


def test_cli_runs_every_step_tracks_and_promotes(project, mlflow_uri, tiny_params, monkeypatch):
    for step in STEP_NAMES:
        out = freshen(project, step.replace("_", "-")).stdout
        # the registered model is logged as code, not cloudpickled (MLflow warns on every pickle)
        assert "CloudPickle" not in out and "Traceback" not in out

    # artifacts
    dev = (project / "data/prepared/qrels/dev.tsv").read_text().splitlines()
    assert len(dev) - 1 == 3  # ceil(0.1 * 30) carved from train
    assignments = (project / "artifacts/clusters/assignments.tsv").read_text().splitlines()[1:]
    stats = json.loads((project / "metrics/clusters.json").read_text())
    assert len(assignments) == 27 and stats["k"] == 4  # round(27 / queries_per_cluster=6)
    assert {int(a.split("\t")[1]) for a in assignments} <= set(range(4))
    stale = json.loads((project / "artifacts/cache/initial/manifest.json").read_text())
    fresh = json.loads((project / "artifacts/cache/reembedded/manifest.json").read_text())
    assert stale["count"] == fresh["count"] == 60 and stale["dim"] == 32
    assert stale["model_digest"] != fresh["model_digest"] and fresh["source"] == "reembed"
    assert (project / "artifacts/model/corrector/corrector.safetensors").is_file()
    train = json.loads((project / "metrics/train.json").read_text())
    assert train["train_passage_passes"] == 6 * 4 * 3 and train["reembed_passes"] == 0
    # the last evaluation's figures; measurement passes: 3 evaluations (steps 0, 3, 6) x (8 probes + 30 overlap passages)
    assert train["evaluation"]["step"] == 6 and train["probe_passes"] == 3 * (8 + 30)
    assert 0.0 <= train["zero_shot_dev_ndcg_at_10"] <= 1.0 and isinstance(train["beats_zero_shot"], bool)
    # the pilot: params.yaml's two candidates, 2 steps each (tiny_params), counted apart from training
    assert train["pilot_choice"] in (0, 1) and train["pilot_passes"] == 2 * 2 * 4 * 3
    assert [c["overrides"] for c in train["pilot_candidates"]] == tiny_params["train"]["pilot"]["candidates"]
    assert all(
        0.0 <= train["evaluation"][k] <= 1.0
        for k in ("dev_ndcg_at_10", "overlap_stale_fresh", "overlap_corrected_fresh", "probe_cos_stale_fresh")
    )
    assert json.loads((project / "artifacts/model/train_state.json").read_text())["corrector_saved"] is True
    curve = (project / "plots/train_curve.csv").read_text().splitlines()
    assert "overlap_corrected_fresh" in curve[0] and "wall_seconds" in curve[0] and len(curve) == 1 + 1 + 6
    assert curve[1].startswith("0,")  # step 0: the pre-trained encoder's validation
    ev = json.loads((project / "metrics/eval.json").read_text())
    assert ev["dev"]["queries"] == 3 and ev["test"]["queries"] == 12  # what a saturation warning names
    for split in ("dev", "test"):
        for system in ("zero_shot", "trained", "trained_stale_cache", "trained_corrected_cache", "bm25"):
            assert 0.0 <= ev[split][system]["ndcg_at_10"] <= 1.0
            assert 0.0 <= ev[split][system]["recall_at_100"] <= 1.0
    assert ev["test"]["bm25"]["ndcg_at_10"] > 0.5  # the synthetic queries share words with their doc
    # eval.json names what it measured: the model there now and both caches
    from freshen.cache import load_cache
    from freshen.integrity import checkpoint_digest

    assert ev["measured"] == {
        "model_digest": checkpoint_digest(project / "artifacts/model"),
        "stale_cache": load_cache(project / "artifacts/cache/initial").digest(),
        "fresh_cache": load_cache(project / tiny_params["reembed"]["out_dir"]).digest(),
    }
    run_lines = (project / "artifacts/eval/test.trained.trec").read_text().splitlines()
    assert len(run_lines) == 12 * 60 and run_lines[0].split()[1] == "Q0"
    assert "nDCG@10" in (project / "plots/eval.csv").read_text().replace("ndcg_at_10", "nDCG@10")

    # MLflow: one finished parent run, one child per step
    mlflow.set_tracking_uri(mlflow_uri)
    client = MlflowClient()
    exp = client.get_experiment_by_name("freshen")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("freshen.kind") == "pipeline"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert sorted(r.info.run_name for r in children) == sorted(STEP_NAMES)
    train_run = next(r for r in children if r.info.run_name == "train")
    history = lambda key: sorted(m.step for m in client.get_metric_history(train_run.info.run_id, key))  # noqa: E731
    assert history("loss") == [2, 3, 4, 6]  # every log_every=2 steps, and at each validation (eval_every=3)
    assert history("dev_ndcg_at_10") == [0, 3, 6]  # step 0: the pre-trained encoder
    for key in ("overlap_stale_fresh", "overlap_corrected_fresh", "probe_cos_corrected_fresh"):
        assert history(key) == [0, 3, 6], key  # logged at every evaluation
    assert {3, 6} <= set(history("wall_seconds")) and {3, 6} <= set(history("reembed_passes"))
    assert train_run.data.params["train.negatives.strategy"] == "corrected"
    assert train_run.data.tags["git_commit"] == "unknown"  # the project here is not a git repository

    # registry: first model is champion and challenger
    name = tiny_params["promote"]["registered_model"]
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
    assert str(client.get_model_version_by_alias(name, "challenger").version) == "1"

    # the champion embeds text in a fresh Python process, exactly as the checkpoint does
    code = (
        f"import mlflow, json; m = mlflow.pyfunc.load_model('models:/{name}@champion'); "
        "print(json.dumps(m.predict(['cell protein doc3', 'heart']).tolist()))"
    )
    out = sh(project, sys.executable, "-c", code).stdout.strip().splitlines()[-1]
    served = np.array(json.loads(out))
    from freshen.encoding import encode
    from freshen.modeling.encoder import Encoder

    local = encode(
        Encoder.load(project / "artifacts/model/encoder"), ["cell protein doc3", "heart"], "query", precision="fp32"
    )
    assert served.shape == (2, 32)
    np.testing.assert_allclose(served, local, atol=1e-5)

    # promoting the same model again registers nothing new
    freshen(project, "promote")
    assert len(client.search_model_versions(f"name='{name}'")) == 1

    # a deliberately bad run (lr 1.0): keep_best falls back to step 0, the pre-trained encoder, and
    # promote refuses it, naming the zero-shot comparison; the champion stays v1
    bad = ["--set", "train.lr=1.0", "--set", "train.keep_best=true"]
    out = freshen(project, *bad, "train").stdout
    assert "did not beat the pre-trained encoder on dev" in out
    assert json.loads((project / "metrics/train.json").read_text())["best_step"] == 0
    for step in ("reembed", "evaluate"):
        freshen(project, *bad, step)
    out = freshen(project, *bad, "promote").stdout
    decision = json.loads((project / "metrics/promotion.json").read_text())
    assert decision["beats_zero_shot"] is False and "zero-shot" in decision["reason"] and "NOT promoted" in out
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
    refused = client.get_model_version_by_alias(name, "challenger")
    assert str(refused.version) == "2" and refused.tags["freshen.promotion.decision"] == "challenger"
    assert "zero-shot" in refused.tags["freshen.promotion.reason"]

    # is_registered (what run_pipeline.sh asks after dvc repro) looks in the registry tracked to
    from freshen.steps.promote import is_registered

    params = validate_params(yaml.safe_load((project / "params.yaml").read_text()))
    assert is_registered(params, project)  # the refused v2 is registered too: the last trained model
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'elsewhere.db'}")  # another registry
    assert not is_registered(params, project)


def test_reembed_can_write_the_corrected_cache_instead(project, mlflow_uri):
    """reembed.corrector: h(stale cache) becomes the new cache, no encoder pass; evaluate then
    measures no drift or overlap against it (there is no fresh cache)."""
    for step in ("prepare", "cluster-queries", "embed-cache"):
        freshen(project, step)
    # a corrector checkpoint of another dimension than the cache (32) stops train before step 1
    from freshen.modeling.corrector import Corrector

    Corrector(16).save(project / "h16")
    res = freshen(project, "train", "--set", "train.corrector.init=h16", ok=False)
    assert res.returncode == 2 and "corrector dimension 16 does not match the cache dimension 32" in res.stderr
    assert (
        not (project / "artifacts/model").exists() and "step/s" not in res.stdout + res.stderr
    )  # no training step ran
    # a corrector of the right dimension, named relative to the project, from another working directory
    Corrector(32).save(project / "h32")
    args = ["train", "--root", str(project), "--set", "train.corrector.init=h32", "--set", "train.steps=2"]
    assert sh(project.parent, sys.executable, "-m", "freshen", *args).returncode == 0
    freshen(project, "train")
    freshen(project, "reembed", "--set", "reembed.corrector=true")
    from freshen.cache import load_cache

    stale, out = load_cache(project / "artifacts/cache/initial"), load_cache(project / "artifacts/cache/reembedded")
    h = Corrector.load(project / "artifacts/model/corrector")
    assert out.manifest["corrected"] is True and out.manifest["stale_cache"] == "artifacts/cache/initial"
    assert out.ids == stale.ids
    expected = np.empty(stale.embeddings.shape, dtype=np.float32)
    h.correct_into(stale.embeddings, expected, chunk=7)
    np.testing.assert_allclose(np.asarray(out.embeddings, dtype=np.float32), expected, atol=2e-3)
    assert not np.allclose(expected, np.asarray(stale.embeddings, dtype=np.float32), atol=2e-3)  # h trained
    freshen(project, "evaluate")
    ev = json.loads((project / "metrics/eval.json").read_text())
    assert ev["drift"] == {} and "top100_overlap_stale_vs_fresh" not in ev["test"]
    assert 0.0 <= ev["test"]["trained"]["ndcg_at_10"] <= 1.0
    res = freshen(
        project, "reembed", "--set", "reembed.corrector=true", "--set", "train.out_dir=artifacts/none", ok=False
    )
    assert res.returncode == 2 and "reembed.corrector" in res.stderr


def test_bad_input_fails_clearly_and_writes_nothing(project, mlflow_uri, tiny_params):
    corpus = Path(tiny_params["data"]["local_dir"]) / "corpus.jsonl"
    lines = corpus.read_text().splitlines()
    lines[4] = '{"_id": "d4", "title": "x"}'
    corpus.write_text("\n".join(lines) + "\n")
    res = freshen(project, "prepare", ok=False)
    assert res.returncode == 2
    assert "corpus.jsonl:5: field 'text': missing" in res.stderr
    assert not (project / "data").exists()
    res = freshen(project, "train", "--set", "train.negatives.strategy=ance", ok=False)
    assert res.returncode == 2 and "'ance'" in res.stderr and not (project / "artifacts").exists()


def test_dvc_repro_is_reproducible_and_versioned(project, mlflow_uri, tmp_path):
    sh(project, "git", "init", "-q")
    sh(project, "git", "config", "user.email", "t@example.com")
    sh(project, "git", "config", "user.name", "t")
    sh(project, sys.executable, "-m", "dvc", "init", "-q")
    remote = tmp_path / "remote"
    sh(project, sys.executable, "-m", "dvc", "remote", "add", "-d", "local", str(remote))
    sh(project, "git", "add", "-A")
    sh(project, "git", "commit", "-qm", "init")

    first = sh(project, sys.executable, "-m", "dvc", "repro")
    for stage in STEP_NAMES:
        assert f"Running stage '{stage}'" in first.stdout
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    assert set(lock["stages"]) == set(STEP_NAMES)
    second = sh(project, sys.executable, "-m", "dvc", "repro")
    assert "Running stage" not in second.stdout and "up to date" in second.stdout
    # training again with the same params writes the same model folder, byte for byte
    sh(project, sys.executable, "-m", "dvc", "repro", "--force", "--single-item", "train")
    again = yaml.safe_load((project / "dvc.lock").read_text())
    model_out = [o for o in lock["stages"]["train"]["outs"] if o["path"] == "artifacts/model"]
    assert model_out and model_out == [o for o in again["stages"]["train"]["outs"] if o["path"] == "artifacts/model"]

    # an experiment with one param changed reruns train and what follows, not what precedes
    exp = sh(project, sys.executable, "-m", "dvc", "exp", "run", "-S", "train.steps=2")
    assert "Running stage 'train'" in exp.stdout and "Running stage 'embed_cache'" not in exp.stdout
    assert json.loads((project / "metrics/train.json").read_text())["train_passage_passes"] == 2 * 4 * 3

    # push to the local remote, then a fresh clone pulls every artifact back
    sh(project, sys.executable, "-m", "dvc", "push")
    sh(project, "git", "add", "-A")
    sh(project, "git", "commit", "-qm", "exp")
    clone = tmp_path / "clone"
    sh(tmp_path, "git", "clone", "-q", str(project), str(clone))
    sh(clone, sys.executable, "-m", "dvc", "pull")
    assert (clone / "artifacts/cache/initial/embeddings.npy").is_file()
    assert (clone / "artifacts/model/encoder/model.safetensors").is_file()
    status = sh(clone, sys.executable, "-m", "dvc", "status")
    assert "up to date" in status.stdout


def test_ablation_benchmark_smoke(project, mlflow_uri):
    """The ablation command runs its arms on tiny data, writes the table, plot and per-arm JSON,
    and resumes (an arm with results is not run again)."""
    shutil.copytree(REPO / "benchmarks", project / "benchmarks", ignore=shutil.ignore_patterns("results"))
    sh(project, "git", "init", "-q")
    sh(project, sys.executable, "-m", "dvc", "init", "-q")
    out = project / "benchmarks/results/ablation"
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.ablation",
        "--arms",
        "zero_shot,stale,corrected,refresh,best_random",
        "--steps",
        "4",
        "--refreshes",
        "1",
    ]
    sh(project, *cmd)
    arms = {a: json.loads((out / f"{a}.json").read_text()) for a in ("zero_shot", "stale", "corrected", "refresh")}
    best = max(("stale", "corrected", "refresh"), key=lambda a: arms[a]["test"]["ndcg_at_10"])
    rand = json.loads((out / f"{best}_random.json").read_text())  # TAS versus random for the best strategy
    assert rand["batching"] == "random" and rand["strategy"] == best and arms[best]["batching"] == "tas"
    assert len(list(out.glob("*_random.json"))) == 1
    assert arms["zero_shot"]["train_passage_passes"] == 0
    assert arms["corrected"]["train_passage_passes"] == arms["stale"]["train_passage_passes"] == 4 * 4 * 3
    assert arms["corrected"]["reembed_passes"] == 0
    assert arms["refresh"]["refreshes"] == 1 and arms["refresh"]["reembed_passes"] == 60
    # validated at steps 0 (the pre-trained encoder), 3 and 4 (eval_every 3 of 4 steps)
    assert all(arms[a]["best_step"] in (0, 3, 4) for a in ("stale", "corrected", "refresh"))
    assert not any(arms[a]["keep_best"] for a in ("stale", "corrected", "refresh"))  # every arm: its final checkpoint
    table = (out / "ablation.md").read_text()
    assert all(f"| {a} |" in table for a in arms) and (out / "ablation.png").is_file()
    before = (out / "corrected.json").stat().st_mtime
    again = sh(project, *cmd[:4], "corrected", "--steps", "4")
    assert (out / "corrected.json").stat().st_mtime == before and "| corrected |" in again.stdout
    runs = MlflowClient(mlflow_uri).search_runs(
        [MlflowClient(mlflow_uri).get_experiment_by_name("freshen-ablation").experiment_id]
    )
    assert sorted(r.info.run_name for r in runs) == sorted(
        ["corrected", "refresh", "stale", "zero_shot", f"{best}_random"]
    )


def test_seed_benchmark_runs_each_seed_and_pairs_them(project, mlflow_uri):
    """benchmarks.seeds runs the ablation once per seed, each with its own seed, leaves
    params.yaml as it was, and summarises the seeds side by side."""
    shutil.copytree(REPO / "benchmarks", project / "benchmarks", ignore=shutil.ignore_patterns("results"))
    sh(project, "git", "init", "-q")
    sh(project, sys.executable, "-m", "dvc", "init", "-q")
    params_before = (project / "params.yaml").read_text()
    sh(
        project,
        sys.executable,
        "-m",
        "benchmarks.seeds",
        "--seeds",
        "5,6",
        "--out-pattern",
        "seeds/s{seed}",
        "--arms",
        "corrected,refresh",
        "--steps",
        "2",
        "--refreshes",
        "1",
    )
    for seed in (5, 6):
        arms = {a: json.loads((project / f"seeds/s{seed}/{a}.json").read_text()) for a in ("corrected", "refresh")}
        assert {r["seed"] for r in arms.values()} == {seed}
        assert arms["refresh"]["refreshes"] == 1 and arms["corrected"]["reembed_passes"] == 0
    assert (project / "params.yaml").read_text() == params_before
    assert not list(project.glob(".seed*"))  # the temporary params copies are gone
    summary = (project / "seeds/seeds.md").read_text()
    assert "| 5 |" in summary and "| 6 |" in summary and "met on" in summary


# `freshen` with every embedding chunk held until a file `go` appears (after writing the chunk,
# so the run is mid-way: its lock held, its `.partial` folder half full); `paused` says it got there
PAUSED_FRESHEN = """
import sys
import time
import time
from pathlib import Path

from freshen import cli, embed_corpus

signals = Path(sys.argv[1])
real = embed_corpus.encode_chunks


def paused(encoder, texts, kind, sink, on_chunk=None, **kw):
    def checkpoint(rows_done):
        on_chunk(rows_done)
        (signals / "paused").touch()
        while not (signals / "go").exists():
            time.sleep(0.05)
    return real(encoder, texts, kind, sink, on_chunk=checkpoint, **kw)


embed_corpus.encode_chunks = paused
raise SystemExit(cli.main(sys.argv[2:]))
"""


def start_paused(root, work, *args):
    """Start `freshen *args` in its own process; return it once its first chunk is written."""
    script, signals = work / "paused_freshen.py", work / "signals"
    script.write_text(PAUSED_FRESHEN)
    signals.mkdir()
    log = open(work / "paused.log", "w")
    proc = subprocess.Popen(
        [sys.executable, str(script), str(signals), *args], cwd=root, env=_env(), stdout=log, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 300
    while not (signals / "paused").exists():
        assert proc.poll() is None, (work / "paused.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "the paused run never wrote its first chunk"
        time.sleep(0.1)
    return proc, signals


def step_statuses(uri, step):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("freshen")
    return sorted(r.info.status for r in client.search_runs([exp.experiment_id]) if r.info.run_name == step)


FORCE = ("--set", "encode.reuse=false")


@pytest.fixture()
def embedded(project):
    """The project prepared and embedded once (in this process), 10 rows a chunk: a good cache
    that a later embed-cache replaces, and whose bytes a refused run must leave alone. The later
    runs set encode.reuse=false (FORCE): with the same model and corpus they would reuse it."""
    from freshen.steps import embed_cache, prepare

    params = yaml.safe_load((project / "params.yaml").read_text())
    params["encode"]["chunk_rows"] = 10
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    prepare.run(validate_params(params), project)
    embed_cache.run(validate_params(params), project)
    return project, params


def files(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_a_second_embed_cache_is_refused_at_once_and_the_first_finishes_intact(embedded, mlflow_uri, tmp_path):
    from freshen.cache import load_cache

    project, _ = embedded
    out = project / "artifacts/cache/initial"
    previous = files(out)
    before = np.array(load_cache(out).embeddings, dtype=np.float32)
    first, signals = start_paused(project, tmp_path, "embed-cache", *FORCE)
    try:
        second = freshen(project, "embed-cache", *FORCE, ok=False)
        assert second.returncode == 2, second.stderr[-3000:]
        assert f"{out} is being written by another run (pid {first.pid}, since " in second.stderr
        assert "Traceback" not in second.stderr
        assert files(out) == previous  # the good cache, untouched while the first runs
        progress = json.loads((project / "artifacts/cache/.initial.partial/progress.json").read_text())
        assert progress["rows_done"] == 10  # the first run's work in progress: not deleted, not taken over
        (signals / "go").touch()
        assert first.wait(timeout=300) == 0, (tmp_path / "paused.log").read_text()[-3000:]
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert sorted(files(out)) == ["doc_hashes.npy", "embeddings.npy", "ids.json", "manifest.json", "row_origin.npy"]
    cache = load_cache(out)
    assert cache.ids == json.loads(previous["ids.json"]) and len(cache) == 60
    np.testing.assert_allclose(np.asarray(cache.embeddings, dtype=np.float32), before, atol=1e-3)  # same model
    assert sorted(p.name for p in out.parent.iterdir()) == ["initial"]  # no .partial, lock or temporary left
    assert step_statuses(mlflow_uri, "embed_cache") == ["FAILED", "FINISHED"]


def test_sigterm_ends_the_step_run_failed_and_keeps_the_resume_folder(embedded, mlflow_uri, tmp_path):
    import signal

    from freshen.steps import embed_cache

    project, params = embedded
    out = project / "artifacts/cache/initial"
    previous = files(out)
    first, _ = start_paused(project, tmp_path, "embed-cache", *FORCE)
    first.send_signal(signal.SIGTERM)  # docker stop, a deleted pod, Airflow failing the task
    try:
        assert first.wait(timeout=120) == 128 + signal.SIGTERM
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert "stopped by SIGTERM" in (tmp_path / "paused.log").read_text()
    assert step_statuses(mlflow_uri, "embed_cache") == ["FAILED"]  # not RUNNING for ever
    assert files(out) == previous
    partial = project / "artifacts/cache/.initial.partial"
    assert json.loads((partial / "progress.json").read_text())["rows_done"] == 10
    assert sorted(p.name for p in out.parent.iterdir()) == [".initial.partial", "initial"]  # lock released
    forced = validate_params({**params, "encode": {**params["encode"], "reuse": False}})
    assert embed_cache.run(forced, project)["resumed_from_row"] == 10  # the next forced run resumes it


def test_step_runs_a_dead_process_left_running_are_marked_killed(tmp_path, mlflow_uri, tiny_params):
    """A SIGKILL (the OOM killer, kill -9) leaves no chance to end a run: the next step of the
    project on this host marks KILLED the runs whose process is gone, and only those."""
    import socket

    from freshen import tracking

    tracking.setup(tmp_path, "freshen")
    client = MlflowClient(mlflow_uri)
    exp = client.get_experiment_by_name("freshen").experiment_id
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        host = socket.gethostname()
        left = {
            name: client.create_run(
                exp, run_name="train", tags={"freshen.pid": str(pid), "freshen.host": h}
            ).info.run_id
            for name, pid, h in (
                ("dead", dead.pid, host),
                ("live", live.pid, host),
                ("elsewhere", dead.pid, "another-host"),
                ("same pid before", os.getpid(), host),
            )
        }
        untagged = client.create_run(exp, run_name="pipeline").info.run_id  # a parent run: no pid of its own
        with tracking.step_run("evaluate", validate_params(tiny_params), tmp_path, None, ["seed"]) as (run, _):
            this = run.info.run_id
    finally:
        live.kill()
        live.wait()
    status = {name: client.get_run(run_id).info.status for name, run_id in left.items()}
    assert status == {"dead": "KILLED", "live": "RUNNING", "elsewhere": "RUNNING", "same pid before": "KILLED"}
    assert client.get_run(untagged).info.status == "RUNNING"
    this_run = client.get_run(this)
    assert this_run.info.status == "FINISHED" and this_run.data.tags["freshen.pid"] == str(os.getpid())
    assert this_run.data.tags["freshen.host"] == host


def test_a_fractional_grade_stops_prepare_with_the_file_line_and_field(project, mlflow_uri, tiny_params):
    qrels = Path(tiny_params["data"]["local_dir"]) / "qrels" / "test.tsv"
    qrels.write_text(qrels.read_text().replace("q31\td31\t1", "q31\td31\t0.7"))
    res = freshen(project, "prepare", ok=False)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "qrels/test.tsv:3: field 'score': must be an integer grade (0, 1, 2, ...), got '0.7'" in res.stderr
    assert not (project / "data").exists()


def _fail_loading_params(monkeypatch, exc):
    def load_params(*args, **kwargs):
        raise exc

    monkeypatch.setattr("freshen.cli.load_params", load_params)


def test_an_unexpected_error_is_one_line_with_a_hint_and_exit_1(tmp_path, monkeypatch, capsys):
    from freshen.cli import main

    _fail_loading_params(monkeypatch, RuntimeError("boom\nmore detail"))
    assert main(["prepare", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "freshen prepare: error: RuntimeError: boom (unexpected; rerun with -v for the traceback)"
    ]
    assert main(["prepare", "--root", str(tmp_path), "-v"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "more detail" in err
    assert err.splitlines()[-1] == "freshen prepare: error: RuntimeError: boom"


def test_a_freshen_error_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    from freshen.cli import main
    from freshen.errors import DataError

    _fail_loading_params(monkeypatch, DataError("qrels/test.tsv", "must be an integer grade", 3, "score"))
    assert main(["prepare", "--root", str(tmp_path)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "freshen prepare: error: qrels/test.tsv:3: field 'score': must be an integer grade"
    ]


def test_runs_are_tagged_with_the_project_s_commit(tmp_path):
    from freshen.tracking import git_commit

    assert git_commit(tmp_path) == "unknown"
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@e"]
    subprocess.run([*git[:3], "init", "-q"], check=True)
    (tmp_path / "params.yaml").write_text("seed: 1\n")
    subprocess.run([*git, "add", "params.yaml"], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert len(head) == 40 and git_commit(tmp_path) == head
