"""freshen_cache_refresh: re-embed the corpus with the champion and publish a fresh index.

One task per step of the refresh pipeline (`freshen.orchestration.pipeline.REFRESH`, below),
between start_run and end_run; the sharded step is mapped over plan_shards' argument lists
(K = orchestration.num_shards). Runs on orchestration.refresh_cron and whenever the
`freshen_champion` Asset is updated. corrected_index serves the champion at once (its corrector
over the old cache); publish_index replaces that with the real re-embedding; both update the
`freshen_serving_index` Asset. See docs/orchestration.md."""

from datetime import datetime, timezone

from airflow.sdk import dag
from freshen.orchestration import airflow_tasks as ft
from freshen.orchestration.dag_params import RUN_PARAMS, dag_params
from freshen.orchestration.pipeline import REFRESH

project = ft.load_project(__file__)


@dag(
    dag_id=REFRESH.dag_id,
    schedule=ft.refresh_schedule(project),
    start_date=datetime(2025, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    params=dag_params(project, RUN_PARAMS[REFRESH.kind]),
    default_args=ft.default_args(project),
    tags=["freshen"],
    doc_md=ft.doc_md(REFRESH, __doc__),
)
def freshen_cache_refresh():
    run = ft.start_run(project, REFRESH.kind)
    steps = ft.steps(project, REFRESH, run)
    [steps[name] for name in REFRESH.last()] >> ft.end_run(project, run)


freshen_cache_refresh()
