"""The DAGs as docs/orchestration.md documents them: task ids and edges (upstream, downstream)."""

TRAIN_STEPS = ("prepare", "cluster_queries", "embed_cache", "train", "reembed", "evaluate", "promote")
TRAIN_TASKS = {"start_run", *TRAIN_STEPS, "publish_champion", "end_run"}
TRAIN_EDGES = {("start_run", t) for t in TRAIN_TASKS - {"start_run"}} | {
    ("prepare", "cluster_queries"), ("prepare", "embed_cache"), ("cluster_queries", "train"),
    ("embed_cache", "train"), ("train", "reembed"), ("reembed", "evaluate"), ("evaluate", "promote"),
    ("promote", "publish_champion"), ("publish_champion", "end_run")}

REFRESH_TASKS = {"start_run", "fetch_champion", "corrected_index", "plan_shards", "reembed_shard", "merge_shards",
                 "build_index", "version_cache", "publish_index", "end_run"}
REFRESH_EDGES = {("start_run", t) for t in REFRESH_TASKS - {"start_run", "reembed_shard"}} | {
    ("fetch_champion", "corrected_index"), ("fetch_champion", "reembed_shard"), ("plan_shards", "reembed_shard"),
    ("reembed_shard", "merge_shards"), ("merge_shards", "build_index"), ("build_index", "version_cache"),
    ("version_cache", "publish_index"), ("corrected_index", "publish_index"), ("publish_index", "end_run")}


def edges_of(dag) -> set[tuple[str, str]]:
    return {(up, down) for up, task in dag.task_dict.items() for down in task.downstream_task_ids}
