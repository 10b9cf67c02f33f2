"""freshen_corpus_update: prepare the corpus's new version and announce it to the refresh.

One task per step of the corpus pipeline (`freshen.orchestration.pipeline.CORPUS`, below): the
dataset at data.source / data.local_dir is prepared again (checked, as in training). Then
publish_corpus updates the `freshen_corpus` Asset when the prepared corpus is not the version
the serving index holds, with the documents added, edited and removed, which triggers
freshen_cache_refresh; skipped otherwise. Runs on orchestration.corpus_cron, or when triggered
(by hand, by the REST API, by an upstream DAG). See docs/orchestration.md."""

from datetime import datetime, timezone

from airflow.sdk import dag
from freshen.orchestration import airflow_tasks as ft
from freshen.orchestration.dag_params import RUN_PARAMS, dag_params
from freshen.orchestration.pipeline import CORPUS

project = ft.load_project(__file__)


@dag(
    dag_id=CORPUS.dag_id,
    schedule=ft.corpus_schedule(project),
    start_date=datetime(2025, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    params=dag_params(project, RUN_PARAMS[CORPUS.kind]),
    default_args=ft.default_args(project),
    tags=["freshen"],
    doc_md=ft.doc_md(CORPUS, __doc__),
)
def freshen_corpus_update():
    run = ft.start_run(project, CORPUS.kind)
    steps = ft.steps(project, CORPUS, run)
    publish = ft.publish_corpus(project, run)
    for name in CORPUS.last():
        steps[name] >> publish
    publish >> ft.end_run(project, run)


freshen_corpus_update()
