"""The building blocks of the DAGs in dags/. `steps()` adds one task per step of a pipeline of
freshen.orchestration.pipeline, with its edges; a step is `freshen <step>`, run where
orchestration.runner says. The MLflow parent run is opened by `start_run`, whose XCom
(parent run id + the run's overrides as JSON) every step receives, and closed by `end_run`.

A DAG run's params, and the overrides every step gets from them: `dag_params`."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

from airflow.sdk import Asset, AssetOrTimeSchedule, CronTriggerTimetable, task, teardown
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from freshen.orchestration import config, events, runs
from freshen.orchestration.commands import StepFailed, StepSkipped
from freshen.orchestration.dag_params import run_overrides, run_params
from freshen.orchestration.pipeline import Pipeline, cli_argv, steps_table
from freshen.orchestration.runners import XCOM_FIELD, container_operator, run_local


def load_project(dag_file: str) -> config.Project:
    """The project a DAG file belongs to: $FRESHEN_PROJECT_DIR, else the folder above dags/."""
    project = config.load_project(Path(dag_file).resolve().parents[1])
    return project


def doc_md(pipeline: Pipeline, intro: str) -> str:
    """The DAG's documentation in the UI: the DAG file's docstring, then the pipeline's steps."""
    return f"{intro.strip()}\n\n{steps_table(pipeline)}"


def default_args(project: config.Project) -> dict:
    return {"retries": project.orch["retries"], "retry_delay": timedelta(seconds=float(project.orch["retry_delay_s"]))}


def champion_asset(project: config.Project) -> Asset:
    """Updated whenever `champion` moves to a new version; the refresh DAG is scheduled on it."""
    return Asset(name=events.CHAMPION, uri=f"x-freshen://champion/{project.registered_model}")


def corpus_asset(project: config.Project) -> Asset:
    """Updated whenever a new version of the corpus is prepared (freshen_corpus_update, or any
    producer posting an event for it); the refresh DAG is scheduled on it too."""
    return Asset(name=events.CORPUS, uri=f"x-freshen://corpus/{project.params.data.name}")


def serving_asset(project: config.Project) -> Asset:
    """Updated whenever the serving index changes (corrected first, then re-embedded)."""
    return Asset(name=events.SERVING, uri="x-freshen://serving-index")


def refresh_schedule(project: config.Project):
    """On orchestration.refresh_cron, or when the champion or the corpus changes."""
    assets = champion_asset(project) | corpus_asset(project)
    cron = project.orch["refresh_cron"]
    if not cron:
        return assets
    return AssetOrTimeSchedule(timetable=CronTriggerTimetable(cron, timezone="UTC"), assets=assets)


def corpus_schedule(project: config.Project):
    cron = project.orch["corpus_cron"]
    return CronTriggerTimetable(cron, timezone="UTC") if cron else None


def triggering_events(context) -> dict[str, list[dict]]:
    """The Asset events that started this run, by Asset name (empty for a cron tick or by hand)."""
    found = context.get("triggering_asset_events") or {}
    return {asset.name: [dict(e.extra or {}) for e in found[asset]] for asset in found}


def _tracking_env(project: config.Project) -> None:
    """Worker-side MLflow calls talk to the same server as the step containers."""
    if project.orch["mlflow_tracking_uri"]:
        os.environ["MLFLOW_TRACKING_URI"] = project.orch["mlflow_tracking_uri"]


def start_run(project: config.Project, kind: str):
    @task(task_id="start_run", retries=0)
    def start_run(**context) -> dict:
        overrides = run_overrides(project, context["params"])
        ctx = {"set_json": json.dumps(overrides, sort_keys=True)}
        params = run_params(project, ctx)  # an unknown key fails here, before any work
        _tracking_env(project)
        ti = context["ti"]
        tags = {"airflow.dag_id": ti.dag_id, "airflow.run_id": ti.run_id}
        if kind == "refresh":  # why it runs: a new champion, a new corpus version, the cron, by hand
            run_type = context["dag_run"].run_type
            ctx["reasons"] = events.refresh_reasons(
                getattr(run_type, "value", str(run_type)), triggering_events(context)
            )
            tags.update({"freshen.refresh.trigger": ctx["reasons"]["trigger"]})
            tags.update({"freshen.refresh.reasons": ctx["reasons"]["summary"][:5000]})
        info = runs.start(params, project.root, kind, tags)
        return {**ctx, **info, "num_shards": params.orchestration.num_shards}

    return start_run()


def _local(project: config.Project, argv: list[str]) -> None:
    try:
        run_local(argv, project.orch["local_mode"])
    except StepSkipped as exc:
        raise AirflowSkipException(str(exc)) from None
    except StepFailed as exc:
        if exc.deterministic:  # bad params or data: a retry would fail the same way, minutes later
            raise AirflowFailException(f"{exc} (bad params or data: not retried)") from None
        raise


def steps(project: config.Project, pipeline: Pipeline, ctx) -> dict:
    """One task per step of `pipeline`, each after the steps its `after` names; every step reads
    `ctx` (start_run's XCom). Returns the tasks by step name."""
    tasks: dict = {}
    for s in pipeline.steps:
        if s.mapped:
            task = mapped_step(project, s.name, plan_shards(project, ctx, s.name))
        else:
            task = step(
                project,
                s.name,
                ctx,
                outlets=[serving_asset(project)] if s.serves else (),
                trigger_rule="none_failed" if s.after_skipped else None,
            )
        for upstream in s.after:
            tasks[upstream] >> task
        tasks[s.name] = task
    return tasks


def step(project: config.Project, name: str, ctx, outlets=(), trigger_rule: str | None = None):
    """The task running `freshen <name>` for this DAG run, wherever orchestration.runner says."""
    kwargs = {"task_id": name, "outlets": list(outlets)}
    options = project.step_options(name)  # --nproc N: training on N GPUs
    if trigger_rule:
        kwargs["trigger_rule"] = trigger_rule
    if project.runner == "local":
        serving = serving_asset(project)

        @task(**kwargs)
        def local_step(ctx: dict, **context) -> None:
            argv = cli_argv(
                name, project.cli_root(), project.params_file, ctx["parent_run_id"], ctx["set_json"], options
            )
            _local(project, argv)
            if serving in kwargs["outlets"]:
                extra = events.serving_event(run_params(project, ctx), project.root, ctx.get("reasons"))
                context["outlet_events"][serving].extra = extra

        return local_step(ctx)
    argv = cli_argv(
        name,
        project.cli_root(),
        project.params_file,
        XCOM_FIELD.format(key="parent_run_id"),
        XCOM_FIELD.format(key="set_json"),
        options,
    )
    op = container_operator(project, name, argv=argv, **kwargs)
    ctx >> op
    return op


def plan_shards(project: config.Project, ctx, name: str):
    """One argument list per shard of the mapped step `name`; K is orchestration.num_shards of this run."""

    @task(task_id="plan_shards")
    def plan_shards(ctx: dict) -> list[list[str]]:
        count = int(ctx["num_shards"])
        return [
            cli_argv(
                name,
                project.cli_root(),
                project.params_file,
                ctx["parent_run_id"],
                ctx["set_json"],
                {"shard": i, "num_shards": count},
            )
            for i in range(count)
        ]

    return plan_shards(ctx)


def mapped_step(project: config.Project, name: str, plan):
    """`freshen <name>` once per item of `plan` (dynamic task mapping)."""
    if project.runner == "local":

        @task(task_id=name)
        def local_mapped(argv: list[str]) -> None:
            _local(project, argv)

        return local_mapped.expand(argv=plan)
    return container_operator(project, name, plan=plan, task_id=name)


def publish_champion(project: config.Project, ctx):
    """Emit the champion Asset when this run moved `champion`; skipped (no event) otherwise."""
    asset = champion_asset(project)

    @task(task_id="publish_champion", outlets=[asset])
    def publish_champion(ctx: dict, **context) -> dict:
        params = run_params(project, ctx)
        _tracking_env(project)
        from freshen import tracking

        mlflow = tracking.setup(project.root, params.mlflow.experiment)
        name = params.promote.registered_model
        now = runs.champion_version(mlflow.tracking.MlflowClient(), name)
        if now is None or now == ctx["champion_before"]:
            raise AirflowSkipException(f"champion of {name} unchanged (v{now}): no Asset event")
        extra = {
            "registered_model": name,
            "version": now,
            "previous": ctx["champion_before"],
            "parent_run_id": ctx["parent_run_id"],
        }
        context["outlet_events"][asset].extra = extra
        return extra

    return publish_champion(ctx)


def publish_corpus(project: config.Project, ctx):
    """Emit the corpus Asset when the prepared corpus is not the version the serving index holds
    (its extra: the new version's digest, documents added / edited / removed); skipped otherwise.
    Runs on the worker, which reads the project folder (as with the local runner)."""
    asset = corpus_asset(project)

    @task(task_id="publish_corpus", outlets=[asset])
    def publish_corpus(ctx: dict, **context) -> dict:
        extra, why_not = events.corpus_change(run_params(project, ctx), project.root)
        if extra is None:
            raise AirflowSkipException(f"no corpus Asset event: {why_not}")
        context["outlet_events"][asset].extra = {**extra, "parent_run_id": ctx["parent_run_id"]}
        return extra

    return publish_corpus(ctx)


def record_outputs(project: config.Project, ctx, stages: tuple[str, ...]):
    """`dvc commit` of the train stages after a run that made what dvc.yaml gives (params.yaml
    as it is), so `dvc status` is clean; skipped, saying why, otherwise (freshen.dvc_repo)."""

    @task(task_id="record_outputs")
    def record_outputs(ctx: dict) -> list[str]:
        from freshen import dvc_repo

        enabled = run_params(project, ctx).orchestration.dvc.enabled
        reason = dvc_repo.why_not_recorded(project.root, json.loads(ctx["set_json"]), enabled)
        if reason:
            raise AirflowSkipException(f"outputs not recorded in dvc.lock: {reason}")
        return dvc_repo.commit_outputs(project.root, list(stages))

    return record_outputs(ctx)


def end_run(project: config.Project, ctx):
    """Close the MLflow parent run (teardown: runs whatever happened upstream)."""

    @teardown
    def end_run(ctx: dict, **context) -> dict:
        ti = context["ti"]
        states = ti.get_task_states(dag_id=ti.dag_id, run_ids=[ti.run_id]).get(ti.run_id, {})
        failed = sorted(t for t, s in states.items() if s in ("failed", "upstream_failed"))
        _tracking_env(project)
        return runs.end(run_params(project, ctx), project.root, ctx["parent_run_id"], failed)

    return end_run(ctx)
