"""docs/params.md, made from the schema: one table per section, a row per field."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from freshen.params.schema import Params

HEADER = """# params.yaml reference

Generated from the schema in `components/freshen/params/` by `python -m freshen.params --markdown >
docs/params.md`; do not edit by hand. Defaults are the committed params.yaml's values. Override any
key with `freshen <step> --set key=value`, `--set-json '{"key": value}'` or `$FRESHEN_SET` (see
`components/freshen/params/loading.py` for the order); `freshen params` prints the effective values.
"""


def markdown() -> str:
    top = [(name, f) for name, f in Params.model_fields.items() if not _is_section(f.annotation)]
    out = [HEADER, "## Top level\n", "| key | default | description |", "|---|---|---|"]
    out += [_row(name, f) for name, f in top]
    for name, f in Params.model_fields.items():
        if _is_section(f.annotation):
            out += ["", f"## `{name}`\n", f"{f.description}\n", "| key | default | description |", "|---|---|---|"]
            out += _rows(f.annotation, f"{name}.")
    return "\n".join(out) + "\n"


def _rows(model: type[BaseModel], prefix: str) -> list[str]:
    rows = []
    for name, f in model.model_fields.items():
        if _is_section(f.annotation):
            rows.append(f"| `{prefix}{name}.*` | | {f.description} |")
            rows += _rows(f.annotation, f"{prefix}{name}.")
        else:
            rows.append(_row(prefix + name, f))
    return rows


def _row(key: str, f: Any) -> str:
    default = json.dumps(f.get_default(call_default_factory=True))
    return f"| `{key}` | `{default}` | {f.description.replace('|', '/')} |".replace("`` ", "")


def _is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)
