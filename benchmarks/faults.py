"""Fault injection against the real CLI: bad input, corrupted artifacts, kill -9 at several
points and concurrent runs, each on its own copy of a tiny project (synthetic BEIR data and a
random-weight BERT, made on the spot). Every case's outcome is classified and the table written
to `--out/report.md`.

    python -m benchmarks.faults                       # every case (about 20 minutes on 2 CPU cores)
    python -m benchmarks.faults --only kill,concurrent

Outcomes:
- `refused`: exit 2, one line naming the file (and line or field), every earlier output unchanged
- `recovered`: the fault was survived: a rerun resumed or finished the work, and the result is
  byte-identical to (or the same registry state as) an undisturbed run
- `warned`: the step ran, and said plainly what it left out
- `lost`: an earlier good output is gone or changed
- `wrong`: exit 0 with a wrong or invalid result (NaN, a subset, stale figures)
- `litter`: refused, but left something behind that was not there before (a new output,
  temporary, `.partial` or folder; a step's `.<output>.lock` aside)
- `traceback`: a Python traceback or an exit code other than 0/2

Goal: no `lost`, `wrong`, `litter` or `traceback` outcome."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from benchmarks.common import RESULTS, ROOT, command_line, machine, write_report
from tests.tiny import make_beir, make_tiny_bert, merged, tiny_params_for  # the tests' synthetic material

BAD = ("lost", "wrong", "litter", "traceback")
OUTPUTS = ("data", "artifacts", "metrics", "plots")


@dataclass
class Outcome:
    kind: str
    detail: str


# -- a tiny project -----------------------------------------------------------------------
def make_template(work: Path, n_docs: int) -> Path:
    """A project folder with prepared data, clusters and the initial cache."""
    source = make_beir(work / "beir", n_docs=n_docs, n_train=60, n_test=20, with_dev=True)
    model = make_tiny_bert(work / "tiny-bert")
    defaults = yaml.safe_load((ROOT / "params.yaml").read_text())
    # the tests' tiny settings, shorter still, at the default learning rate
    changes = {
        "encode": {"chunk_rows": 64},
        "train": {
            "steps": 4,
            "eval_every": 2,
            "lr": defaults["train"]["lr"],
            "pilot": {"steps": 1},
            "corrector": {"warmup_steps": 1},
        },
    }
    params = merged(tiny_params_for(ROOT / "params.yaml", model, source), changes)
    root = work / "template"
    root.mkdir()
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for step in ("prepare", "cluster-queries", "embed-cache"):
        res = freshen(root, step)
        if res.returncode:
            raise SystemExit(f"template: freshen {step} failed:\n{res.stderr[-3000:]}")
    return root


def env() -> dict:
    out = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    out.pop("FRESHEN_PARENT_RUN_ID", None)
    return out


def freshen(root: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "freshen", *args], cwd=root, env=env(), capture_output=True, text=True, timeout=timeout
    )


def start(root: Path, *args: str, log: Path | None = None) -> subprocess.Popen:
    """`freshen *args` in the background; with `log`, its output goes to that file (a run that
    talks a lot cannot then block on a full pipe nobody reads while the case waits for it)."""
    if log is not None:
        with open(log, "w") as fh:
            return subprocess.Popen(
                [sys.executable, "-m", "freshen", *args],
                cwd=root,
                env=env(),
                stdout=fh,
                stderr=subprocess.STDOUT,
                text=True,
            )
    return subprocess.Popen(
        [sys.executable, "-m", "freshen", *args],
        cwd=root,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def is_lock(p: Path) -> bool:
    """A step's lock file `.<output>.lock` (freshen.locks): it may stay behind by design."""
    return p.name.startswith(".") and p.name.endswith(".lock") and p.is_file()


def tree_digest(root: Path) -> dict[str, str]:
    """Every output file's sha256 and every output folder (as "dir"), dot-entries included
    (temporaries, `.partial` caches); locks and MLflow's own files (outside OUTPUTS) aside."""
    out = {}
    for top in OUTPUTS:
        for p in sorted((root / top).rglob("*")) if (root / top).exists() else ():
            if is_lock(p):
                continue
            if p.is_dir() and not p.is_symlink():
                out[str(p.relative_to(root))] = "dir"
            elif p.is_file():
                out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                out[str(p.relative_to(root))] = "other"
    return out


def judged(res: subprocess.CompletedProcess, before: dict, after: dict, names: str = "") -> Outcome:
    """Classify a run that should have been refused."""
    err = (res.stderr or "").strip()
    last = err.splitlines()[-1] if err else ""
    if res.returncode == 0:
        return Outcome("wrong", f"exit 0: {(res.stdout or '').strip().splitlines()[-1:] or ''}")
    if "Traceback" in err or res.returncode != 2:
        return Outcome("traceback", f"exit {res.returncode}: {last[:200]}")
    changed = sorted(k for k in before if before[k] != after.get(k))
    if changed:
        return Outcome("lost", f"refused, but changed {changed[:3]}")
    added = sorted(k for k in after if k not in before)
    if added:  # a refused run writes nothing: no new output, temporary, `.partial` or folder (locks aside)
        return Outcome("litter", f"refused, but left {added[:3]}{' ...' if len(added) > 3 else ''}: {last[:120]}")
    if names and names not in last:
        return Outcome("traceback", f"refused without naming {names!r}: {last[:200]}")
    return Outcome("refused", last[:220])


# -- the cases ---------------------------------------------------------------------------
def edit_source(root: Path, rel: str, edit) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    src = Path(params["data"]["local_dir"]).parent / f"src-{root.name}"
    if not src.exists():
        shutil.copytree(params["data"]["local_dir"], src)
        params["data"]["local_dir"] = str(src)
        (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    f = src / rel
    f.write_bytes(edit(f.read_bytes()))


def remove_source(root: Path, rel: str) -> None:
    edit_source(root, rel, lambda b: b)  # the project's own copy of the source, then without the file
    os.unlink(Path(yaml.safe_load((root / "params.yaml").read_text())["data"]["local_dir"]) / rel)


def line_edit(n: int, new: bytes):
    def edit(data: bytes) -> bytes:
        lines = data.split(b"\n")
        lines[n] = new
        return b"\n".join(lines)

    return edit


def refusal(step: str, setup, names: str = "", *extra: str):
    def case(root: Path) -> Outcome:
        setup(root)
        before = tree_digest(root)
        res = freshen(root, step, *extra)
        return judged(res, before, tree_digest(root), names)

    return case


def in_source(rel: str, edit):
    return lambda root: edit_source(root, rel, edit)


def in_project(rel: str, edit):
    def setup(root: Path) -> None:
        f = root / rel
        f.write_bytes(edit(f.read_bytes()))

    return setup


def nan_row(root: Path) -> None:
    arr = np.load(root / "artifacts/cache/initial/embeddings.npy", mmap_mode="r+")
    arr[5, 3] = np.nan
    arr.flush()


def prepare_bigger_corpus(root: Path) -> None:
    """A cache of the corpus before documents were added: prepare again with two more."""
    edit_source(
        root,
        "corpus.jsonl",
        lambda b: (
            b
            + b"".join(
                json.dumps({"_id": f"extra{i}", "title": "", "text": "an added document"}).encode() + b"\n"
                for i in range(2)
            )
        ),
    )
    res = freshen(root, "prepare")
    assert res.returncode == 0, res.stderr


def drop_cached_id(root: Path) -> None:
    """A cache whose ids name a document the corpus does not have (manifest without corpus digest)."""
    folder = root / "artifacts/cache/initial"
    ids = json.loads((folder / "ids.json").read_text())
    ids[0] = "not-in-corpus"
    (folder / "ids.json").write_text(json.dumps(ids))
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest.pop("corpus_sha256", None)
    manifest.pop("ids_sha256", None)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def trained(root: Path) -> None:
    for step in ("train", "reembed", "evaluate"):
        res = freshen(root, step)
        assert res.returncode == 0, f"{step}: {res.stderr[-2000:]}"


def retrained_not_evaluated(root: Path) -> None:
    trained(root)
    res = freshen(root, "train", "--set", "seed=99")
    assert res.returncode == 0, res.stderr[-2000:]


def case_nan_metric_never_written(root: Path) -> Outcome:
    """A diverging run (lr 1e8) of a trained project stops naming the step; the previous model,
    metrics/train.json (rewritten at every evaluation) included, stays as it was."""
    trained(root)
    before = tree_digest(root)
    res = freshen(
        root,
        "train",
        "--set",
        "train.lr=1e8",
        "--set",
        "train.warmup_ratio=0",
        "--set",
        "train.steps=6",
        "--set",
        "train.pilot.candidates=[{}]",
    )
    out = judged(res, before, tree_digest(root), "diverged")
    return out


def case_zero_test_queries(root: Path) -> Outcome:
    """A test query judged only 0: left out of evaluation, and said so."""
    edit_source(root, "qrels/test.tsv", lambda b: b.replace(b"\t1\n", b"\t0\n", 1))
    res = freshen(root, "prepare")
    if res.returncode:
        return Outcome("traceback", res.stderr.strip().splitlines()[-1][:200])
    trained(root)
    log = ""
    res = freshen(root, "evaluate")
    log = res.stdout + res.stderr
    if res.returncode:
        return Outcome("traceback", log.strip().splitlines()[-1][:200])
    if "no relevant judgement" in log:
        return Outcome("warned", next(line for line in log.splitlines() if "no relevant judgement" in line)[:220])
    return Outcome("wrong", "evaluated with the unjudged query, no warning")


def wait_for(cond, timeout: float = 300, poll: float = 0.05) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return True
        time.sleep(poll)
    return False


def rows_done(root: Path) -> int:
    f = root / "artifacts/cache/.initial.partial/progress.json"
    try:
        return int(json.loads(f.read_text())["rows_done"])
    except (OSError, ValueError, KeyError):
        return -1


def kill_embed_at(rows: int):
    """kill -9 embed-cache once `rows` rows are checkpointed; the rerun must resume and give the
    same bytes as the template's undisturbed cache."""

    def case(root: Path) -> Outcome:
        reference = (root / "artifacts/cache/initial/embeddings.npy").read_bytes()
        shutil.rmtree(root / "artifacts/cache/initial")
        proc = start(root, "embed-cache", log=root / "embed-cache.log")
        if not wait_for(lambda: rows_done(root) >= rows or proc.poll() is not None):
            proc.kill()
            return Outcome("traceback", "never reached the kill point")
        if proc.poll() is not None:
            return Outcome("traceback", f"finished before {rows} rows: make the corpus bigger")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        done = rows_done(root)
        res = freshen(root, "embed-cache")
        if res.returncode:
            return Outcome("traceback", res.stderr.strip().splitlines()[-1][:200])
        now = (root / "artifacts/cache/initial/embeddings.npy").read_bytes()
        resumed = json.loads((root / "artifacts/cache/initial/manifest.json").read_text())
        if now != reference:
            return Outcome("wrong", f"resumed cache differs from an undisturbed one (killed at {done} rows)")
        return Outcome(
            "recovered",
            f"killed at {done} rows; rerun resumed, byte-identical ({len(now)} bytes, {resumed['count']} rows)",
        )

    return case


def case_concurrent_embed(root: Path) -> Outcome:
    """Two embed-cache runs at once: the second must not harm the first or the previous cache."""
    reference = (root / "artifacts/cache/initial/embeddings.npy").read_bytes()
    shutil.rmtree(root / "artifacts/cache/initial")
    first = start(root, "embed-cache")
    wait_for(lambda: rows_done(root) >= 64 or first.poll() is not None)
    second = freshen(root, "embed-cache")
    first_out, first_err = first.communicate()
    folder = root / "artifacts/cache/initial"
    files = sorted(p.name for p in folder.iterdir()) if folder.exists() else []
    if first.returncode != 0:
        return Outcome("lost", f"the first run failed (exit {first.returncode}): {first_err.strip()[-200:]}")
    if "embeddings.npy" not in files or (folder / "embeddings.npy").read_bytes() != reference:
        return Outcome("lost", f"final cache holds {files}")
    if second.returncode not in (0, 2) or "Traceback" in second.stderr:
        return Outcome("traceback", second.stderr.strip().splitlines()[-1][:200])
    how = "exit 0 (it ran after the first)" if second.returncode == 0 else second.stderr.strip().splitlines()[-1][:160]
    return Outcome("recovered", f"first run complete and byte-identical; second: {how}")


def model_temps(parent: Path, pid: int | None = None) -> list[str]:
    """The temporaries of the model save beside `artifacts/model`: atomic.temp_sibling names them
    `.model.<pid>.<8 hex>.tmp` (replace_dir's `.model.old-<pid>` too); `.model.lock` is no temporary."""
    who = str(pid) if pid is not None else r"\d+"
    return sorted(
        p.name
        for p in parent.iterdir()
        if re.fullmatch(rf"\.model\.{who}\.[0-9a-f]{{8}}\.tmp|\.model\.old-{who}", p.name)
    )


def case_kill_train_while_saving(root: Path) -> Outcome:
    """kill -9 train while the model folder is written (its temporary exists): the previous model
    is untouched, and the rerun removes the dead run's temporary and writes the model."""
    trained(root)
    parent = root / "artifacts"
    before = tree_digest(root)
    model_files = {k: v for k, v in before.items() if k.startswith("artifacts/model/")}
    caught, tries = [], 0
    for tries in range(1, 4):  # the save takes a fraction of a second: stop the process the moment it starts
        log = root / f"train-{tries}.log"  # beside the project's outputs, not among them
        proc = start(root, "train", "--set", "seed=21", log=log)
        seen = wait_for(
            lambda proc=proc: bool(model_temps(parent, proc.pid)) or proc.poll() is not None, timeout=900, poll=0.001
        )
        if seen and proc.poll() is None:
            os.kill(proc.pid, signal.SIGSTOP)  # frozen where it is; then killed there
            caught = model_temps(parent, proc.pid)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        if not caught:  # finished (or renamed) before it was stopped: an undisturbed run, put the old model back
            if proc.returncode not in (0, -signal.SIGKILL):
                return Outcome("traceback", f"train exit {proc.returncode}: {log.read_text().strip()[-200:]}")
            trained(root)
            before = tree_digest(root)
            model_files = {k: v for k, v in before.items() if k.startswith("artifacts/model/")}
            continue
        break
    if not caught:
        return Outcome("traceback", f"never caught train while it saved the model ({tries} tries)")
    after_kill = tree_digest(root)
    changed = [k for k in model_files if model_files[k] != after_kill.get(k)]
    added = [k for k in after_kill if k.startswith("artifacts/model/") and k not in model_files]
    if changed or added:
        return Outcome("lost", f"killed while saving, and the previous model changed: {(changed + added)[:3]}")
    res = freshen(root, "train", "--set", "seed=21")
    if res.returncode:
        return Outcome("traceback", res.stderr.strip().splitlines()[-1][:200])
    still = model_temps(parent)
    if still:
        return Outcome("lost", f"temporaries left after the rerun: {still}")
    if not (root / "artifacts/model/encoder").is_dir():
        return Outcome("lost", "no model after the rerun")
    return Outcome(
        "recovered",
        f"killed while saving (try {tries}: {caught} existed, the previous model untouched); "
        "the rerun removed the temporary and wrote the model",
    )


def registered_versions(root: Path) -> int:
    """Model versions in the project's MLflow registry (its SQLite file), read without MLflow."""
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(f"file:{root / 'mlflow.db'}?mode=ro", uri=True, timeout=1)) as db:
            return int(db.execute("SELECT count(*) FROM model_versions").fetchone()[0])
    except sqlite3.Error:  # not created yet, or locked by a writer this instant
        return -1


def case_kill_promote(root: Path) -> Outcome:
    """kill -9 promote the moment its model version exists (before the aliases and decision
    tags), then at fixed times: after the rerun, one version of these weights, tagged and decided."""
    trained(root)
    import mlflow

    before = registered_versions(root)
    proc = start(root, "promote", log=root / "promote-0.log")
    wait_for(lambda: registered_versions(root) > max(before, 0) or proc.poll() is not None, timeout=600, poll=0.005)
    at_creation = proc.poll() is None
    if at_creation:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    client = mlflow.tracking.MlflowClient()
    name = yaml.safe_load((root / "params.yaml").read_text())["promote"]["registered_model"]
    if not at_creation:
        return Outcome(
            "traceback", f"promote ended (exit {proc.returncode}) before it was killed at the version's creation"
        )
    first = client.search_model_versions(f"name='{name}'")
    if len(first) != 1 or "freshen.model_digest" not in first[0].tags:
        return Outcome(
            "wrong", f"killed as the version was created: {len(first)} versions, tags {[sorted(v.tags) for v in first]}"
        )
    kills = []
    for i, delay in enumerate((1.0, 3.0, 6.0), 1):
        proc = start(root, "promote", log=root / f"promote-{i}.log")
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills.append(delay)
        proc.wait()
    res = freshen(root, "promote")
    if res.returncode:
        return Outcome("traceback", res.stderr.strip().splitlines()[-1][:200])
    versions = client.search_model_versions(f"name='{name}'")
    untagged = [v.version for v in versions if "freshen.model_digest" not in v.tags]
    undecided = [v.version for v in versions if "freshen.promotion.decision" not in v.tags]
    if len(versions) != 1 or untagged or undecided:
        return Outcome("wrong", f"{len(versions)} versions of one model, untagged: {untagged}, undecided: {undecided}")
    state = "already decided" if "freshen.promotion.decision" in first[0].tags else "not yet decided"
    return Outcome(
        "recovered",
        f"killed as version {first[0].version} was created (digest-tagged, {state}), "
        f"then after {kills} s; one tagged, decided version after the rerun",
    )


CASES = {
    # bad input: prepare
    "data/corpus-missing-text": refusal(
        "prepare", in_source("corpus.jsonl", line_edit(4, b'{"_id": "d4", "title": "x"}')), "corpus.jsonl:5"
    ),
    "data/corpus-not-json": refusal("prepare", in_source("corpus.jsonl", line_edit(2, b"{not json")), "corpus.jsonl:3"),
    "data/corpus-not-utf8": refusal(
        "prepare", in_source("corpus.jsonl", line_edit(1, b'{"_id": "d1", "text": "\xff\xfe"}')), "corpus.jsonl"
    ),
    "data/corpus-duplicate-id": refusal(
        "prepare", in_source("corpus.jsonl", line_edit(3, b'{"_id": "d2", "text": "x"}')), "corpus.jsonl:4"
    ),
    "data/doc-id-with-space": refusal(
        "prepare", in_source("corpus.jsonl", line_edit(3, b'{"_id": "d 3", "text": "x"}')), "corpus.jsonl:4"
    ),
    "data/doc-id-with-tab": refusal(
        "prepare", in_source("corpus.jsonl", line_edit(3, b'{"_id": "d\\t3", "text": "x"}')), "corpus.jsonl:4"
    ),
    "data/doc-id-empty": refusal(
        "prepare", in_source("corpus.jsonl", line_edit(3, b'{"_id": "", "text": "x"}')), "corpus.jsonl:4"
    ),
    "data/query-id-with-space": refusal(
        "prepare", in_source("queries.jsonl", line_edit(0, b'{"_id": "q 0", "text": "x"}')), "queries.jsonl:1"
    ),
    "data/empty-corpus": refusal("prepare", in_source("corpus.jsonl", lambda b: b""), "corpus.jsonl"),
    "data/qrels-fractional-score": refusal(
        "prepare", in_source("qrels/train.tsv", line_edit(1, b"q0\td0\t0.7")), "train.tsv:2"
    ),
    "data/qrels-text-score": refusal(
        "prepare", in_source("qrels/train.tsv", line_edit(1, b"q0\td0\tabc")), "train.tsv:2"
    ),
    "data/qrels-four-columns": refusal(
        "prepare", in_source("qrels/train.tsv", line_edit(1, b"q0\td0\t1\t7")), "train.tsv:2"
    ),
    "data/qrels-unknown-doc": refusal(
        "prepare", in_source("qrels/train.tsv", line_edit(1, b"q0\tnope\t1")), "train.tsv:2"
    ),
    "data/qrels-unknown-query": refusal(
        "prepare", in_source("qrels/train.tsv", line_edit(1, b"nope\td0\t1")), "train.tsv:2"
    ),
    "data/qrels-not-utf8": refusal(
        "prepare", in_source("qrels/train.tsv", line_edit(1, b"q0\td0\xff\t1")), "train.tsv"
    ),
    "data/qrels-missing-test": refusal("prepare", lambda root: remove_source(root, "qrels/test.tsv"), "test.tsv"),
    "data/dev-too-small": refusal("prepare", lambda root: None, "dev.tsv", "--set", "data.min_dev_queries=500"),
    "data/test-query-judged-zero": case_zero_test_queries,
    # bad params
    "params/steps-zero": refusal("train", lambda root: None, "train.steps", "--set", "train.steps=0"),
    "params/steps-negative": refusal("train", lambda root: None, "train.steps", "--set", "train.steps=-5"),
    "params/unknown-strategy": refusal(
        "train", lambda root: None, "train.negatives.strategy", "--set", "train.negatives.strategy=ance"
    ),
    "params/margin-above-one": refusal(
        "train", lambda root: None, "relative_margin", "--set", "train.negatives.false_negatives.relative_margin=1.5"
    ),
    "params/min-grade-too-high": refusal(
        "train", lambda root: None, "train.min_positive_grade", "--set", "train.min_positive_grade=3"
    ),
    "params/unknown-key": refusal("train", lambda root: None, "train.stepz", "--set", "train.stepz=3"),
    "params/chunk-rows-zero": refusal("embed-cache", lambda root: None, "chunk_rows", "--set", "encode.chunk_rows=0"),
    # corrupted artifacts
    "artifact/cache-manifest-not-json": refusal(
        "train", in_project("artifacts/cache/initial/manifest.json", lambda b: b[:20]), "manifest.json"
    ),
    "artifact/cache-ids-not-json": refusal(
        "train", in_project("artifacts/cache/initial/ids.json", lambda b: b[:-5]), "ids.json"
    ),
    "artifact/cache-embeddings-empty": refusal(
        "train", in_project("artifacts/cache/initial/embeddings.npy", lambda b: b""), "embeddings.npy"
    ),
    "artifact/cache-embeddings-truncated": refusal(
        "train", in_project("artifacts/cache/initial/embeddings.npy", lambda b: b[: len(b) // 2]), "embeddings.npy"
    ),
    "artifact/cache-nan-row": refusal("train", nan_row, "embeddings.npy"),
    "artifact/cache-of-another-corpus": refusal("train", prepare_bigger_corpus, "corpus_sha256"),
    "artifact/cache-id-not-in-corpus": refusal("train", drop_cached_id, "ids.json"),
    "artifact/clusters-missing": refusal(
        "train", lambda root: os.unlink(root / "artifacts/clusters/assignments.tsv"), "assignments.tsv"
    ),
    "artifact/clusters-garbled": refusal(
        "train",
        in_project("artifacts/clusters/assignments.tsv", lambda b: b + b"q1\tnot-a-number\n"),
        "assignments.tsv",
    ),
    "artifact/model-weights-truncated": refusal(
        "evaluate",
        lambda root: (
            trained(root) or in_project("artifacts/model/encoder/model.safetensors", lambda b: b[: len(b) // 3])(root)
        ),
        "model.safetensors",
    ),
    "artifact/corrector-config-mismatch": refusal(
        "evaluate",
        lambda root: (
            trained(root)
            or in_project(
                "artifacts/model/corrector/corrector.json",  # corrector.py's CONFIG: a config the weights do not fit
                lambda b: json.dumps({**json.loads(b), "hidden": 7}).encode(),
            )(root)
        ),
        "corrector.json",
    ),
    "artifact/eval-of-another-model": refusal("promote", retrained_not_evaluated, "measured.model_digest"),
    "artifact/metrics-nan": case_nan_metric_never_written,
    # kills and concurrency
    "kill/embed-cache-after-1-chunk": kill_embed_at(64),
    "kill/embed-cache-after-8-chunks": kill_embed_at(512),
    "kill/embed-cache-after-20-chunks": kill_embed_at(1280),
    "kill/train-while-saving": case_kill_train_while_saving,
    "kill/promote": case_kill_promote,
    "concurrent/embed-cache": case_concurrent_embed,
}


def write_table(out: Path, rows: list, args, done: bool) -> dict:
    """report.md with the cases run so far (rewritten after each, so a stopped run leaves its table)."""
    counts = {k: sum(1 for _, o, _ in rows if o.kind == k) for k in ("refused", "recovered", "warned", *BAD)}
    goal = "met" if not any(counts[k] for k in BAD) else "not met"
    lines = [
        "# Fault injection",
        "",
        f"Machine: {machine()}",
        f"Command: `{command_line('faults')}` ({args.docs} documents, a random-weight BERT)",
        "",
        f"Cases run: {len(rows)}{'' if done else ' (stopped before the end)'}. Outcomes: "
        + ", ".join(f"{k} {v}" for k, v in counts.items()),
        f"Goal: no lost, wrong, litter or traceback outcome: **{goal}**",
        "",
        "| case | outcome | seconds | what happened |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| {n} | {o.kind} | {s:.0f} | {o.detail.replace('|', '/')} |" for n, o, s in rows]
    write_report(out / "report.md", "\n".join(lines) + "\n")
    if done:
        print(f"wrote {out / 'report.md'}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="", help="comma-separated name prefixes, e.g. kill,data/qrels")
    ap.add_argument("--docs", type=int, default=2000, help="corpus size (the kill cases need a few seconds of work)")
    ap.add_argument("--keep", default="", help="copy the case projects here for inspection")
    ap.add_argument("--out", default=str(RESULTS / "faults"))
    args = ap.parse_args()
    prefixes = [p for p in args.only.split(",") if p]
    names = [n for n in CASES if not prefixes or any(n.startswith(p) for p in prefixes)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="freshen-faults-") as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        template = make_template(work, args.docs)
        print(f"template project ready in {time.perf_counter() - started:.0f} s", flush=True)
        for name in names:
            root = work / name.replace("/", "__")
            shutil.copytree(template, root, symlinks=True)
            t0 = time.perf_counter()
            try:
                outcome = CASES[name](root)
            except (AssertionError, OSError) as exc:
                outcome = Outcome("traceback", f"case setup failed: {type(exc).__name__}: {str(exc)[:200]}")
            seconds = time.perf_counter() - t0
            rows.append((name, outcome, seconds))
            print(f"{name:<40} {outcome.kind:<10} {seconds:5.0f} s  {outcome.detail}", flush=True)
            write_table(Path(args.out), rows, args, done=False)
            if not args.keep:
                shutil.rmtree(root, ignore_errors=True)
        if args.keep:
            shutil.copytree(work, args.keep, symlinks=True, dirs_exist_ok=True)
    counts = write_table(Path(args.out), rows, args, done=True)
    sys.exit(1 if any(counts[k] for k in BAD) else 0)


if __name__ == "__main__":
    main()
