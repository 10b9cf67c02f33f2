"""Data-parallel training (freshen/training/distributed.py) on tiny data, CPU, Gloo: two ranks
of half the batch train as one process does, dropout on (each micro-batch's masks come from its
own seeded stream); a rank that dies fails the whole run and leaves no
model; `freshen train --nproc 2` writes, logs and counts once."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from freshen.training.distributed import World
from tiny import make_beir, make_tiny_bert

HERE = Path(__file__).parent
STEPS = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_ranks(folder: Path, size: int) -> list[dict]:
    """`size` ranks of tests/dist_worker.py on `folder`'s setup; each rank's output."""
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": str(size)}
    procs = [
        subprocess.Popen(
            [sys.executable, str(HERE / "dist_worker.py"), str(folder)],
            env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(size)
    ]
    errors = [p.communicate(timeout=600)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errors
    return [torch.load(folder / f"rank{r}.pt", weights_only=True) for r in range(size)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same training, one process x batch 16 and two ranks x batch 8, dropout 0.1 and
    `train.micro_batch` at its default: each rank's output."""
    from freshen.cache import write_cache
    from freshen.data.beir import load_beir
    from freshen.encoding import encode_into
    from freshen.modeling.encoder import Encoder

    root = tmp_path_factory.mktemp("dist")
    beir = make_beir(root / "beir", n_docs=60, n_train=52, n_test=8)
    model = {
        "name_or_path": str(make_tiny_bert(root / "bert", dropout=0.1)),
        "query_max_len": 16,
        "passage_max_len": 32,
    }
    ds = load_beir(beir)
    ids = ds.doc_ids()
    enc = Encoder.from_params(model)
    write_cache(
        root / "cache", ids, enc.dim, lambda a: encode_into(enc, ds.doc_texts(ids), "passage", a, precision="fp32"), {}
    )
    train_q = sorted(ds.positives("train"))
    dev = train_q[:4]
    setup = {
        "beir": str(beir),
        "model": model,
        "cache": str(root / "cache"),
        "dev": dev,
        "clusters": {q: i % 3 for i, q in enumerate(q for q in train_q if q not in dev)},  # 16 queries each
        "seed": 5,
        "train": {
            "steps": STEPS,
            "batch_size": 16,
            "lr": 1e-3,
            "precision": "fp32",
            "passage_max_len": 32,
            "eval_every": 2,
            "keep_best": False,
            "probe_passages": 8,
            "overlap_passages": 20,
            "overlap_k": 5,
            "pilot": {"candidates": []},
            "negatives": {"k": 2},
            "corrector": {"hidden": 32, "warmup_steps": 1},  # samples through the corrector from step 2
        },
    }
    out = {}
    for size in (1, 2):
        folder = root / f"world{size}"
        folder.mkdir()
        (folder / "setup.json").write_text(json.dumps(setup))
        out[size] = _run_ranks(folder, size)
    out["pretrained"] = {k: v.detach().clone() for k, v in enc.state_dict().items()}
    return out


def test_two_ranks_take_the_same_first_step_and_negatives_as_one_process(runs):
    one, (r0, r1) = runs[1][0], runs[2]
    assert r0["loss"][0] == pytest.approx(one["loss"][0], abs=1e-5)
    assert len(one["negatives"]) == STEPS
    for step in range(STEPS):  # every rank picks the global batch's negatives, as one process does
        assert torch.equal(r0["negatives"][step], one["negatives"][step])
        assert torch.equal(r1["negatives"][step], one["negatives"][step])
    # counters count the global batch: every rank holds what one process counted
    assert r0["counters"] == r1["counters"] == one["counters"]
    assert one["counters"]["train_passage_passes"] == STEPS * 16 * (1 + 2)


def test_two_ranks_end_with_the_weights_of_one_process(runs):
    one, (r0, r1) = runs[1][0], runs[2]
    for name, w in one["encoder"].items():
        assert torch.allclose(r0["encoder"][name], w, atol=1e-4), name
        assert torch.equal(r0["encoder"][name], r1["encoder"][name]), name  # the same update on every rank
    start = runs["pretrained"]
    moved = max(float((one["encoder"][n] - w).abs().max()) for n, w in start.items())
    apart = max(float((r0["encoder"][n] - w).abs().max()) for n, w in one["encoder"].items())
    assert moved > 100 * max(apart, 1e-7)  # training moved the weights far more than the ranks differ
    for name, w in one["corrector"].items():
        assert torch.allclose(r0["corrector"][name], w, atol=1e-4), name
        assert torch.equal(r0["corrector"][name], r1["corrector"][name]), name
    assert r0["dev"] == pytest.approx(one["dev"], abs=1e-4)


def test_world_shares_cover_the_items_once_in_rank_order():
    for n in (0, 1, 7, 16):
        for size in (1, 2, 3):
            bounds = [World(r, size).bounds(n) for r in range(size)]
            assert bounds[0][0] == 0 and bounds[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
            assert max(b - a for a, b in bounds) - min(b - a for a, b in bounds) <= 1


def _freshen(root: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return subprocess.run(
        [sys.executable, "-m", "freshen", *args, "--root", str(root)],
        env={**os.environ, "PATH": path, **(env or {})},
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.fixture()
def trainable(tmp_path, tiny_params, mlflow_uri):
    """A tiny project prepared, clustered and embedded: ready for `freshen train`."""
    import yaml
    from freshen.params import validate_params
    from freshen.steps import cluster_queries, embed_cache, prepare

    root = tmp_path / "proj"
    root.mkdir()
    tiny_params["train"]["micro_batch"] = 2  # a pass a rank with --nproc 2, two passes in one process: the same model
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_params, sort_keys=False))
    params = validate_params(tiny_params)
    for step in (prepare, cluster_queries, embed_cache):
        step.run(params, root)
    return root, params


def _train_runs(uri: str) -> list[str]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("freshen")
    return sorted(r.info.status for r in client.search_runs([exp.experiment_id]) if r.info.run_name == "train")


@pytest.mark.slow
def test_freshen_train_nproc_2_writes_logs_and_counts_once(trainable, mlflow_uri):
    root, params = trainable
    two = _freshen(root, "train", "--nproc", "2")
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stderr == ""  # Airflow files every stderr line as an error: torchrun's banner included
    model = root / params.train.out_dir
    assert sorted(p.name for p in model.iterdir()) == ["corrector", "encoder", "train_state.json"]
    assert _train_runs(mlflow_uri) == ["FINISHED"]  # rank 0 alone tracks
    metrics_two = json.loads((root / params.train.metrics).read_text())
    one = _freshen(root, "train")
    assert one.returncode == 0, one.stderr[-3000:]
    metrics_one = json.loads((root / params.train.metrics).read_text())
    assert two.stdout.count("train: 100%") == one.stdout.count("train: 100%") > 0  # rank 0's bars alone
    for key in ("train_passage_passes", "query_passes", "probe_passes", "steps_run", "pilot_choice", "pilot_passes"):
        assert metrics_two[key] == metrics_one[key], key  # the global batch, counted once
    assert metrics_two["train_passage_passes"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("dying", ["0", "1"])  # rank 0 tracks: killed, it cannot end its own MLflow run
def test_a_rank_that_dies_fails_the_run_and_leaves_no_model(trainable, mlflow_uri, tmp_path, dying):
    root, params = trainable
    hook = tmp_path / "crash"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import os\n"
        f"if os.environ.get('RANK') == '{dying}':\n"
        "    from freshen.training import loop\n"
        "    step = loop.Trainer.step\n"
        "    def dying(self, n):\n"
        "        if n == 2:\n"
        "            os._exit(9)  # no cleanup at all, as a killed or crashed process\n"
        "        return step(self, n)\n"
        "    loop.Trainer.step = dying\n"
    )
    pythonpath = os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")])
    res = _freshen(root, "train", "--nproc", "2", "--set", "train.pilot.candidates=[]", env={"PYTHONPATH": pythonpath})
    assert res.returncode != 0
    assert not (root / params.train.out_dir).exists()
    metrics = root / params.train.metrics
    if dying == "0":  # killed, rank 0 cannot put the previous file back: its last evaluation's figures stay
        assert json.loads(metrics.read_text())["steps_run"] < params.train.steps
    else:  # rank 0, stopped, put the previous run's file back: none
        assert not metrics.exists()
    leftovers = sorted(p.name for p in (root / "artifacts").iterdir())
    if dying == "0":  # a killed holder leaves its lock file, which the kernel has let go (locks.py)
        with open(root / "artifacts" / ".model.lock") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        leftovers.remove(".model.lock")
    assert leftovers == ["cache", "clusters"], leftovers  # no temporary model folder either
    assert _train_runs(mlflow_uri) in (["FAILED"], ["KILLED"])


def test_one_rule_says_what_n_training_processes_need():
    from freshen.errors import FreshenError
    from freshen.params import TrainParams
    from freshen.training.launch import check_nproc

    check_nproc(TrainParams(batch_size=8), 2, teacher=False)  # 4 queries each
    check_nproc(TrainParams(batch_size=7), 1, teacher=True)  # one process: any batch, a teacher
    with pytest.raises(FreshenError, match="train.batch_size: 8 is not divisible by the 3 training processes"):
        check_nproc(TrainParams(batch_size=8), 3, teacher=False)
    check_nproc(TrainParams(batch_size=8, micro_batch=2), 2, teacher=False)  # 2 passes a rank
    check_nproc(TrainParams(batch_size=8, micro_batch=None), 2, teacher=False)  # a pass a rank
    check_nproc(TrainParams(batch_size=6, micro_batch=4), 1, teacher=False)  # one process: passes of 4, then 2
    with pytest.raises(FreshenError, match=r"train.micro_batch: 2 training processes x 3 queries .* divisor of 4"):
        check_nproc(TrainParams(batch_size=8, micro_batch=3), 2, teacher=False)
    with pytest.raises(FreshenError, match="train.teacher.scores: .* one process only"):
        check_nproc(TrainParams(batch_size=8), 2, teacher=True)
    with pytest.raises(FreshenError, match="at least 1"):
        check_nproc(TrainParams(batch_size=8), 0, teacher=False)


def test_nproc_is_refused_before_any_work_where_it_cannot_run(trainable):
    root, params = trainable
    uneven = _freshen(root, "train", "--nproc", "3")  # tiny batch_size 4
    assert uneven.returncode == 2
    assert "train.batch_size: 4 is not divisible by the 3 training processes" in uneven.stderr
    none = _freshen(root, "train", "--nproc", "0")
    assert none.returncode == 2 and "at least 1" in none.stderr
    other = _freshen(root, "prepare", "--nproc", "2")
    assert other.returncode == 2 and "only `freshen train`" in other.stderr
    assert not (root / params.train.out_dir).exists()
