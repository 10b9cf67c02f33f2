"""Top-4 / top-20 overlap with the fresh cache of the seed-13 corrector just before and just after
its refit at step 50 (states saved by diag50.py), scored as benchmarks/corrector_ceiling.py
scores its rows (its --work folder holds the step-50 encoder's fresh cache and queries)."""
import sys
import numpy as np, torch
sys.path.insert(0, "/work/main/benchmarks"); sys.path.insert(0, "/work/main/tests")
from bench import load_benchmark
from freshen.cache import load_cache
from freshen.config import load_params
from freshen.modeling.corrector import Corrector
from freshen.steps.common import prepared
from pathlib import Path
c = load_benchmark("corrector_ceiling")
params = load_params("params.yaml"); ds = prepared(params, Path("."))
cache = load_cache("artifacts/cache/initial"); row_of = cache.row_of()
stale = torch.from_numpy(np.asarray(cache.embeddings, dtype=np.float32))
fresh = torch.from_numpy(np.load("/work/exp/ceil/fresh160.npy")); q = torch.from_numpy(np.load("/work/exp/ceil/queries.npy"))
pos = ds.positives("train"); qids = sorted(pos); banned = [[row_of[d] for d in pos[x]] for x in qids]
fresh_top = c.topk_excluding(q @ fresh.T, banned, 20)
d = torch.load("/work/exp/diag/d50/refit.pt", weights_only=True)
for name in ("pre", "post"):
    h = Corrector.from_params(384, params["train"]["corrector"]); h.load_state_dict(d[name])
    with torch.no_grad():
        top = c.topk_excluding(q @ h(stale).T, banned, 20)
    print(name, "top-4", round(c.overlap(top[:, :4], fresh_top[:, :4]), 4), "top-20", round(c.overlap(top, fresh_top), 4))
