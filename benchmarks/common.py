"""What every benchmark report shares: the repository root, the machine line, the command line
that made the report, and writing the report (atomically, keeping its hand-written notes)."""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

from freshen import atomic

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
# a report's hand-written part starts at this line; regenerating the report keeps it
NOTES_MARKER = "<!-- Notes below are written by hand and kept when this report is regenerated. -->"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what `platform` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def gpu() -> str | None:
    """The first CUDA device's name, "no GPU", or None when torch is not imported: a benchmark
    that never uses torch in its own process does not pay for importing it, and its report says
    nothing about a GPU rather than something unchecked."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"


def machine() -> str:
    """One line for a report's `Machine:` field."""
    parts = [cpu_model(), f"{cores()} cores"]
    if hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        parts.append(f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM")
    if gpu() is not None:
        parts.append(gpu())
    return ", ".join([*parts, f"python {platform.python_version()}"])


def command_line(module: str, argv: list[str] | None = None) -> str:
    """How a benchmark was called, as a report's `Command:` line shows it: `module` is the
    benchmark's name (e.g. "ablation"), `argv` its arguments (default: this process's)."""
    args = sys.argv[1:] if argv is None else argv
    return " ".join(["python -m", f"benchmarks.{module}", *(shlex.quote(a) for a in args)])


def write_report(path: Path, text: str) -> Path:
    """Write a report atomically, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic.write_text(path, text)


def write_summary(out: Path, stem: str, summary: dict, markdown: Callable[[dict], str]) -> bool:
    """A check's summary as `<stem>.json` and `<stem>.md` under `out`, the markdown printed too;
    returns the summary's "ok"."""
    write_report(out / f"{stem}.json", json.dumps(summary, indent=2) + "\n")
    write_report(out / f"{stem}.md", markdown(summary))
    print(markdown(summary))
    return bool(summary["ok"])


def write_keeping_notes(path: Path, generated: str) -> Path:
    """Write a generated report, keeping the old file's hand-written notes (everything from
    NOTES_MARKER on): rewriting the tables with --report-only must not lose how they were made."""
    notes = ""
    if path.is_file():
        old = path.read_text()
        if NOTES_MARKER in old:
            notes = "\n" + old[old.index(NOTES_MARKER) :]
    return write_report(path, generated + notes)
