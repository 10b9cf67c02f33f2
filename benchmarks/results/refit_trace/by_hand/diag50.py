import sys, yaml, torch, numpy as np
from pathlib import Path
sys.path.insert(0, "/work/main/benchmarks")
from ablation import arm_params, ROOT
from freshen.training import loop
from freshen.steps import train
from freshen.encoding import encode
base = yaml.safe_load(open("/work/exp/p_refit_s13.yaml"))
p = arm_params(base, "corrected", 100, 5, Path("/work/exp/diag/d50"))
p["train"]["eval_every"] = 0
orig_s = loop.Trainer._sample_rows
def samp(self, n):
    r = orig_s(self, n); self._last = r; return r
loop.Trainer._sample_rows = samp
orig = loop.Trainer.refit
def refit(self, step):
    pre = {k: v.clone() for k, v in self.corrector.state_dict().items()}
    r = orig(self, step)
    print("REFIT", r, flush=True)
    probe = torch.tensor(self.probe_rows)
    fresh_p = torch.from_numpy(encode(self.encoder, [self.doc_texts[i] for i in self.probe_rows], "passage", max_len=self.passage_len))
    stale_p = self.scorer.table[probe].float()
    cos = lambda a, b: float(torch.nn.functional.cosine_similarity(a, b, dim=-1).mean())
    with torch.no_grad():
        print("PROBE stale", cos(stale_p, fresh_p), "refit h", cos(self.corrector(stale_p), fresh_p), flush=True)
    torch.save({"pre": pre, "post": self.corrector.state_dict(), "rows": torch.as_tensor(np.asarray(self._last)),
                "probe_rows": probe, "fresh_probe": fresh_p}, "/work/exp/diag/d50/refit.pt")
    self.encoder.save("/work/exp/diag/d50/enc50")
    raise SystemExit(0)
loop.Trainer.refit = refit
train.run(p, ROOT)
