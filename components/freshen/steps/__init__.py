"""One module per pipeline step. Each exposes `run(params, root, log) -> dict` (the step's
summary metrics) and `SECTIONS` (the params it reads); `freshen.cli` is the thin driver."""

STEP_NAMES = ("prepare", "cluster_queries", "embed_cache", "train", "reembed", "evaluate", "promote")
