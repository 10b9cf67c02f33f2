"""diag50.py and diag_lag.py in one run for any seed: the corrected arm with the single refit
(params `/work/exp/p_refit_sN.yaml`), saving the encoder after step 45 and at the step-50 refit
into /work/exp/diag/sN/, then stopping. Usage: python diag_seed.py N"""
import sys, yaml
from pathlib import Path
sys.path.insert(0, "/work/main/benchmarks")
from ablation import arm_params, ROOT
from freshen.training import loop
from freshen.steps import train
seed = int(sys.argv[1])
out = Path(f"/work/exp/diag/s{seed}")
base = yaml.safe_load(open(f"/work/exp/p_refit_s{seed}.yaml"))
p = arm_params(base, "corrected", 100, 5, out)
p["train"]["eval_every"] = 0
step_orig, refit_orig = loop.Trainer.step, loop.Trainer.refit
def step(self, s):
    r = step_orig(self, s)
    if s == 45:
        self.encoder.save(out / "enc45")
    return r
def refit(self, s):
    r = refit_orig(self, s)
    print("REFIT", s, r, flush=True)
    self.encoder.save(out / "enc50")
    raise SystemExit(0)
loop.Trainer.step, loop.Trainer.refit = step, refit
train.run(p, ROOT)
