"""Pydantic's validation errors as Freshen's one-line messages: the dotted field and what is wrong."""

from __future__ import annotations

from typing import Any

from freshen.params.base import FieldProblem

MESSAGES = {"extra_forbidden": "unknown key (see docs/params.md for the keys there are)"}


def describe(error: dict[str, Any]) -> tuple[str, str]:
    """(dotted field, message) of one pydantic error."""
    loc = [str(part) for part in error["loc"]]
    message = MESSAGES.get(error["type"], error["msg"])
    problem = (error.get("ctx") or {}).get("error")
    if isinstance(problem, FieldProblem):
        loc += problem.field.split(".")
        message = str(problem)
    elif error["type"] == "value_error":
        message = message.removeprefix("Value error, ")
    if error["type"] not in ("extra_forbidden", "missing", "value_error") and _short(error):
        message += f", got {error['input']!r}"
    return ".".join(loc), message


def _short(error: dict[str, Any]) -> bool:
    """Whether the rejected value is worth repeating in the message (a scalar, not a whole section)."""
    return isinstance(error.get("input"), (str, int, float, bool, type(None)))
