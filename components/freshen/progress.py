"""Progress of long work (encoding, training, downloads): a tqdm bar on a terminal. Elsewhere
(Airflow task logs, containers, CI) the bar goes to stdout, which log collectors file as INFO
(Airflow files every stderr line as ERROR), and updates at most every `QUIET_INTERVAL` seconds."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm

QUIET_INTERVAL = 30.0


def progress(iterable=None, **kwargs):
    """`tqdm(iterable, **kwargs)`, on stdout and sparser when stderr is not a terminal."""
    if not sys.stderr.isatty():
        kwargs.setdefault("file", sys.stdout)
        kwargs["mininterval"] = max(float(kwargs.get("mininterval", 0.1)), QUIET_INTERVAL)
    return tqdm(iterable, **kwargs)
