"""Benchmark: the train pipeline's steps, run one after another in this process on the devices
given (`encode.device`, `train.device`), with each step's wall time and the test nDCG@10 they
reach. What `dvc repro` runs, without DVC and MLflow around it (the steps log to nowhere), so
that it runs where neither is installed: the GPU machine of issue 29 (`scripts/gpu_check.sh`).
Not a test: run it by hand.

    python -m benchmarks.stage_times --data ../shared/datasets/scifact --work /tmp/stages --device cuda
"""

from __future__ import annotations

import argparse
import importlib
import json
import time
from pathlib import Path

import yaml

from benchmarks.common import ROOT, command_line, machine, write_report

# promote registers the model in MLflow: the one step that is not the pipeline's compute
SKIPPED = ("promote",)


def project_params(work: Path, data: Path, device: str, model: str | None) -> Path:
    """The repository's params.yaml for a project in `work` reading the BEIR folder `data`."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["local_dir"] = str(data.resolve())
    if model:
        params["model"]["name_or_path"] = model
    params["encode"]["device"] = device
    params["train"]["device"] = device
    work.mkdir(parents=True, exist_ok=True)
    out = work / "params.yaml"
    out.write_text(yaml.safe_dump(params, sort_keys=False))
    return out


def synchronize() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def run_steps(params_file: Path, overrides: list[str]) -> list[dict]:
    """Every step of the train pipeline but promote, in order: its name and wall seconds."""
    from freshen.config import seed_everything
    from freshen.orchestration.pipeline import TRAIN
    from freshen.params import load_params

    root = params_file.parent
    params = load_params(params_file, overrides)
    times = []
    for step in (s for s in TRAIN.names if s not in SKIPPED):
        seed_everything(params.seed)
        module = importlib.import_module(f"freshen.steps.{step}")
        synchronize()
        start = time.perf_counter()
        module.run(params, root)
        synchronize()
        times.append({"step": step, "seconds": time.perf_counter() - start})
        print(json.dumps({"step": step, "seconds": round(times[-1]["seconds"], 2)}), flush=True)
    return times


def report(times: list[dict], evaluation: dict, device: str) -> str:
    rows = "\n".join(f"| {t['step']} | {t['seconds']:.1f} |" for t in times)
    total = sum(t["seconds"] for t in times)
    systems = ("zero_shot", "trained", "trained_corrected_cache", "bm25")
    found = [s for s in systems if s in evaluation.get("test", {})]
    ndcg = "\n".join(f"| {s} | {evaluation['test'][s]['ndcg_at_10']:.4f} |" for s in found)
    return (
        "# The train pipeline, step by step, on one device\n\n"
        f"Command: `{command_line('stage_times')}`  \n"
        f"Machine: {machine()}  \n"
        f"Devices: encode.device and train.device `{device}`; promote not run (MLflow)\n\n"
        f"| step | seconds |\n| --- | --- |\n{rows}\n| all | {total:.1f} |\n\n"
        f"| test nDCG@10 | |\n| --- | --- |\n{ndcg}\n"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "datasets" / "scifact"), help="BEIR folder")
    ap.add_argument("--work", required=True, help="the project folder the steps write into (not git)")
    ap.add_argument("--device", default="auto", help="encode.device and train.device: auto, cpu, cuda")
    ap.add_argument("--model", default=None, help="model.name_or_path (default: the params.yaml one)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", default=None, help="write the markdown report here")
    args = ap.parse_args()
    params_file = project_params(Path(args.work), Path(args.data), args.device, args.model)
    times = run_steps(params_file, args.overrides)
    from freshen.params import load_params

    metrics = params_file.parent / load_params(params_file, args.overrides).evaluate.metrics
    text = report(times, json.loads(metrics.read_text()), args.device)
    print(text)
    if args.out:
        write_report(Path(args.out), text)


if __name__ == "__main__":
    main()
