"""Benchmark: how well a corrector can track the encoder mid-training, and how fast a refit goes
stale. A diagnostic for the corrected arm, after `benchmarks/corrector_fit.py`.

It trains the corrected arm with one corrector refit (by default after step 50, on 2,600
passages for 100 epochs: the setting of `benchmarks/results/ablation-final/seeds.md`) and
measures, every `--every` steps, the mean cosine between the held-out probe passages' stale,
corrected and fresh embeddings (the loop's own validation, training-time dev nDCG@10 with it),
and at each refit the corrector's cosine on the sample it was fitted on. `--freeze-after-refit`
stops the corrector's online updates after the first refit, which separates what the encoder's
drift takes from the refitted corrector from what the online updates give back. Writes a
markdown table. Not a test: about 9 minutes on 2 CPU cores for SciFact at 100 steps.

    python benchmarks/refit_trace.py --out benchmarks/results/refit_trace/online.md
    python benchmarks/refit_trace.py --freeze-after-refit --out benchmarks/results/refit_trace/frozen.md
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "components"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from ablation import arm_params, command_line, machine  # noqa: E402

from freshen.atomic import write_text  # noqa: E402
from freshen.params import load_params, validate_params  # noqa: E402
from freshen.encoding import set_threads  # noqa: E402
from freshen.steps import train  # noqa: E402
from freshen.steps.common import NullLog  # noqa: E402
from freshen.training import loop  # noqa: E402


class Records(NullLog):
    """Keeps every record the training loop logs, by step (the run's summary, logged with no
    step, is not kept)."""

    def __init__(self) -> None:
        self.by_step: dict[int, dict] = {}

    def metrics(self, values: dict, step: int | None = None) -> None:
        if step is not None:
            self.by_step.setdefault(int(step), {}).update(values)


def freeze_after_refit() -> None:
    """From the first refit on, the corrector's online optimiser steps with lr 0 and no
    cross-entropy term: h stays exactly as the refit left it."""
    refit = loop.Trainer.refit

    def frozen(self, step: int) -> dict:
        out = refit(self, step)
        for group in self.cor_opt.param_groups:
            group["lr"] = 0.0
        self.ce_weight = 0.0
        return out

    loop.Trainer.refit = frozen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--refit-every", type=int, default=50)
    ap.add_argument("--refit-sample", type=int, default=2600)
    ap.add_argument("--refit-epochs", type=int, default=100)
    ap.add_argument("--every", type=int, default=5, help="measure the drift every N steps")
    ap.add_argument("--freeze-after-refit", action="store_true")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    set_threads()
    base = load_params(args.params).model_dump()  # plain values, edited below
    cor = base["train"]["corrector"]
    cor.update(refit_every=args.refit_every, refit_sample=args.refit_sample, refit_epochs=args.refit_epochs)
    if args.refit_every <= 0 or args.refit_sample <= 0:
        raise SystemExit("--refit-every and --refit-sample must be > 0: the trace follows a refit")
    if args.freeze_after_refit:
        freeze_after_refit()
    steps = int(base["train"]["steps"])
    records = Records()
    with tempfile.TemporaryDirectory() as work:
        p = arm_params(base, "corrected", steps, 0, Path(work))
        p["train"]["eval_every"] = args.every
        train.run(validate_params(p), ROOT, log=records)

    rows = []
    for step in sorted(records.by_step):
        r = records.by_step[step]
        if "probe_cos_corrected_fresh" not in r:
            continue
        fit = f"{r['refit_cos_after']:.4f}" if "refit_cos_after" in r else ""
        rows.append(f"| {step} | {r['dev_ndcg_at_10']:.4f} | {r['probe_cos_stale_fresh']:.4f} "
                    f"| {r['probe_cos_corrected_fresh']:.4f} | {fit} |")
    mode = "frozen after the first refit (lr 0, no cross-entropy term)" if args.freeze_after_refit \
        else "updated online after each refit, as in training"
    text = "\n".join([
        "# A refitted corrector over the rest of training", "",
        f"Command: `{command_line()}`  ",
        f"Machine: {machine()}, {torch.get_num_threads()} torch threads", "",
        f"Corrected arm, seed {base['seed']}, {steps} steps, refit every {cor['refit_every']} steps on "
        f"{cor['refit_sample']} passages for {cor.get('refit_epochs', 50)} epochs; corrector {mode}. "
        f"Cosines are means over the {p['train'].get('probe_passages', 0)} held-out probe passages, "
        "measured after the step (and after its refit, if any); the last column is the refitted "
        "corrector's cosine on the sample it was fitted on.", "",
        "| step | dev nDCG@10 (corrected cache) | cos stale/fresh | cos corrected/fresh | cos on the refit sample |",
        "| --- | --- | --- | --- | --- |",
        *rows,
    ]) + "\n"
    write_text(Path(args.out), text)
    print(text)


if __name__ == "__main__":
    main()
