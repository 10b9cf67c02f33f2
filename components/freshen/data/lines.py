"""Reading a text file line by line, with every problem reported at its file and line."""

from __future__ import annotations

from pathlib import Path

from freshen.errors import DataError

BOM = "\ufeff"


def read_lines(path: Path):
    """(line number, byte offset, text) per line of a UTF-8 file, line ending kept; a BOM
    starting the file is dropped, and bytes that are not UTF-8 are reported with their line."""
    offset = 0
    with open(path, "rb") as fh:
        for lineno, raw_bytes in enumerate(fh, start=1):
            at, offset = offset, offset + len(raw_bytes)
            try:
                text = raw_bytes.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(path, f"not valid UTF-8 (byte {exc.start + 1})", lineno) from None
            yield lineno, at, text.removeprefix(BOM) if lineno == 1 else text


def check_id_text(path: Path, lineno: int, field_name: str, key: str) -> None:
    """An id is written into TREC run files, whose fields are separated by whitespace."""
    if key == "":
        raise DataError(path, "empty: an id is needed", lineno, field_name)
    if any(ch.isspace() for ch in key):
        raise DataError(path, f"must not contain whitespace (space, tab, newline), got {key!r}", lineno, field_name)
