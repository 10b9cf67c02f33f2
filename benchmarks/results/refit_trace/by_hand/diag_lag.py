"""Seed 13's corrected arm with the refit (as diag50.py), saving the encoder after steps 45 and 49,
then stopping: with diag50.py's step-50 encoder, what a cache refreshed 5 and 1 steps earlier
looks like against a fresh one (benchmarks/corrector_ceiling.py --lagged)."""
import sys, yaml
from pathlib import Path
sys.path.insert(0, "/work/main/benchmarks")
from ablation import arm_params, ROOT
from freshen.training import loop
from freshen.steps import train
base = yaml.safe_load(open("/work/exp/p_refit_s13.yaml"))
p = arm_params(base, "corrected", 100, 5, Path("/work/exp/diag/lag"))
p["train"]["eval_every"] = 0
orig = loop.Trainer.step
def step(self, s):
    out = orig(self, s)
    if s in (45, 49):
        self.encoder.save(f"/work/exp/diag/lag/enc{s}")
        print("SAVED", s, flush=True)
        if s == 49:
            raise SystemExit(0)
    return out
loop.Trainer.step = step
train.run(p, ROOT)
