"""freshen_train: train a retriever and its corrector and promote it through the MLflow registry.

One task per step of the train pipeline (`freshen.orchestration.pipeline.TRAIN`, below), each
`freshen <step>` run where orchestration.runner (params.yaml) says, after `start_run` opened the
MLflow parent run. Params of a run override params.yaml keys. After the last step,
publish_champion updates the `freshen_champion` Asset only when `champion` moved, which triggers
freshen_cache_refresh; record_outputs records the outputs in dvc.lock (`dvc commit`) when the
run made what params.yaml gives; end_run closes the parent run. See docs/orchestration.md."""

from datetime import datetime, timezone

from airflow.sdk import dag
from freshen.orchestration import airflow_tasks as ft
from freshen.orchestration.dag_params import RUN_PARAMS, dag_params
from freshen.orchestration.pipeline import TRAIN

project = ft.load_project(__file__)


@dag(
    dag_id=TRAIN.dag_id,
    schedule=None,
    start_date=datetime(2025, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    params=dag_params(project, RUN_PARAMS[TRAIN.kind]),
    default_args=ft.default_args(project),
    tags=["freshen"],
    doc_md=ft.doc_md(TRAIN, __doc__),
)
def freshen_train():
    run = ft.start_run(project, TRAIN.kind)
    steps = ft.steps(project, TRAIN, run)
    after = [ft.publish_champion(project, run), ft.record_outputs(project, run, TRAIN.names)]
    for name in TRAIN.last():
        steps[name] >> after
    after >> ft.end_run(project, run)


freshen_train()
