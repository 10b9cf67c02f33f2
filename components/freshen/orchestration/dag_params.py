"""What a DAG run is given: DAG-run params (airflow.sdk Param) are dotted params.yaml keys, a
value overriding that key for this run and null keeping params.yaml; `set` takes any other keys
as a JSON object. Every step of the run receives the same overrides (`run_overrides`)."""

from __future__ import annotations

import json

from airflow.sdk import Param

from freshen.config import flatten, get_dotted
from freshen.errors import DataError
from freshen.orchestration import config
from freshen.params import Params, with_overrides

# the params.yaml keys each DAG offers as run params (by Pipeline.kind)
RUN_PARAMS = {
    "train": (
        "train.steps",
        "train.batch_size",
        "train.lr",
        "train.negatives.strategy",
        "train.negatives.k",
        "promote.min_improvement",
        "promote.min_improvement_over_zero_shot",
    ),
    "refresh": ("orchestration.num_shards", "orchestration.dvc.enabled", "orchestration.dvc.push", "encode.batch_size"),
    "corpus": (),  # the new version is where params.yaml says (data.source, data.local_dir)
}
JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}


def dag_params(project: config.Project, keys) -> dict:
    out = {}
    for key in keys:
        try:
            value = get_dotted(project.params.model_dump(), key)
        except (KeyError, TypeError):
            raise DataError(project.params_path, "missing (the DAG exposes it as a param)", field=key) from None
        kind = JSON_TYPES.get(type(value), "string")
        types = ["null", kind] + (["integer"] if kind == "number" else [])
        out[key] = Param(
            None, type=types, description=f"overrides {key} for this run (params.yaml: {value!r}; empty keeps it)"
        )
    out["set"] = Param({}, type="object", description='any other params.yaml keys, e.g. {"train.temperature": 0.1}')
    return out


def run_overrides(project: config.Project, dag_run_params: dict) -> dict:
    """What every step of one DAG run is given with --set-json: the deployment's $FRESHEN_SET,
    then this run's params on top. Steps load params.yaml themselves (in containers too), so an
    override the DAG saw but the steps did not would split one run between two configurations."""
    return {**project.overrides, **overrides_from(dag_run_params)}


def overrides_from(dag_run_params: dict) -> dict:
    """Dotted overrides from a run's params: `set` first, then every non-null dotted param.
    A form that nests dotted names ({"train": {"steps": 5}}) is flattened back to "train.steps"."""
    values = dict(dag_run_params.get("set") or {})
    for key, value in dag_run_params.items():
        if key == "set":
            continue
        flat = flatten({key: value}) if isinstance(value, dict) else {key: value}
        values.update({k: v for k, v in flat.items() if v is not None})
    return values


def run_params(project: config.Project, ctx: dict) -> Params:
    """params.yaml with this DAG run's overrides, as the steps see them."""
    return with_overrides(project.params, json.loads(ctx.get("set_json") or "{}"))
