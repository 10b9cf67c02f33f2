"""What every params section shares: strict types, no unknown keys, a description per field."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Section(BaseModel):
    """A mapping of params.yaml. Strict: `steps: "5"` or `steps: 5.5` is an error, not a guess
    (an integer is accepted where a number is expected); an unknown key is an error."""

    model_config = ConfigDict(strict=True, extra="forbid", validate_default=False)


def doc(default: Any, description: str, **constraints: Any) -> Any:
    """A field with its default and its one-line description (docs/params.md is made from these)."""
    return Field(default, description=description, **constraints)


def section(cls: type[Section], description: str) -> Any:
    """A sub-section field whose default is the section's own defaults."""
    return Field(default_factory=cls, description=description)


class FieldProblem(ValueError):
    """A cross-field check failed; `field` is the dotted path, relative to the section that checked it."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
