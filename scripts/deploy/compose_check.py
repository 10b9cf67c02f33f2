"""The compose stack, run for real: build its images on a local base, bring up the checked variant
(containers/docker-compose.yaml + docker-compose.local.yaml: PostgreSQL, the MLflow server, Airflow's
api-server, scheduler, dag-processor and triggerer) with podman-compose, run `freshen_train` on a
tiny project through Airflow's REST API v2, and check that every task succeeded and that the
MLflow server's registry holds a `champion`. Every step runs as a container of the component image,
started by the DockerOperator through the podman socket mounted in place of /var/run/docker.sock.

Whatever happens, `podman-compose down -v` and the removal of the step containers, the network and
the tiny project follow. Each phase is timed; the summary goes to
benchmarks/results/deployment/compose.md. Run it as root through scripts/deploy/check_compose.sh."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import requests
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from airflow_service import Api, free_port  # noqa: E402
from tiny import make_beir, make_tiny_bert, tiny_params_for  # noqa: E402

PROJECT = "freshen"  # compose project: its network, freshen_default, is the one FRESHEN_SET names
COMPOSE_FILES = [REPO / "containers" / "docker-compose.yaml", REPO / "containers" / "docker-compose.local.yaml"]
IMAGES = {  # image -> Dockerfile, built from the base given as BASE_IMAGE
    "freshen-postgres:local": "containers/Dockerfile.postgres",
    "freshen-mlflow:local": "containers/Dockerfile.mlflow",
    "freshen-airflow:local": "containers/Dockerfile.airflow",
}
AIRFLOW = ["airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"]
SERVICES = ["postgres", "mlflow", "airflow-init", *AIRFLOW]  # MinIO left out: it cannot be obtained here
CONTAINER_ROOT = "/project"  # where the project is mounted in Airflow and in the step containers
# the folder of scripts/check_deployment.sh's reports, when it runs this
SUMMARY = Path(os.environ.get("FRESHEN_DEPLOY_OUT", REPO / "benchmarks" / "results" / "deployment")) / "compose.md"


class CheckFailed(RuntimeError):
    """One assertion of the check did not hold; the message says which."""


class Phases:
    """Wall-clock seconds of each phase, in order, with ok / failed."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, float, str]] = []

    @contextlib.contextmanager
    def __call__(self, name: str):
        print(f"== {name}", flush=True)
        start = time.monotonic()
        try:
            yield
        except BaseException:
            self.rows.append((name, time.monotonic() - start, "failed"))
            raise
        self.rows.append((name, time.monotonic() - start, "ok"))
        print(f"== {name}: {self.rows[-1][1]:.0f}s", flush=True)


def sh(*argv: str, check: bool = True, quiet: bool = False, **kw) -> subprocess.CompletedProcess:
    """Run a command; its output is printed unless quiet (then captured); raise on failure if check."""
    res = subprocess.run(list(argv), text=True, capture_output=quiet, **kw)
    if check and res.returncode != 0:
        detail = f": {(res.stderr or res.stdout or '').strip()[-2000:]}" if quiet else ""
        raise CheckFailed(f"{' '.join(argv[:4])} ... exited with {res.returncode}{detail}")
    return res


def compose(*args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    """podman-compose on the two files; its output (the merged file, every podman call) is kept
    out of the log and shown, the end of it, only on failure."""
    files = [arg for path in COMPOSE_FILES for arg in ("-f", str(path))]
    return sh("podman-compose", "-p", PROJECT, *files, *args, env=env, check=check, quiet=True)


def container(service: str) -> str:
    return f"{PROJECT}_{service}_1"  # podman-compose's name for a service's first container


def open_socket_to_airflow(path: Path) -> None:
    """Airflow runs as uid 50000 in group 0, like the official image: it reaches a root-owned
    podman socket through the group, which `podman system service` leaves without access (0600)."""
    info = path.stat()
    if info.st_gid != 0:
        raise SystemExit(f"{path}: group {info.st_gid}, not 0: Airflow (uid 50000, gid 0) could not use it")
    if info.st_mode & (stat.S_IRGRP | stat.S_IWGRP) != stat.S_IRGRP | stat.S_IWGRP:
        print(f"{path}: group read/write added, for Airflow's group 0")
        path.chmod(info.st_mode | stat.S_IRGRP | stat.S_IWGRP)


def build_images(base: str, component_image: str) -> dict[str, str]:
    """Build each stack image once on `base` (podman's layer cache makes a rebuild quick); returns sizes."""
    for image, dockerfile in IMAGES.items():
        sh("podman", "build", "--build-arg", f"BASE_IMAGE={base}", "-f", dockerfile, "-t", image, str(REPO))
    if sh("podman", "image", "exists", component_image, check=False).returncode != 0:
        raise CheckFailed(f"{component_image} not found: build containers/Dockerfile.cpu first (check_deployment.sh)")
    return {
        image: sh("podman", "image", "inspect", "--format", "{{.Size}}", image, quiet=True).stdout.strip()
        for image in [*IMAGES, component_image]
    }


def make_project(root: Path) -> dict:
    """A tiny project (BEIR data, a random-weight BERT, small params) whose paths are those the
    containers see; readable and writable by the step containers (uid 1000) and Airflow (50000)."""
    make_beir(root / "data" / "beir")
    make_tiny_bert(root / "model" / "tiny-bert")
    params = tiny_params_for(REPO / "params.yaml", f"{CONTAINER_ROOT}/model/tiny-bert", f"{CONTAINER_ROOT}/data/beir")
    params["orchestration"].update(retries=1, retry_delay_s=5)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("chmod", "-R", "a+rwX", str(root))
    return params


def wait_healthy(service: str, timeout_s: float) -> None:
    """Until the service's compose healthcheck passes; fails at once if its container stopped."""
    name, deadline = container(service), time.monotonic() + timeout_s
    while sh("podman", "healthcheck", "run", name, check=False, quiet=True).returncode != 0:
        running = sh("podman", "inspect", "--format", "{{.State.Running}}", name, quiet=True).stdout.strip()
        if running != "true" or time.monotonic() > deadline:
            sh("podman", "logs", "--tail", "40", name, check=False)
            raise CheckFailed(f"{service} not healthy after {timeout_s:.0f}s (running: {running})")
        time.sleep(3)


def start_in_order(env: dict[str, str]) -> None:
    """Create the containers with podman-compose, then start them as the compose files' depends_on
    conditions say (podman-compose 1.0 does not wait for them): PostgreSQL healthy, MLflow
    healthy, the Airflow database migrated, then the Airflow services."""
    compose("up", "--no-start", "--no-build", *SERVICES, env=env)  # with -d, 1.0.3 passes -d to `podman create`
    sh("podman", "start", container("postgres"))
    wait_healthy("postgres", 120)
    sh("podman", "start", container("mlflow"))
    wait_healthy("mlflow", 180)
    sh("podman", "start", container("airflow-init"))
    code = sh("podman", "wait", container("airflow-init"), quiet=True).stdout.strip()
    if code != "0":
        sh("podman", "logs", "--tail", "40", container("airflow-init"), check=False)
        raise CheckFailed(f"airflow-init (airflow db migrate) exited with {code}")
    sh("podman", "start", *(container(s) for s in AIRFLOW))
    wait_healthy("airflow-apiserver", 300)


def seconds(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def champion_version(registered_model: str) -> str:
    """The registry's champion, asked from the scheduler container (the worker's MLflow client)."""
    code = (
        "from mlflow import MlflowClient; "
        f"print(MlflowClient().get_model_version_by_alias({registered_model!r}, 'champion').version)"
    )
    res = sh("podman", "exec", container("airflow-scheduler"), "python", "-c", code, check=False, quiet=True)
    if res.returncode != 0:
        raise CheckFailed(f"no champion in the MLflow registry: {res.stderr.strip()[-500:]}")
    return res.stdout.strip().splitlines()[-1]


def artifact_files() -> int:
    res = sh("podman", "exec", container("mlflow"), "find", "/mlflow-artifacts", "-type", "f", quiet=True)
    return len(res.stdout.split())


def step_containers(project_dir: Path) -> list[str]:
    """Containers (left by failed steps) whose bind mount is this check's project folder."""
    ids = sh("podman", "ps", "-aq", quiet=True).stdout.split()
    if not ids:
        return []
    found = json.loads(sh("podman", "inspect", *ids, quiet=True, check=False).stdout or "[]")
    return [c["Id"] for c in found if any(m.get("Source") == str(project_dir) for m in c.get("Mounts", []))]


def tear_down(env: dict[str, str], project_dir: Path) -> None:
    compose("down", "-v", env=env, check=False)
    leftovers = step_containers(project_dir)
    if leftovers:
        sh("podman", "rm", "-f", *leftovers, check=False)
    if sh("podman", "network", "exists", f"{PROJECT}_default", check=False).returncode == 0:
        sh("podman", "network", "rm", f"{PROJECT}_default", check=False)
    shutil.rmtree(project_dir, ignore_errors=True)


def write_summary(report: dict, phases: Phases) -> None:
    lines = [
        "# Compose stack check",
        "",
        f"`scripts/deploy/check_compose.sh`, {report['date']}, commit `{report['commit']}`: "
        f"**{'passed' if report['passed'] else 'FAILED'}**.",
        "",
        "podman-compose brought up containers/docker-compose.yaml + docker-compose.local.yaml (PostgreSQL, "
        "the MLflow server with artifacts on a volume, Airflow api-server, scheduler, dag-processor and "
        "triggerer; no MinIO) on images built from `" + report["base"] + "`; `freshen_train` ran on a tiny "
        f"project, every step a container of `{report['component_image']}` started through the podman socket "
        "mounted as /var/run/docker.sock (runner `docker`).",
        "",
        "| phase | seconds | |",
        "|---|---:|---|",
        *(f"| {name} | {secs:.0f} | {status} |" for name, secs, status in phases.rows),
        "",
    ]
    if report.get("images"):
        lines += ["| image | size (MB) |", "|---|---:|"]
        lines += [f"| `{img}` | {int(size) / 1e6:.0f} |" for img, size in report["images"].items()]
        lines.append("")
    if report.get("tasks"):
        lines += ["| task | state | try | seconds |", "|---|---|---:|---:|"]
        for t in report["tasks"]:
            secs = "" if t["seconds"] is None else f"{t['seconds']:.0f}"
            lines.append(f"| `{t['task_id']}` | {t['state']} | {t['try_number']} | {secs} |")
        lines.append("")
    if report.get("champion"):
        lines.append(
            f"Registry: `{report['registered_model']}` alias `champion` -> version {report['champion']}; "
            f"{report['artifact_files']} artifact files on the `mlflow-artifacts` volume."
        )
    if report.get("error"):
        lines += ["", "Error:", "", "```", report["error"], "```"]
    SUMMARY.parent.mkdir(parents=True, exist_ok=True)
    SUMMARY.write_text("\n".join(lines) + "\n")
    print(f"summary: {SUMMARY}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default=os.environ.get("FRESHEN_BASE_IMAGE", "localhost/freshen-base:bookworm"))
    parser.add_argument("--socket", default=os.environ.get("FRESHEN_PODMAN_SOCKET", "/run/freshen-podman.sock"))
    parser.add_argument("--component-image", default="freshen:cpu")
    parser.add_argument("--run-timeout", type=float, default=1800, help="seconds the DAG run may take")
    args = parser.parse_args()

    if not Path(args.socket).is_socket():
        raise SystemExit(f"{args.socket}: no podman socket (podman system service unix://{args.socket})")
    open_socket_to_airflow(Path(args.socket))
    if sh("podman", "ps", "-aq", "--filter", f"label=io.podman.compose.project={PROJECT}", quiet=True).stdout.strip():
        raise SystemExit(f"a compose project '{PROJECT}' is already up: take it down first (podman-compose down -v)")

    phases, port = Phases(), free_port()
    project_dir = Path(tempfile.mkdtemp(prefix="freshen-compose-project-", dir="/var/tmp"))
    env = {**os.environ, "FRESHEN_HOST_PROJECT_DIR": str(project_dir), "DOCKER_SOCKET": args.socket}
    env.update(AIRFLOW_PORT=str(port), MLFLOW_PORT=str(free_port()))
    commit = sh("git", "-C", str(REPO), "rev-parse", "--short", "HEAD", quiet=True, check=False).stdout.strip()
    report: dict = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit,
        "base": args.base,
        "component_image": args.component_image,
        "passed": False,
    }
    try:
        with phases("build images"):
            report["images"] = build_images(args.base, args.component_image)
        with phases("tiny project"):
            params = make_project(project_dir)
        with phases("stack up (healthy)"):
            start_in_order(env)
        api = Api(f"http://127.0.0.1:{port}")
        with phases("DAG parsed, components healthy"):
            api.wait_ready(["freshen_train"], 300, components=())
        with phases("freshen_train run"):
            run = api.run_dag("freshen_train", {}, args.run_timeout)
            run_id, state = run["dag_run_id"], run["state"]
        with phases("assertions"):
            tasks = api.task_instances("freshen_train", run_id)
            report["tasks"] = [
                {
                    **{k: t[k] for k in ("task_id", "state", "try_number")},
                    "seconds": seconds(t["start_date"], t["end_date"]),
                }
                for t in sorted(tasks, key=lambda t: t["start_date"] or "")
            ]
            # the tiny project has no dvc.yaml, so there are no DVC stages to record the outputs in
            expected = {t["task_id"]: "skipped" if t["task_id"] == "record_outputs" else "success" for t in tasks}
            failed = [t for t in tasks if t["state"] != expected[t["task_id"]]]
            for t in failed:
                if t["state"] == "failed":
                    print(f"--- {t['task_id']} failed; end of its log:\n{api.log_tail('freshen_train', run_id, t)}")
            if state != "success" or failed:
                raise CheckFailed(
                    f"run {run_id} {state}; not as expected: {[(t['task_id'], t['state']) for t in failed]}"
                )
            report["registered_model"] = params["promote"]["registered_model"]
            report["champion"] = champion_version(report["registered_model"])
            report["artifact_files"] = artifact_files()
            if report["artifact_files"] == 0:
                raise CheckFailed("no artifact on the mlflow-artifacts volume: the model was not logged there")
        report["passed"] = True
    except (RuntimeError, TimeoutError, requests.RequestException) as exc:  # CheckFailed too
        report["error"] = str(exc)
        print(f"FAILED: {exc}", file=sys.stderr)
    finally:
        with phases("tear down"):
            tear_down(env, project_dir)
        write_summary(report, phases)
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
