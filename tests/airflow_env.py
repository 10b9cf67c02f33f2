"""A throwaway Airflow home for the tests: SQLite metadata DB, no examples, the repo's dags/.

Airflow reads its configuration when first imported, so `use_temp_airflow_home()` runs at the
top of a test module, before anything imports airflow (freshen.orchestration.airflow_tasks does)."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_state: dict = {}


def airflow_env(home: Path) -> dict[str, str]:
    """The variables that make `home` an Airflow home running the repo's dags/ and no examples."""
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
    }


def use_temp_airflow_home() -> Path:
    if "home" not in _state:
        home = Path(tempfile.mkdtemp(prefix="freshen-airflow-home-"))
        atexit.register(shutil.rmtree, home, True)
        os.environ.update(airflow_env(home))
        _state["home"] = home
    return _state["home"]


def migrate_db() -> None:
    """`airflow db migrate` once per session (the SQLite file lives in the temp home)."""
    if not _state.get("migrated"):
        airflow = Path(sys.executable).parent / "airflow"
        cmd = [str(airflow)] if airflow.exists() else [sys.executable, "-m", "airflow"]
        res = subprocess.run(cmd + ["db", "migrate"], env=os.environ, capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"airflow db migrate failed:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
        _state["migrated"] = True
