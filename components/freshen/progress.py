"""Progress and log output of a `freshen` call. On a terminal: tqdm bars and log records on
stderr, as usual. Elsewhere (Airflow task logs, containers, CI) log collectors file every stderr
line as an error (Airflow does), so there a successful call writes nothing to stderr: log records
below ERROR and Python warnings go to stdout, this package's bars go to stdout and update at most
every `QUIET_INTERVAL` seconds, Hugging Face's and MLflow's bars are off, and whatever libraries
print to `sys.stderr` while a step runs (MLflow's event lines and log records) goes to stdout."""

from __future__ import annotations

import contextlib
import logging
import os
import sys

from tqdm.auto import tqdm

QUIET_INTERVAL = 30.0
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def on_terminal() -> bool:
    return sys.stderr.isatty()


def progress(iterable=None, **kwargs):
    """`tqdm(iterable, **kwargs)`, on stdout and sparser when stderr is not a terminal; none on
    a distributed run's ranks other than 0 (rank 0's bars are the run's)."""
    if os.environ.get("RANK", "0") != "0":
        kwargs["disable"] = True
    if not on_terminal():
        kwargs.setdefault("file", sys.stdout)
        kwargs["mininterval"] = max(float(kwargs.get("mininterval", 0.1)), QUIET_INTERVAL)
    return tqdm(iterable, **kwargs)


class _BelowError(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR


def configure_output(verbose: bool = False) -> None:
    """Logging and library progress bars for one `freshen` call (see the module doc)."""
    level = logging.DEBUG if verbose else logging.INFO
    if on_terminal():
        logging.basicConfig(level=level, format=LOG_FORMAT)
        return
    # read when huggingface_hub / transformers / mlflow are imported or bars are made
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    out = logging.StreamHandler(sys.stdout)
    out.addFilter(_BelowError())
    err = logging.StreamHandler(sys.stderr)
    err.setLevel(logging.ERROR)
    for handler in (out, err):
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.basicConfig(level=level, handlers=[out, err])
    logging.captureWarnings(True)


def errors_only_on_stderr():
    """While a step runs off a terminal, `sys.stderr` is stdout: libraries that print there (MLflow's
    handler and its "Created version" lines write to whatever `sys.stderr` is at the time) land on
    stdout, while this process's ERROR records still reach stderr (their handler holds the real
    stream) and so do the errors the CLI prints after the step."""
    return contextlib.nullcontext() if on_terminal() else contextlib.redirect_stderr(sys.stdout)
