"""Errors that stop a step with a message a user can act on."""

from __future__ import annotations


class FreshenError(Exception):
    """Any error the CLI reports as one line, without a traceback."""


class DataError(FreshenError):
    """Bad input: names the file, the line (1-based, when there is one) and the field."""

    def __init__(self, path, message: str, line: int | None = None, field: str | None = None):
        self.path, self.line, self.field = str(path), line, field
        where = self.path if line is None else f"{self.path}:{line}"
        what = f" field '{field}':" if field else ""
        super().__init__(f"{where}:{what} {message}")
