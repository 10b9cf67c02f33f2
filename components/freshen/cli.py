"""`freshen <step>`: the one entry point DVC, Airflow, the containers and Kubeflow all run.

    freshen [--params params.yaml] [--set train.steps=50 ...] [--parent-run-id ID] STEP

Each step runs inside an MLflow child run of the pipeline's parent run."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from pathlib import Path

from freshen.errors import FreshenError
from freshen.steps import STEP_NAMES


class MlflowLog:
    def __init__(self, mlflow, parent_run_id: str):
        self.mlflow, self.parent_run_id = mlflow, parent_run_id

    def metrics(self, values: dict, step: int | None = None) -> None:
        clean = {k.replace("@", "_at_"): float(v) for k, v in values.items() if isinstance(v, (int, float))}
        if clean:
            self.mlflow.log_metrics(clean, step=step)

    def artifact(self, path, subdir: str | None = None) -> None:
        path = Path(path)
        if path.exists():
            self.mlflow.log_artifact(str(path), artifact_path=subdir)
            if path.suffix == ".csv":
                from freshen.plots import render_csv

                png = render_csv(path)
                if png is not None:
                    self.mlflow.log_artifact(str(png), artifact_path=subdir)

    def tags(self, values: dict) -> None:
        self.mlflow.set_tags({k: str(v) for k, v in values.items()})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="freshen", description=__doc__.split("\n\n")[0])
    parser.add_argument("step", choices=[s.replace("_", "-") for s in STEP_NAMES] + list(STEP_NAMES))
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a params key, e.g. --set train.steps=50 (repeatable)")
    parser.add_argument("--root", default=".", help="project folder that relative paths start from")
    parser.add_argument("--parent-run-id", default=None, help="MLflow parent run to attach to "
                        "(default: $FRESHEN_PARENT_RUN_ID or the open pipeline run)")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    step = args.step.replace("-", "_")
    root = Path(args.root).resolve()
    try:
        from freshen import tracking
        from freshen.config import load_params, seed_everything

        params = load_params(root / args.params if not Path(args.params).is_absolute() else args.params,
                             args.overrides)
        seed_everything(int(params.get("seed", 0)))
        module = importlib.import_module(f"freshen.steps.{step}")
        with tracking.step_run(step, params, root, args.parent_run_id, module.SECTIONS) as (run, parent):
            import mlflow

            log = MlflowLog(mlflow, parent)
            module.run(params, root, log)
        if step == "promote" and not (args.parent_run_id or os.environ.get(tracking.PARENT_ENV)):
            tracking.end_parent(root, parent)
    except FreshenError as exc:
        print(f"freshen {step}: error: {exc}", file=sys.stderr)
        return 2
    return 0
