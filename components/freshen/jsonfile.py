"""Reading the small JSON files Freshen writes beside its artifacts (manifests, configs): a
damaged or hand-edited one is a DataError naming the file, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

from freshen.errors import DataError

KINDS = {dict: "object", list: "list"}


def json_message(exc: json.JSONDecodeError, line: bool = True) -> str:
    """json's message and where: "Expecting value at line 1 column 5", "Unterminated string
    starting at line 2 column 9" (that message already ends in "at")."""
    at = "" if exc.msg.endswith(" at") else " at"
    where = f"line {exc.lineno} column {exc.colno}" if line else f"column {exc.colno}"
    return f"{exc.msg}{at} {where}"


def read_json(path: str | Path, expect: type | None = dict):
    """The JSON value in `path`; with `expect` (dict or list) it must be of that type."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(path, f"not valid UTF-8 (byte {exc.start + 1})") from None
    if not text.strip():
        raise DataError(path, "not valid JSON (the file is empty)")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(path, f"not valid JSON ({json_message(exc)})") from None
    if expect is not None and not isinstance(value, expect):
        raise DataError(path, f"must be a JSON {KINDS[expect]}, got a {type(value).__name__}")
    return value
