"""The DAGs' expected tasks and edges (upstream, downstream): the steps and edges of
freshen.orchestration.pipeline, plus what Airflow adds around them: start_run before every task
that reads its XCom, plan_shards before the mapped step, publish_champion and record_outputs
after the train pipeline, publish_corpus after the corpus pipeline, end_run last."""

from freshen.orchestration.pipeline import CORPUS, REFRESH, TRAIN

TRAIN_STEPS = TRAIN.names
AFTER_TRAIN = ("publish_champion", "record_outputs")
TRAIN_TASKS = {"start_run", *TRAIN_STEPS, *AFTER_TRAIN, "end_run"}
TRAIN_EDGES = (
    {("start_run", t) for t in TRAIN_TASKS - {"start_run"}}
    | TRAIN.edges()
    | {(last, after) for last in TRAIN.last() for after in AFTER_TRAIN}
    | {(after, "end_run") for after in AFTER_TRAIN}
)

MAPPED = {s.name for s in REFRESH.steps if s.mapped}
REFRESH_TASKS = {"start_run", *REFRESH.names, "plan_shards", "end_run"}
REFRESH_EDGES = (
    {("start_run", t) for t in REFRESH_TASKS - {"start_run", *MAPPED}}
    | REFRESH.edges()
    | {("plan_shards", m) for m in MAPPED}
    | {(last, "end_run") for last in REFRESH.last()}
)

CORPUS_TASKS = {"start_run", *CORPUS.names, "publish_corpus", "end_run"}
CORPUS_EDGES = (
    {("start_run", t) for t in CORPUS_TASKS - {"start_run"}}
    | CORPUS.edges()
    | {(last, "publish_corpus") for last in CORPUS.last()}
    | {("publish_corpus", "end_run")}
)


def edges_of(dag) -> set[tuple[str, str]]:
    return {(up, down) for up, task in dag.task_dict.items() for down in task.downstream_task_ids}
