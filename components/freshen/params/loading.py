"""Loading params: the file, then every override channel, then one validation.

The channels, in the order they are applied (a later one wins on the same key):

1. the params file (params.yaml);
2. `$FRESHEN_SET`: a JSON object of dotted keys, this deployment's settings (e.g. the compose stack's runner);
3. `--set-json '{"train.steps": 5}'`: one JSON object of dotted keys (what Airflow and Kubeflow pass a step);
4. `--set train.steps=5` (repeatable): the value is parsed as YAML.

Nothing is checked until all are applied; then the result is validated once against the schema,
so a bad key or value fails the same way whichever channel set it, before any work, with one line
naming where it came from: `params.yaml:57: train.lr: ...` or `--set train.lr: ...`."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from freshen.errors import FreshenError
from freshen.params.errors import describe
from freshen.params.schema import Params

SET_ENV = "FRESHEN_SET"


class Loader(yaml.SafeLoader):
    """YAML as DVC reads params.yaml: also `1e-4` (no dot) is a number, as in YAML 1.2, not text."""


EXPONENT_FLOAT = re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$")
Loader.add_implicit_resolver("tag:yaml.org,2002:float", EXPONENT_FLOAT, list("-+0123456789."))


@dataclass(frozen=True)
class Override:
    """One dotted key set by one channel (`--set`, `--set-json`, `$FRESHEN_SET`)."""

    channel: str
    key: str
    value: Any

    @property
    def parts(self) -> list[str]:
        return self.key.split(".")


def load_params(
    path: str | Path = "params.yaml",
    sets: Iterable[str] = (),
    set_json: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Params:
    """The effective params: the file, `$FRESHEN_SET` (from `environ`, default os.environ), `--set-json`,
    `--set`, in that order, validated once."""
    raw, lines = read_file(Path(path))
    overrides = [
        *env_overrides(os.environ if environ is None else environ),
        *json_overrides(set_json, "--set-json"),
        *set_overrides(sets),
    ]
    return validate(raw, overrides, str(path), lines)


def validate_params(raw: dict, source: str = "params") -> Params:
    """A plain mapping (e.g. a test's params) validated; errors name `source` and the dotted field."""
    return validate(raw, [], source, {})


def with_overrides(params: Params, values: Mapping[str, Any], channel: str = "--set-json") -> Params:
    """`params` with dotted overrides applied, validated again (an Airflow run's overrides)."""
    overrides = [Override(channel, str(key), value) for key, value in values.items()]
    return validate(params.model_dump(), overrides, "params", {})


def read_file(path: Path) -> tuple[dict, dict[str, int]]:
    """(the file's mapping, the 1-based line of each dotted key in it)."""
    if not path.is_file():
        raise FreshenError(f"{path}: params file not found (pass --params PATH)")
    loader = Loader(path.read_text(encoding="utf-8"))
    try:
        node = loader.get_single_node()
        raw = loader.construct_document(node) if node is not None else {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise FreshenError(f"{where}: not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
    finally:
        loader.dispose()
    if not isinstance(raw, dict):
        raise FreshenError(f"{path}:1: the top level must be a mapping of sections")
    lines: dict[str, int] = {}
    _note_lines(node, "", lines)
    return raw, lines


def _note_lines(node: yaml.Node, prefix: str, lines: dict[str, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            dotted = f"{prefix}{key.value}"
            lines[dotted] = key.start_mark.line + 1
            _note_lines(value, dotted + ".", lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[f"{prefix}{i}"] = item.start_mark.line + 1
            _note_lines(item, f"{prefix}{i}.", lines)


def env_overrides(environ: Mapping[str, str]) -> list[Override]:
    """`$FRESHEN_SET` as overrides ([] when unset)."""
    return json_overrides(environ.get(SET_ENV), f"${SET_ENV}")


def json_overrides(raw: str | None, channel: str) -> list[Override]:
    """A JSON object of dotted keys as overrides ([] for None or "")."""
    if not raw:
        return []
    try:
        values = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise FreshenError(f"{channel}: not valid JSON ({exc})") from None
    if not isinstance(values, dict):
        raise FreshenError(f"{channel}: must be a JSON object of dotted keys, got {raw!r}")
    return [Override(channel, key, value) for key, value in values.items()]


def set_overrides(items: Iterable[str]) -> list[Override]:
    """`--set key=value` items as overrides; each value is parsed as YAML (`5`, `null`, `[a, b]`)."""
    out = []
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise FreshenError(f"--set {item}: must look like key.sub=value")
        try:
            value = yaml.load(text, Loader=Loader)
        except yaml.YAMLError:
            raise FreshenError(f"--set {key.strip()}: the value is not valid YAML: {text!r}") from None
        out.append(Override("--set", key.strip(), value))
    return out


def validate(raw: dict, overrides: list[Override], source: str, lines: dict[str, int]) -> Params:
    """Apply `overrides` to `raw` in order, then validate once; errors name the channel or the file line."""
    for override in overrides:
        _put(raw, override)
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        field, message = describe(errors[0])
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise FreshenError(f"{where_set(field, overrides, source, lines)}: {message}{more}") from None


def _put(raw: dict, override: Override) -> None:
    node = raw
    for part in override.parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise FreshenError(f"{override.channel} {override.key}: '{part}' is not a section")
    node[override.parts[-1]] = override.value


def where_set(field: str, overrides: list[Override], source: str, lines: dict[str, int]) -> str:
    """'CHANNEL KEY' when the last override touching `field` set it, else 'FILE:LINE: FIELD'."""
    parts = field.split(".")
    for override in reversed(overrides):
        n = min(len(parts), len(override.parts))
        if parts[:n] == override.parts[:n]:
            return f"{override.channel} {field if len(parts) >= len(override.parts) else override.key}"
    for n in range(len(parts), 0, -1):
        line = lines.get(".".join(parts[:n]))
        if line is not None:
            return f"{source}:{line}: {field}"
    return f"{source}: {field}"
