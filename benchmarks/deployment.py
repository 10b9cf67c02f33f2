"""Every pipeline step in the component image against the same steps outside it, on a tiny project.

    python -m benchmarks.deployment --image localhost/freshen:cpu --out benchmarks/results/deployment

Writes a tiny project (tests/tiny.py: synthetic BEIR data, a random-weight BERT, params.yaml made
small) as a DVC repository, copies it, then runs each step of the train and refresh pipelines
(freshen.orchestration.pipeline, with the argv every runner passes: `pipeline.cli_argv`) twice:

- in a container of the image, as uid 1000, without a network, the project mounted at /project;
- on this machine, with this Python, on the copy.

It then compares the two folders file by file (sha256), and checks that every file the container
wrote can be read by another uid (the serving index is read by consumers running as anyone).
Files that must differ between any two runs (MLflow run ids, timestamps, wall times) are listed in
VOLATILE with the reason, and compared on their other fields where they are JSON.
Writes containers.json and containers.md under --out; exits 1 when a check fails."""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from freshen.orchestration.pipeline import REFRESH, TRAIN, cli_argv

from benchmarks.common import ROOT, command_line, machine, write_summary
from tests.tiny import make_project

CONTAINER_ROOT = "/project"
INPUTS = ("tiny-beir/*", "tiny-bert/*", "params.yaml", ".dvc/*", ".dvcignore")
# files that differ between any two runs of the same steps, with why; JSON ones are compared on
# every key but those named
VOLATILE: dict[str, tuple[str, tuple[str, ...]]] = {
    "mlflow.db": ("MLflow's store: run ids, start/end times, host paths of artifacts", ()),
    "mlartifacts/*": ("under MLflow run and model ids; MLmodel files carry times and run ids", ()),
    ".freshen/*": ("the parent run id and locks", ()),
    "*/.freshen-lock*": ("lock files", ()),
    ".dvc/tmp/*": ("DVC's own state", ()),
    ".dvc/cache/*": ("DVC's cache of the refreshed cache: compared through its .dvc file", ()),
    "metrics/train.json": ("wall times", ("wall_seconds", "seconds", "elapsed_s")),
    "plots/train_curve.csv": ("the wall_seconds column", ()),
    "metrics/promotion.json": ("the registry's run ids and time", ("run_id", "time", "timestamp", "decided_at")),
    "artifacts/champion/champion.json": ("the MLflow run the champion was logged in", ("source_run_id",)),
    "artifacts/serving/current.json": ("the time it was published", ("published_at", "time", "timestamp")),
}


# what the deployment check exercises: its committed report is stale when one of these changes
WATCHED = ("containers", "dags", "components/freshen/orchestration", "scripts/deploy", "scripts/check_deployment.sh")


def inputs_digest(repo: Path = ROOT) -> str:
    """sha256 over the git-tracked files under WATCHED (path and content), as checked out."""
    listed = subprocess.run(["git", "ls-files", "-z", *WATCHED], cwd=repo, capture_output=True, check=True)
    digest = hashlib.sha256()
    for rel in sorted(filter(None, listed.stdout.decode().split("\0"))):
        if (repo / rel).is_file():
            digest.update(rel.encode() + b"\0" + (repo / rel).read_bytes() + b"\0")
    return digest.hexdigest()


def step_calls(num_shards: int) -> list[tuple[str, list[str]]]:
    """(label, freshen argv after the entrypoint) for every step of both pipelines, in order;
    a mapped step once per shard."""
    calls = []
    for pipeline in (TRAIN, REFRESH):
        for step in pipeline.steps:
            shards = range(num_shards) if step.mapped else [None]
            for shard in shards:
                options = {"shard": shard, "num_shards": num_shards} if step.mapped else None
                label = step.name if shard is None else f"{step.name}[{shard}]"
                calls.append((label, cli_argv(step.name, CONTAINER_ROOT, "params.yaml", None, None, options)))
    return calls


def timed(cmd: list[str], cwd: Path | None = None, env: dict | None = None) -> tuple[float, int, str]:
    start = time.perf_counter()
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    return time.perf_counter() - start, res.returncode, (res.stdout + res.stderr)[-2000:]


def in_container(engine: str, image: str, project: Path, argv: list[str]) -> tuple[float, int, str]:
    cmd = [engine, "run", "--rm", "--network", "none", "--user", "1000:1000"]
    cmd += ["-v", f"{project}:{CONTAINER_ROOT}", "-w", CONTAINER_ROOT, "-e", "TOKENIZERS_PARALLELISM=false"]
    return timed([*cmd, image, *argv])


def on_host(project: Path, argv: list[str]) -> tuple[float, int, str]:
    argv = [str(project) if a == CONTAINER_ROOT else a for a in argv]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return timed([sys.executable, "-m", "freshen", *argv], cwd=project, env=env)


def files(root: Path) -> dict[str, Path]:
    return {str(p.relative_to(root)): p for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def volatile(rel: str) -> tuple[str, tuple[str, ...]] | None:
    return next((v for pattern, v in VOLATILE.items() if fnmatch.fnmatch(rel, pattern)), None)


def strip(value, keys: tuple[str, ...]):
    """A JSON value without the named keys, at any depth."""
    if isinstance(value, dict):
        return {k: strip(v, keys) for k, v in value.items() if k not in keys}
    if isinstance(value, list):
        return [strip(v, keys) for v in value]
    return value


def is_input(rel: str) -> bool:
    return any(fnmatch.fnmatch(rel, pattern) for pattern in INPUTS)


def same_but_project_path(a: Path, b: Path, a_root: str, b_root: str) -> bool:
    """Two JSON files equal once each names its project folder alike (manifests record sources
    as absolute paths: /project in the container, the copy's folder on the host)."""
    try:
        return json.loads(a.read_text().replace(a_root, "<project>")) == json.loads(
            b.read_text().replace(b_root, "<project>")
        )
    except ValueError:
        return False


def compare(container: Path, host: Path, container_root: str = CONTAINER_ROOT) -> dict:
    """Every output file of the two runs: identical, differing where expected, or differing."""
    a, b = files(container), files(host)
    outputs = sorted(r for r in set(a) | set(b) if not is_input(r))
    out: dict[str, list] = {"identical": [], "same_but_project_path": [], "volatile_same_content": []}
    out.update(volatile=[], differ=[])
    out["only_in_container"] = [r for r in outputs if r not in b and not volatile(r)]
    out["only_on_host"] = [r for r in outputs if r not in a and not volatile(r)]
    for rel in (r for r in outputs if r in a and r in b):
        if sha256(a[rel]) == sha256(b[rel]):
            out["identical"].append(rel)
        elif rel.endswith(".json") and same_but_project_path(a[rel], b[rel], container_root, str(host)):
            out["same_but_project_path"].append(rel)
        elif (why := volatile(rel)) is None:
            out["differ"].append(rel)
        elif rel.endswith(".json") and why[1]:
            same = strip(json.loads(a[rel].read_text()), why[1]) == strip(json.loads(b[rel].read_text()), why[1])
            out["volatile_same_content" if same else "differ"].append(rel)
        else:
            out["volatile"].append(f"{rel}: {why[0]}")
    return out


def unreadable(root: Path) -> list[str]:
    """Outputs another uid cannot read (no read bit for others; folders: no x either)."""
    bad = []
    for p in [root, *(p for p in root.rglob("*") if not is_input(str(p.relative_to(root))))]:
        mode = p.stat().st_mode
        need = 0o005 if p.is_dir() else 0o004
        if mode & need != need:
            bad.append(f"{p.relative_to(root)} ({oct(mode & 0o777)})")
    return bad


def markdown(summary: dict) -> str:
    lines = [
        "# Deployment check: the component image against the host",
        "",
        f"Command: `{summary['command']}`  ",
        f"Machine: {summary['machine']}  ",
        f"Image: `{summary['image']}`; steps run as uid 1000, `--network none`, project mounted at /project.",
        "",
        "| step | container s | host s | container exit | host exit |",
        "|---|---|---|---|---|",
    ]
    for row in summary["steps"]:
        lines.append(
            f"| `{row['step']}` | {row['container_s']:.1f} | {row['host_s']:.1f} "
            f"| {row['container_rc']} | {row['host_rc']} |"
        )
    cmp = summary["comparison"]
    lines += [
        "",
        f"Totals: container {summary['container_total_s']:.0f} s, host {summary['host_total_s']:.0f} s.",
        "",
        f"Artifacts: {len(cmp['identical'])} files byte-identical; "
        f"{len(cmp['same_but_project_path'])} JSON files equal but for the project folder's path; "
        f"{len(cmp['volatile_same_content'])} JSON files equal but for their volatile fields; "
        f"{len(cmp['volatile'])} volatile files (MLflow store, locks); {len(cmp['differ'])} differ.",
    ]
    keys = ("differ", "same_but_project_path", "volatile_same_content", "volatile", "only_in_container")
    for key in (*keys, "only_on_host", "unreadable"):
        items = summary["unreadable"] if key == "unreadable" else cmp[key]
        if items:
            lines += ["", f"{key}:", *(f"- `{i}`" for i in items)]
    lines += ["", f"Result: **{'PASS' if summary['ok'] else 'FAIL'}**", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.deployment", description=__doc__.splitlines()[0])
    parser.add_argument("--image", default="localhost/freshen:cpu")
    parser.add_argument("--engine", default="podman", help="docker or podman")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "deployment")
    parser.add_argument("--work", type=Path, default=None, help="keep the two projects here (default: a temp dir)")
    parser.add_argument("--inputs-digest", action="store_true", help="print the digest of WATCHED files and exit")
    args = parser.parse_args(argv)
    if args.inputs_digest:
        print(inputs_digest())
        return 0

    work = Path(args.work or tempfile.mkdtemp(prefix="freshen-deploy-"))
    container, host = work / "container", work / "host"
    for folder in (container, host):
        if folder.exists():
            shutil.rmtree(folder)
    make_project(container)
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=container, check=True)
    shutil.copytree(container, host)
    subprocess.run(["chown", "-R", "1000:1000", str(container)], check=True)  # the user's own project
    num_shards = yaml.safe_load((container / "params.yaml").read_text())["orchestration"]["num_shards"]

    rows, failed = [], []
    for label, step_argv in step_calls(num_shards):
        c_s, c_rc, c_log = in_container(args.engine, args.image, container, step_argv)
        h_s, h_rc, h_log = on_host(host, step_argv)
        rows.append({"step": label, "container_s": c_s, "host_s": h_s, "container_rc": c_rc, "host_rc": h_rc})
        print(f"{label:24s} container {c_s:6.1f}s rc={c_rc}   host {h_s:6.1f}s rc={h_rc}", flush=True)
        for where, rc, log in (("container", c_rc, c_log), ("host", h_rc, h_log)):
            if rc != 0:
                failed.append(f"{label} ({where}, exit {rc}): {log.strip().splitlines()[-1] if log.strip() else ''}")
                print(log, file=sys.stderr)

    comparison = compare(container, host)
    bad_modes = unreadable(container)
    ok = not (failed or bad_modes or comparison["differ"])
    ok = ok and not (comparison["only_in_container"] or comparison["only_on_host"])
    summary = {
        "command": command_line("deployment", argv),
        "machine": machine(),
        "image": args.image,
        "work": str(work),
        "steps": rows,
        "container_total_s": sum(r["container_s"] for r in rows),
        "host_total_s": sum(r["host_s"] for r in rows),
        "failed": failed,
        "comparison": comparison,
        "unreadable": bad_modes,
        "ok": ok,
    }
    return 0 if write_summary(args.out, "containers", summary, markdown) else 1


if __name__ == "__main__":
    raise SystemExit(main())
