"""`freshen <step>`: the one entry point DVC, Airflow, the containers and Kubeflow all run.

    freshen [--params params.yaml] [--set train.steps=50 ...] [--set-json JSON] [--parent-run-id ID] STEP

Each step runs inside an MLflow child run of the pipeline's parent run. Params are loaded and
validated once, before any work: params.yaml, then $FRESHEN_SET, then --set-json, then --set
(freshen.params.loading); `freshen params` prints the result as YAML."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys
import threading
import traceback
from pathlib import Path

import yaml

from freshen.errors import FreshenError
from freshen.orchestration.commands import ORCHESTRATION_STEPS, RUN_COMMANDS, SKIP_EXIT
from freshen.params import Params, load_params
from freshen.progress import configure_output, errors_only_on_stderr
from freshen.steps import STEP_NAMES
from freshen.training import launch

PARAMS_COMMAND = "params"  # `freshen params`: the effective params as YAML


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
    names = STEP_NAMES + ORCHESTRATION_STEPS + RUN_COMMANDS + (PARAMS_COMMAND,)
    parser.add_argument("step", choices=sorted(set(names) | {s.replace("_", "-") for s in names}))
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a params key, e.g. --set train.steps=50 (repeatable)",
    )
    parser.add_argument("--root", default=".", help="project folder that relative paths start from")
    parser.add_argument(
        "--parent-run-id",
        default=None,
        help="MLflow parent run to attach to (default: $FRESHEN_PARENT_RUN_ID or the open pipeline run)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging, and the traceback of an error")
    parser.add_argument(
        "--nproc",
        type=int,
        default=1,
        help="train: data-parallel training in this many processes (torchrun; one per GPU, or Gloo on CPUs)",
    )
    add_orchestration_options(parser)
    return parser


def add_orchestration_options(parser: argparse.ArgumentParser) -> None:
    """Options of the orchestration verbs; Airflow and Kubeflow pass every override in one --set-json."""
    group = parser.add_argument_group("orchestration")
    group.add_argument(
        "--set-json",
        default=None,
        metavar="JSON",
        help="overrides as one JSON object of dotted keys, e.g. '{\"train.steps\": 50}'",
    )
    group.add_argument("--shard", type=int, default=None, help="reembed-shard: which shard (0-based)")
    group.add_argument("--num-shards", type=int, default=None, help="shard count (default: orchestration.num_shards)")
    group.add_argument("--model-dir", default=None, help="re-embed with this encoder folder (default: the champion)")
    group.add_argument("--cache-dir", default=None, help="build-index: the cache (default: orchestration.refresh_dir)")
    group.add_argument("--out", default=None, help="build-index: index file; start-run: file to write the run id to")
    group.add_argument("--kind", default="pipeline", help="start-run: what the run is (train, refresh)")
    group.add_argument(
        "--tag",
        dest="tags",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="start-run: tag the parent run; end-run: find the parent run by tag (repeatable)",
    )
    group.add_argument(
        "--skip-exit-code",
        type=int,
        default=SKIP_EXIT,
        help=f"exit code of a step with nothing to do (default {SKIP_EXIT}; Kubeflow passes 0)",
    )


def run_command(step: str, params: Params, root: Path, args) -> int:
    """start-run / end-run: the parent run of an orchestrated pipeline (Kubeflow runs these as containers)."""
    import json

    from freshen.atomic import write_text
    from freshen.orchestration import runs

    tags = dict(t.partition("=")[::2] for t in args.tags)
    if step == "start_run":
        result = runs.start(params, root, args.kind, tags)
        if args.out:
            write_text(args.out, result["parent_run_id"])
    else:
        run_id = args.parent_run_id or os.environ.get("FRESHEN_PARENT_RUN_ID") or runs.find(params, root, tags)
        result = runs.end(params, root, run_id)
    print(json.dumps(result))
    return 0


@contextlib.contextmanager
def stop_cleanly_on_sigterm(step: str):
    """SIGTERM (docker stop, a deleted pod, Airflow failing a task) becomes SystemExit(143) in the
    main thread, so every `with` unwinds as on Ctrl-C: the MLflow run ends FAILED instead of
    RUNNING for ever, temporary folders are removed, locks are let go, and `.partial` caches keep
    their progress for the resume. A no-op outside the main thread (signals cannot be handled
    there) and where the host process has a SIGTERM handler of its own (Airflow running the
    step in-process raises its own exception, which unwinds the same way)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) not in (
        signal.SIG_DFL,
        None,
    ):
        yield
        return

    def stop(signum, frame):
        print(f"freshen {step}: stopped by SIGTERM", file=sys.__stderr__, flush=True)  # even while redirected
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    step = args.step.replace("-", "_")
    with stop_cleanly_on_sigterm(step):
        if args.nproc != 1 and os.environ.get(launch.NPROC_ENV) is None:
            return launch_ranks(step, args, argv)
        code = run_step(args)
    launch.record_exit(code)
    return code


def launch_ranks(step: str, args, argv: list[str]) -> int:
    """`freshen train --nproc N`: the params checked, then N ranks launched by torchrun."""
    try:
        if step != launch.DISTRIBUTED_STEP:
            raise FreshenError(
                f"--nproc {args.nproc}: only `freshen {launch.DISTRIBUTED_STEP}` runs in more than one process"
            )
        params = load_params(Path(args.root) / args.params, args.overrides, args.set_json)
        launch.check_nproc(params.train, args.nproc, bool(params.train.teacher.scores))
    except FreshenError as exc:
        print(f"freshen {step}: error: {exc}", file=sys.stderr)
        return 2
    code = launch.launch(argv, args.nproc)
    if code != 0:  # rank 0 may have been killed before it could end its MLflow run
        from freshen import tracking

        try:
            tracking.end_runs_of_dead_processes(Path(args.root).resolve(), params.mlflow.experiment)
        except Exception as exc:  # the ranks' exit code matters more than this bookkeeping
            print(f"freshen {step}: warning: could not end the dead ranks' MLflow runs: {exc}", file=sys.stderr)
    return code


def run_step(args) -> int:
    configure_output(args.verbose)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    step = args.step.replace("-", "_")
    root = Path(args.root).resolve()
    try:
        from freshen import tracking
        from freshen.config import seed_everything

        params = load_params(
            root / args.params if not Path(args.params).is_absolute() else args.params, args.overrides, args.set_json
        )
        if step == PARAMS_COMMAND:
            print(yaml.safe_dump(params.model_dump(), sort_keys=False), end="")
            return 0
        if step in RUN_COMMANDS:
            with errors_only_on_stderr():
                return run_command(step, params, root, args)
        seed_everything(params.seed)
        module = importlib.import_module(f"freshen.steps.{step}")
        options = {name: getattr(args, name) for name in getattr(module, "OPTIONS", ())}
        skip = module.skip_reason(params, root) if hasattr(module, "skip_reason") else None
        if skip:
            print(f"freshen {step}: skipped: {skip}")
            return args.skip_exit_code
        if os.environ.get("RANK", "0") != "0":  # a distributed run's other ranks: rank 0 tracks and writes
            module.run(params, root, **options)
            return 0
        step_run = tracking.step_run(step, params, root, args.parent_run_id, module.SECTIONS)
        with errors_only_on_stderr(), step_run as (run, parent):
            import mlflow

            log = MlflowLog(mlflow, parent)
            module.run(params, root, log, **options)
    except FreshenError as exc:  # bad input or settings: the message says what to fix
        if args.verbose:
            traceback.print_exc()
        print(f"freshen {step}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug or an environment problem: one line, the traceback with -v
        if args.verbose:
            traceback.print_exc()
        hint = "" if args.verbose else " (unexpected; rerun with -v for the traceback)"
        print(f"freshen {step}: error: {type(exc).__name__}: {first_line(exc)}{hint}", file=sys.stderr)
        return 1
    return 0


def first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "(no message)"
