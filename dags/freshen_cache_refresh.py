"""freshen_cache_refresh: re-embed the corpus with the champion and publish a fresh index.

Runs on orchestration.refresh_cron and whenever the `freshen_champion` Asset is updated.

    start_run >> fetch_champion >> corrected_index ------------------------------+
                 fetch_champion >> reembed_shard[K] (plan_shards) >> merge_shards  |
                 >> build_index >> version_cache >> publish_index <----------------+ >> end_run

corrected_index serves the champion at once (its corrector over the old cache); publish_index
replaces that with the real re-embedding. Both update the `freshen_serving_index` Asset.
version_cache (`dvc add`) is skipped when orchestration.dvc.enabled is false."""

from datetime import datetime, timezone

from airflow.sdk import dag

from freshen.orchestration import airflow_tasks as ft

project = ft.load_project(__file__)


@dag(dag_id="freshen_cache_refresh", schedule=ft.refresh_schedule(project),
     start_date=datetime(2025, 1, 1, tzinfo=timezone.utc), catchup=False, max_active_runs=1,
     params=ft.dag_params(project, ft.REFRESH_PARAMS), default_args=ft.default_args(project),
     tags=["freshen"], doc_md=__doc__)
def freshen_cache_refresh():
    run = ft.start_run(project, "refresh")
    champion = ft.step(project, "fetch_champion", run)
    corrected = ft.step(project, "corrected_index", run, outlets=[ft.serving_asset(project)])
    shards = ft.mapped_step(project, "reembed_shard", ft.plan_shards(project, run))
    merged = ft.step(project, "merge_shards", run)
    index = ft.step(project, "build_index", run)
    versioned = ft.step(project, "version_cache", run)
    published = ft.step(project, "publish_index", run, outlets=[ft.serving_asset(project)],
                        trigger_rule="none_failed")

    champion >> corrected >> published
    champion >> shards >> merged >> index >> versioned >> published
    published >> ft.end_run(project, run)


freshen_cache_refresh()
