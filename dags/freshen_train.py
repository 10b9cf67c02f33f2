"""freshen_train: train a retriever and its corrector and promote it through the MLflow registry.

    start_run >> prepare >> [cluster_queries, embed_cache] >> train >> reembed >> evaluate
              >> promote >> publish_champion >> end_run

Every step is `freshen <step>`, run where orchestration.runner (params.yaml) says. Params of a
run override params.yaml keys. publish_champion updates the `freshen_champion` Asset only when
`champion` moved, which triggers freshen_cache_refresh. See docs/orchestration.md."""

from datetime import datetime, timezone

from airflow.sdk import dag

from freshen.orchestration import airflow_tasks as ft

project = ft.load_project(__file__)


@dag(dag_id="freshen_train", schedule=None, start_date=datetime(2025, 1, 1, tzinfo=timezone.utc), catchup=False,
     max_active_runs=1, params=ft.dag_params(project, ft.TRAIN_PARAMS), default_args=ft.default_args(project),
     tags=["freshen"], doc_md=__doc__)
def freshen_train():
    run = ft.start_run(project, "train")
    prepare = ft.step(project, "prepare", run)
    clusters = ft.step(project, "cluster_queries", run)
    stale_cache = ft.step(project, "embed_cache", run)
    trained = ft.step(project, "train", run)
    fresh_cache = ft.step(project, "reembed", run)
    scores = ft.step(project, "evaluate", run)
    promoted = ft.step(project, "promote", run)
    champion = ft.publish_champion(project, run)

    prepare >> [clusters, stale_cache]
    [clusters, stale_cache] >> trained >> fresh_cache >> scores >> promoted >> champion
    champion >> ft.end_run(project, run)


freshen_train()
