"""The Airflow DAGs in dags/: they import cleanly, have the documented tasks and edges, pick
their runner from params.yaml, and run end to end with `dag.test()` on tiny data (training,
then a K = 3 sharded cache refresh with a shard that fails once)."""

import importlib.util
import json
import re
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import yaml
from airflow_env import migrate_db, use_temp_airflow_home

use_temp_airflow_home()  # before anything imports airflow

from dag_shapes import (  # noqa: E402
    CORPUS_EDGES,
    CORPUS_TASKS,
    REFRESH_EDGES,
    REFRESH_TASKS,
    TRAIN_EDGES,
    TRAIN_STEPS,
    TRAIN_TASKS,
    edges_of,
)
from freshen.errors import FreshenError  # noqa: E402
from freshen.orchestration.pipeline import CORPUS, TRAIN, cli_argv, steps_table  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PARENT_XCOM = "{{ ti.xcom_pull(task_ids='start_run')['parent_run_id'] }}"
SET_JSON_XCOM = "{{ ti.xcom_pull(task_ids='start_run')['set_json'] }}"


@pytest.fixture(autouse=True)
def repo_project(monkeypatch):
    for name in ("FRESHEN_PROJECT_DIR", "FRESHEN_PARAMS", "FRESHEN_SET"):
        monkeypatch.delenv(name, raising=False)


def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))


def project_with(tmp_path, params: dict) -> Path:
    root = tmp_path / "proj"
    root.mkdir(exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def test_every_dag_file_imports_without_errors():
    bag = dagbag()
    assert bag.import_errors == {}
    assert sorted(bag.dag_ids) == ["freshen_cache_refresh", "freshen_corpus_update", "freshen_train"]
    assert {Path(d.fileloc).name for d in bag.dags.values()} == {p.name for p in (REPO / "dags").glob("*.py")}


def test_the_dags_parse_without_numpy_torch_or_faiss(tmp_path):
    """The compose stack's scheduler image has Airflow and the params schema, not the ML stack."""
    code = (
        "import sys\n"
        "for name in ('numpy', 'torch', 'faiss'): sys.modules[name] = None\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        f"bag = DagBag(dag_folder={str(REPO / 'dags')!r})\n"
        "assert not bag.import_errors, bag.import_errors\n"
        "print(sorted(bag.dag_ids))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "freshen_corpus_update" in done.stdout


def test_dag_files_use_only_the_task_sdk():
    for path in (REPO / "dags").glob("*.py"):
        imports = [line for line in path.read_text().splitlines() if line.startswith(("import ", "from "))]
        airflow_imports = [line for line in imports if line.split()[1].startswith("airflow")]
        assert airflow_imports and all(line.startswith("from airflow.sdk import") for line in airflow_imports), path
    source = (REPO / "components/freshen/orchestration/airflow_tasks.py").read_text()
    assert "from airflow.sdk" in source and "airflow.decorators" not in source and "airflow.models" not in source


def test_training_dag_tasks_edges_params_and_asset():
    dag = dagbag().dags["freshen_train"]
    assert set(dag.task_dict) == TRAIN_TASKS
    assert edges_of(dag) == TRAIN_EDGES
    assert dag.task_dict["end_run"].is_teardown
    assert {"train.steps", "promote.min_improvement", "set"} <= set(dag.params)
    assert dag.params["train.steps"] is None  # null keeps params.yaml
    outlets = dag.task_dict["publish_champion"].outlets
    assert [a.name for a in outlets] == ["freshen_champion"]
    assert steps_table(TRAIN) in dag.doc_md  # the UI shows the definition's steps


def test_refresh_dag_schedule_tasks_and_edges():
    from airflow.sdk import AssetOrTimeSchedule

    dag = dagbag().dags["freshen_cache_refresh"]
    assert set(dag.task_dict) == REFRESH_TASKS
    assert edges_of(dag) == REFRESH_EDGES
    cron = yaml.safe_load((REPO / "params.yaml").read_text())["orchestration"]["refresh_cron"]
    assert isinstance(dag.timetable, AssetOrTimeSchedule)
    assert dag.timetable.timetable.expression == cron
    assert [a.name for a in dag.timetable.asset_condition.objects] == ["freshen_champion", "freshen_corpus"]
    assert type(dag.timetable.asset_condition).__name__ == "AssetAny"  # either one starts a refresh
    assert type(dag.task_dict["reembed_shard"]).__name__.endswith("MappedOperator")
    assert str(dag.task_dict["publish_index"].trigger_rule) in ("none_failed", "TriggerRule.NONE_FAILED")
    for name in ("corrected_index", "publish_index"):
        assert [a.name for a in dag.task_dict[name].outlets] == ["freshen_serving_index"]
    assert {"orchestration.num_shards", "orchestration.dvc.enabled"} <= set(dag.params)


def test_corpus_dag_prepares_then_announces_the_corpus_version(tmp_path, tiny_params, monkeypatch):
    dag = dagbag().dags["freshen_corpus_update"]
    assert set(dag.task_dict) == CORPUS_TASKS
    assert edges_of(dag) == CORPUS_EDGES
    assert [a.name for a in dag.task_dict["publish_corpus"].outlets] == ["freshen_corpus"]
    assert dag.task_dict["end_run"].is_teardown
    assert type(dag.timetable).__name__ == "NullTimetable"  # orchestration.corpus_cron null: when triggered
    assert steps_table(CORPUS) in dag.doc_md
    tiny_params["orchestration"]["corpus_cron"] = "30 2 * * *"
    monkeypatch.setenv("FRESHEN_PROJECT_DIR", str(project_with(tmp_path, tiny_params)))
    assert dagbag().dags["freshen_corpus_update"].timetable.expression == "30 2 * * *"


def test_refresh_reasons_name_the_triggering_events():
    from freshen.orchestration.events import refresh_reasons

    corpus = {"corpus_sha256": "1a2b3c4d5e", "added": 5, "edited": 4, "removed": 3, "docs": 62}
    both = refresh_reasons("asset_triggered", {"freshen_champion": [{"version": "3"}], "freshen_corpus": [corpus]})
    assert both["trigger"] == "asset_triggered" and both["champion"] == ["3"]
    assert both["summary"] == "champion moved to v3; corpus version 1a2b3c4d (+5 added, ~4 edited, -3 removed)"
    assert refresh_reasons("scheduled", {})["summary"] == "orchestration.refresh_cron"
    assert refresh_reasons("manual", {}) == {
        "trigger": "manual",
        "champion": [],
        "corpus": [],
        "summary": "started by hand",
    }


def test_a_corpus_diff_counts_by_id_and_text_hash():
    from freshen.orchestration.events import diff

    old = np.array([b"a" * 16, b"b" * 16, b"c" * 16], dtype="S16")
    new = np.array([b"a" * 16, b"C" * 16, b"d" * 16], dtype="S16")
    assert diff(["a", "b", "c"], old, ["a", "c", "d"], new) == {"added": 1, "edited": 1, "removed": 1, "unchanged": 1}
    assert diff(["a", "b"], None, ["b", "e"], new[:2]) == {"added": 1, "edited": None, "removed": 1, "unchanged": None}


def test_run_params_become_dotted_overrides():
    from freshen.orchestration.dag_params import overrides_from

    assert overrides_from({"train.steps": 5, "train.lr": None, "set": {"train.temperature": 0.1}}) == {
        "train.steps": 5,
        "train.temperature": 0.1,
    }
    assert overrides_from({"train": {"steps": 5, "lr": None}, "set": {}}) == {"train.steps": 5}  # a nesting form


def test_the_deployment_overrides_reach_every_step_of_a_run(tmp_path, tiny_params, monkeypatch):
    """$FRESHEN_SET is applied where the DAGs are parsed and also handed to each `freshen <step>`
    (which loads params.yaml itself): the steps see the configuration the DAG planned with."""
    from freshen.orchestration import config
    from freshen.orchestration.dag_params import run_overrides
    from freshen.params import load_params

    root = project_with(tmp_path, tiny_params)
    monkeypatch.setenv(
        "FRESHEN_SET", json.dumps({"orchestration.num_shards": 3, "data.verify": False, "train.steps": 9})
    )
    project = config.load_project(root)
    assert project.params.orchestration.num_shards == 3
    overrides = run_overrides(project, {"train.steps": 5, "train.lr": None})  # the run's own param wins
    assert overrides == {"orchestration.num_shards": 3, "data.verify": False, "train.steps": 5}
    step_params = load_params(root / "params.yaml", set_json=json.dumps(overrides))  # what a step loads
    assert step_params.orchestration.num_shards == 3 and step_params.data.verify is False
    assert step_params.train.steps == 5
    monkeypatch.setenv("FRESHEN_SET", "[1]")
    with pytest.raises(FreshenError, match=r"\$FRESHEN_SET: must be a JSON object"):
        config.load_project(root)


def test_a_bad_orchestration_value_is_an_import_error_naming_the_field(tmp_path, monkeypatch):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["orchestration"]["runner"] = "slurm"
    monkeypatch.setenv("FRESHEN_PROJECT_DIR", str(project_with(tmp_path, params)))
    errors = dagbag().import_errors
    assert len(errors) == len(list((REPO / "dags").glob("*.py"))) == 3
    assert all(
        re.search(
            r"params\.yaml:\d+: orchestration\.runner: Input should be 'local', 'docker' or "
            r"'kubernetes', got 'slurm'",
            e,
        )
        for e in errors.values()
    )


def test_an_unknown_gpu_step_is_an_import_error_naming_the_field(tmp_path, monkeypatch):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["orchestration"]["gpu"]["steps"] = ["train", "re_embed"]
    monkeypatch.setenv("FRESHEN_PROJECT_DIR", str(project_with(tmp_path, params)))
    errors = dagbag().import_errors
    assert len(errors) == len(list((REPO / "dags").glob("*.py"))) == 3
    assert all(
        re.search(r"params.yaml:\d+: orchestration.gpu.steps: .*unknown step 're_embed'", e) for e in errors.values()
    ), errors


DOCKER_ARGS = (
    "command",
    "image",
    "docker_url",
    "network_mode",
    "mounts",
    "mount_tmp_dir",
    "auto_remove",
    "private_environment",
    "mem_limit",
    "skip_on_exit_code",
    "device_requests",
    "shm_size",
)
POD_ARGS = (
    "arguments",
    "namespace",
    "image",
    "name",
    "env_vars",
    "env_from",
    "container_resources",
    "volumes",
    "volume_mounts",
    "service_account_name",
    "image_pull_policy",
    "get_logs",
    "on_finish_action",
    "skip_on_exit_code",
)


def fake_provider(monkeypatch, module: str, cls: str, arg_names):
    """Stand-in operator class for a provider that is not installed: records its arguments."""
    import inspect

    from airflow.sdk import BaseOperator

    base_args = set(inspect.signature(BaseOperator.__init__).parameters)

    class Recorded(BaseOperator):
        template_fields = ("command", "arguments")

        def __init__(self, **kwargs):
            super().__init__(**{k: kwargs.pop(k) for k in list(kwargs) if k in base_args})
            self.command, self.arguments = kwargs.pop("command", None), kwargs.pop("arguments", None)
            self.provider_kwargs = kwargs

        __init__.__signature__ = inspect.Signature(
            [inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY)]
            + [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=None) for n in arg_names]
            + [inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD)]
        )

    Recorded.__name__ = cls
    parts = module.split(".")
    for i in range(3, len(parts) + 1):  # airflow.providers.<...>: fresh empty modules
        monkeypatch.setitem(sys.modules, ".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
    setattr(sys.modules[module], cls, Recorded)


def test_docker_runner_builds_docker_operators_running_the_same_cli(tmp_path, monkeypatch):
    fake_provider(monkeypatch, "airflow.providers.docker.operators.docker", "DockerOperator", DOCKER_ARGS)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["orchestration"]["gpu"]["count"] = 1
    monkeypatch.setenv("FRESHEN_PROJECT_DIR", str(project_with(tmp_path, params)))
    monkeypatch.setenv("FRESHEN_SET", json.dumps({"orchestration.runner": "docker"}))
    monkeypatch.setenv("FRESHEN_HOST_PROJECT_DIR", "/srv/freshen")
    bag = dagbag()
    assert bag.import_errors == {}
    train = bag.dags["freshen_train"]
    assert edges_of(train) == TRAIN_EDGES
    op = train.task_dict["train"]
    assert type(op).__name__ == "DockerOperator"
    assert op.command == cli_argv("train", "/project", "params.yaml", PARENT_XCOM, SET_JSON_XCOM)
    kw = op.provider_kwargs
    assert kw["image"] == "freshen:gpu" and kw["device_requests"][0]["Count"] == 1
    assert kw["mounts"][0]["Source"] == "/srv/freshen" and kw["mounts"][0]["Target"] == "/project"
    assert kw["skip_on_exit_code"] == 99 and kw["mem_limit"] == "16g"
    assert train.task_dict["promote"].provider_kwargs["image"] == "freshen:cpu"  # not a GPU step
    refresh = bag.dags["freshen_cache_refresh"]
    assert edges_of(refresh) == REFRESH_EDGES
    shards = refresh.task_dict["reembed_shard"]
    assert type(shards).__name__ == "MappedOperator" and shards.partial_kwargs["image"] == "freshen:gpu"
    assert set(shards.expand_input.value) == {"command"}


def test_kubernetes_runner_builds_pod_operators(tmp_path, monkeypatch):
    pytest.importorskip("kubernetes")
    fake_provider(monkeypatch, "airflow.providers.cncf.kubernetes.operators.pod", "KubernetesPodOperator", POD_ARGS)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["orchestration"].update(runner="kubernetes", mlflow_tracking_uri="http://mlflow:5000")
    params["orchestration"]["gpu"]["count"] = 2
    params["orchestration"]["kubernetes"]["env_secret"] = "freshen-env"
    monkeypatch.setenv("FRESHEN_PROJECT_DIR", str(project_with(tmp_path, params)))
    bag = dagbag()
    assert bag.import_errors == {}
    op = bag.dags["freshen_train"].task_dict["embed_cache"]
    assert type(op).__name__ == "KubernetesPodOperator"
    assert op.arguments[:3] == ["embed-cache", "--root", "/project"]
    kw = op.provider_kwargs
    assert kw["namespace"] == "freshen" and kw["image"] == "freshen:gpu"
    assert kw["container_resources"].limits["nvidia.com/gpu"] == "2"
    assert kw["container_resources"].requests == {"cpu": "2", "memory": "8Gi"}
    assert kw["volumes"][0].persistent_volume_claim.claim_name == "freshen-project"
    assert kw["volume_mounts"][0].mount_path == "/project"
    assert kw["env_vars"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert kw["env_from"][0].secret_ref.name == "freshen-env"
    assert "--nproc" not in op.arguments and [v.name for v in kw["volumes"]] == ["project"]
    # two GPUs for train: two ranks, which talk through a memory-backed /dev/shm
    train = bag.dags["freshen_train"].task_dict["train"]
    assert train.arguments[-2:] == ["--nproc", "2"]
    assert [v.name for v in train.provider_kwargs["volumes"]] == ["project", "dshm"]
    assert train.provider_kwargs["volumes"][1].empty_dir.medium == "Memory"
    assert [m.mount_path for m in train.provider_kwargs["volume_mounts"]] == ["/project", "/dev/shm"]


def test_training_on_several_gpus_runs_one_rank_per_gpu(tmp_path, monkeypatch):
    """orchestration.gpu.count N > 1 with train among gpu.steps: the train task runs
    `freshen train ... --nproc N` (and only it: the other GPU steps encode in one process),
    with the docker runner's /dev/shm enlarged for the ranks, and with the local runner alike."""
    from freshen.orchestration.runners import RANKS_SHM_BYTES

    fake_provider(monkeypatch, "airflow.providers.docker.operators.docker", "DockerOperator", DOCKER_ARGS)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["orchestration"]["gpu"]["count"] = 4
    params["train"]["batch_size"] = 64
    monkeypatch.setenv("FRESHEN_PROJECT_DIR", str(project_with(tmp_path, params)))
    monkeypatch.setenv("FRESHEN_SET", json.dumps({"orchestration.runner": "docker"}))
    train = dagbag().dags["freshen_train"]
    options = {"nproc": 4}
    assert train.task_dict["train"].command == cli_argv(
        "train", "/project", "params.yaml", PARENT_XCOM, SET_JSON_XCOM, options
    )
    assert train.task_dict["train"].provider_kwargs["shm_size"] == RANKS_SHM_BYTES
    for name in ("cluster_queries", "embed_cache", "reembed", "evaluate"):
        assert "--nproc" not in train.task_dict[name].command, name
        assert train.task_dict[name].provider_kwargs["shm_size"] is None
    # the local runner: the same argument list, run by the worker (which then launches the ranks)
    from freshen.orchestration.config import load_project

    monkeypatch.setenv("FRESHEN_SET", json.dumps({"orchestration.runner": "local"}))
    project = load_project()
    assert project.step_options("train") == options
    assert all(project.step_options(s) == {} for s in ("embed_cache", "reembed", "promote"))


def test_gpus_that_do_not_divide_the_batch_are_an_import_error_naming_the_field(tmp_path, monkeypatch):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["orchestration"]["gpu"]["count"] = 3
    params["train"]["batch_size"] = 64
    monkeypatch.setenv("FRESHEN_PROJECT_DIR", str(project_with(tmp_path, params)))
    errors = dagbag().import_errors
    assert len(errors) == 3
    assert all(
        re.search(
            r"params\.yaml:\d+: orchestration\.gpu\.count: 3 GPUs for train \(one process each\): "
            r"train\.batch_size: 64 is not divisible by the 3 training processes",
            e,
        )
        for e in errors.values()
    ), errors
    gpu_steps = params["orchestration"]["gpu"]["steps"]
    params["orchestration"]["gpu"]["steps"] = ["embed_cache", "reembed"]  # train on the CPU: one process
    project_with(tmp_path, params)
    assert dagbag().import_errors == {}
    params["orchestration"]["gpu"].update(count=2, steps=gpu_steps)  # 2 divides 64, but a teacher cannot be split
    params["train"]["teacher"]["scores"] = "data/teacher_scores.tsv"
    project_with(tmp_path, params)
    errors = dagbag().import_errors
    assert len(errors) == 3 and all("train.teacher.scores: Margin-MSE with a teacher" in e for e in errors.values())


def test_a_missing_provider_names_the_package(tmp_path, monkeypatch):
    if importlib.util.find_spec("airflow.providers.docker") is not None:
        pytest.skip("the docker provider is installed here")
    monkeypatch.setenv("FRESHEN_SET", json.dumps({"orchestration.runner": "docker"}))
    errors = dagbag().import_errors
    assert errors and all("pip install apache-airflow-providers-docker" in e for e in errors.values())


# ---------------------------------------------------------------- end to end, on tiny data


def task_states(dag_run) -> dict:
    from airflow.models import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        tis = (
            session.query(TaskInstance)
            .filter(TaskInstance.dag_id == dag_run.dag_id, TaskInstance.run_id == dag_run.run_id)
            .all()
        )
        return {(ti.task_id, ti.map_index): (str(ti.state), ti.try_number) for ti in tis}


def asset_events(name: str) -> list[dict]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = (
            session.query(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .filter(AssetModel.name == name)
            .all()
        )
        return [dict(e.extra or {}) for e in rows]


def test_training_then_sharded_refresh_end_to_end(tmp_path, tiny_params, mlflow_uri, monkeypatch):
    import mlflow
    from freshen import embed_corpus
    from freshen.cache import load_cache
    from freshen.index_store import read_pointer
    from mlflow.tracking import MlflowClient

    migrate_db()
    tiny_params["orchestration"].update(retries=1, retry_delay_s=0)
    tiny_params["encode"]["chunk_rows"] = 8  # 20 rows a shard: chunks of 8, 8, 4
    root = project_with(tmp_path, tiny_params)
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=root, check=True)
    monkeypatch.setenv("FRESHEN_PROJECT_DIR", str(root))
    bag = dagbag()
    assert bag.import_errors == {}

    # training: every step once, with a run param overriding params.yaml
    run = bag.dags["freshen_train"].test(run_conf={"train.steps": 4, "set": {"train.log_every": 1}})
    states = task_states(run)
    assert str(run.state) == "success", states
    assert {t for (t, _), (s, _) in states.items() if s == "success"} == TRAIN_TASKS - {"record_outputs"}
    assert states[("record_outputs", -1)][0] == "skipped"  # no dvc.yaml here (tests/test_dvc_repo.py has one)
    mlflow.set_tracking_uri(mlflow_uri)
    client = MlflowClient()
    name = tiny_params["promote"]["registered_model"]
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
    assert str(client.get_model_version_by_alias(name, "challenger").version) == "1"
    exp = client.get_experiment_by_name("freshen")
    parent = next(r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("freshen.pipeline") == "train")
    assert parent.info.status == "FINISHED" and parent.data.tags["airflow.dag_id"] == "freshen_train"
    children = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert sorted(c.info.run_name for c in children) == sorted(TRAIN_STEPS)
    train_child = next(c for c in children if c.info.run_name == "train")
    assert train_child.data.params["train.steps"] == "4" and train_child.data.params["train.log_every"] == "1"
    assert asset_events("freshen_champion") == [
        {"registered_model": name, "version": "1", "previous": None, "parent_run_id": parent.info.run_id}
    ]

    # refresh with K = 3, every shard encoded (encode.reuse false: the rows `reembed` wrote for this
    # model would be copied otherwise, see below); shard 1 dies after its first chunk and is
    # retried, resuming from there
    real, attempts, encoded = embed_corpus.encode_chunks, [], []

    def flaky(encoder, texts, kind, sink, on_chunk=None, **kw):
        encoded.append(kw.get("desc", ""))
        if "shard 2/3" not in kw.get("desc", ""):
            return real(encoder, texts, kind, sink, on_chunk=on_chunk, **kw)
        attempts.append(kw.get("start_row", 0))
        if len(attempts) > 1:
            return real(encoder, texts, kind, sink, on_chunk=on_chunk, **kw)

        def dies_after_first_chunk(rows_done):
            on_chunk(rows_done)
            raise RuntimeError("simulated worker crash")

        return real(encoder, texts, kind, sink, on_chunk=dies_after_first_chunk, **kw)

    monkeypatch.setattr(embed_corpus, "encode_chunks", flaky)
    refresh = bag.dags["freshen_cache_refresh"].test(
        run_conf={"orchestration.num_shards": 3, "set": {"encode.reuse": False}}
    )
    states = task_states(refresh)
    assert str(refresh.state) == "success", states
    assert states[("reembed_shard", 1)] == ("success", 2) and states[("reembed_shard", 0)][1] == 1
    assert attempts == [0, 8]  # the retry resumed after the first chunk of 8 rows
    assert {t for (t, _), (s, _) in states.items() if s == "success"} == REFRESH_TASKS

    orch = tiny_params["orchestration"]
    merged = load_cache(root / orch["refresh_dir"])
    single = load_cache(root / tiny_params["reembed"]["out_dir"])  # one-process `reembed` by the same model
    assert merged.ids == single.ids and merged.manifest["num_shards"] == 3
    assert merged.manifest["model_digest"] == single.manifest["model_digest"]
    np.testing.assert_allclose(
        np.asarray(merged.embeddings, np.float32), np.asarray(single.embeddings, np.float32), atol=1e-3, rtol=0
    )
    pointer = read_pointer(root / orch["serving_dir"])
    assert pointer["corrected"] is False and pointer["folder"].startswith("reembedded-v1-")
    # one digest per model version: the registry's (encoder + corrector), as in promotion.json
    digest = client.get_model_version(name, "1").tags["freshen.model_digest"]
    assert pointer["model_digest"] == digest != pointer["encoder_digest"]
    corrected_folder = pointer["history"][1]
    assert corrected_folder.startswith("corrected-v1-")
    assert load_cache(root / orch["serving_dir"] / corrected_folder).manifest["corrected"] is True
    assert "md5" in yaml.safe_load((root / f"{orch['refresh_dir']}.dvc").read_text())["outs"][0]
    served = asset_events("freshen_serving_index")  # the corrected index, then the re-embedded one
    assert [(e["folder"], e["corrected"], e["champion_version"]) for e in served] == [
        (corrected_folder, True, "1"),
        (pointer["folder"], False, "1"),
    ]
    assert {e["model_digest"] for e in served} == {digest}

    refresh_parent = next(
        r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("freshen.pipeline") == "refresh"
    )
    assert refresh_parent.info.status == "FINISHED"  # the retried shard counts by its last attempt
    shard_runs = client.search_runs(
        [exp.experiment_id],
        f"tags.`mlflow.parentRunId` = '{refresh_parent.info.run_id}' and tags.`freshen.unit` = '1-of-3'",
    )
    assert sorted(r.info.status for r in shard_runs) == ["FAILED", "FINISHED"]

    # the next refresh of this champion (its cron tick) encodes nothing: the shards copy the rows
    # of the caches this model already made (reembed's, the refreshed one)
    encoded.clear()
    # (`set` given: dag.test() in one process keeps the DAG object, and with it the last run's `set`)
    again = bag.dags["freshen_cache_refresh"].test(
        run_conf={"orchestration.num_shards": 3, "set": {"encode.reuse": True}}
    )
    assert str(again.state) == "success", task_states(again)
    assert encoded == []
    reused = client.search_runs([exp.experiment_id], "tags.`freshen.unit` LIKE '%-of-3' and metrics.passes = 0")
    assert sorted(r.data.metrics["passes_saved"] for r in reused) == [20, 20, 20]
    np.testing.assert_array_equal(
        np.asarray(load_cache(root / orch["refresh_dir"]).embeddings), np.asarray(single.embeddings)
    )  # reembed's rows, copied

    # a new corpus version (3 removed, 4 edited, 5 added): freshen_corpus_update prepares it and
    # announces it; the refresh encodes those 9 documents only and stops serving the removed ones
    from freshen.integrity import file_sha256
    from test_corpus_versions import ADDED, EDITED, REMOVED, new_version

    same = bag.dags["freshen_corpus_update"].test()
    assert str(same.state) == "success" and task_states(same)[("publish_corpus", -1)][0] == "skipped"
    served_before = read_pointer(root / orch["serving_dir"])
    new_ids = new_version(tiny_params)
    update = bag.dags["freshen_corpus_update"].test()
    states = task_states(update)
    assert str(update.state) == "success" and {s for s, _ in states.values()} == {"success"}, states
    corpus_sha = file_sha256(root / tiny_params["data"]["out_dir"] / "corpus.jsonl")
    [announced] = asset_events("freshen_corpus")
    assert announced == {
        "corpus": tiny_params["data"]["name"],
        "corpus_sha256": corpus_sha,
        "served_corpus_sha256": served_before["corpus_sha256"],
        "served_folder": served_before["folder"],
        "docs": len(new_ids),
        "added": len(ADDED),
        "edited": len(EDITED),
        "removed": len(REMOVED),
        "unchanged": len(new_ids) - len(ADDED) - len(EDITED),
        "parent_run_id": next(
            r.info.run_id
            for r in client.search_runs([exp.experiment_id], "tags.`freshen.pipeline` = 'corpus'")
            if r.data.tags.get("airflow.run_id") == update.run_id
        ),
    }
    encoded.clear()
    fresh = bag.dags["freshen_cache_refresh"].test(run_conf={"orchestration.num_shards": 3, "set": {}})
    assert str(fresh.state) == "success", task_states(fresh)
    pointer = read_pointer(root / orch["serving_dir"])
    assert pointer["corpus_sha256"] == corpus_sha and pointer["folder"].endswith(corpus_sha[:8])
    assert load_cache(root / orch["serving_dir"] / pointer["folder"]).ids == new_ids  # no removed id left
    corrected_event, reembedded_event = asset_events("freshen_serving_index")[-2:]
    changed = len(ADDED) + len(EDITED)
    for event in (corrected_event, reembedded_event):
        assert (event["passes"], event["passes_saved"]) == (changed, len(new_ids) - changed)
        assert event["corpus_sha256"] == corpus_sha and event["refresh"]["policy"] == "always"
        assert event["reasons"]["trigger"] == "manual"  # dag.test(); the live check has the Asset-triggered run
    assert reembedded_event["rows"] == {"encoded": changed, "reused": len(new_ids) - changed, "corrected": 0}
    again = bag.dags["freshen_corpus_update"].test()  # the serving index holds this version now
    assert task_states(again)[("publish_corpus", -1)][0] == "skipped" and len(asset_events("freshen_corpus")) == 1

    # a worse challenger never takes champion, and publishes no Asset event
    worse = bag.dags["freshen_train"].test(run_conf={"train.steps": 2, "promote.min_improvement": 1.0})
    assert str(worse.state) == "success"
    assert task_states(worse)[("publish_champion", -1)][0] == "skipped"
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
    assert str(client.get_model_version_by_alias(name, "challenger").version) == "2"
    assert len(asset_events("freshen_champion")) == 1


def test_a_refresh_before_any_champion_is_skipped_not_failed(tmp_path, tiny_params, mlflow_uri, monkeypatch):
    """Unpausing the refresh DAG runs its latest cron tick at once: with no champion yet that run
    skips, once, instead of failing fetch_champion three times."""
    migrate_db()
    tiny_params["orchestration"].update(retries=2, retry_delay_s=0)
    monkeypatch.setenv("FRESHEN_PROJECT_DIR", str(project_with(tmp_path, tiny_params)))
    run = dagbag().dags["freshen_cache_refresh"].test()
    states = task_states(run)
    assert str(run.state) == "success", states
    assert states[("fetch_champion", -1)] == ("skipped", 1)
    assert states[("publish_index", -1)][0] == "skipped" and states[("end_run", -1)][0] == "success"
    assert not any(state == "failed" for state, _ in states.values())


def test_a_failing_step_fails_the_dag_run_and_the_mlflow_run(tmp_path, tiny_params, mlflow_uri, monkeypatch):
    import mlflow
    from mlflow.tracking import MlflowClient

    migrate_db()
    corpus = Path(tiny_params["data"]["local_dir"]) / "corpus.jsonl"
    lines = corpus.read_text().splitlines()
    lines[4] = '{"_id": "d4", "title": "x"}'
    corpus.write_text("\n".join(lines) + "\n")
    tiny_params["orchestration"].update(retries=2, retry_delay_s=0)
    monkeypatch.setenv("FRESHEN_PROJECT_DIR", str(project_with(tmp_path, tiny_params)))
    run = dagbag().dags["freshen_train"].test()
    states = task_states(run)
    assert str(run.state) == "failed"
    # bad data exits 2: failed at once, not retried (retries=2 would have tried it three times)
    assert states[("prepare", -1)] == ("failed", 1) and states[("train", -1)][0] == "upstream_failed"
    assert states[("end_run", -1)][0] == "success"  # the teardown still closes the MLflow run
    mlflow.set_tracking_uri(mlflow_uri)
    client = MlflowClient()
    exp = client.get_experiment_by_name("freshen")
    parent = next(r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("freshen.pipeline") == "train")
    assert parent.info.status == "FAILED"
