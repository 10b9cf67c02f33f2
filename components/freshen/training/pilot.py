"""An automatic choice on dev, for settings no single value of which suits every corpus.

`train.pilot.candidates` lists variants of the `train` section (dotted overrides; `{}` is the
section as written). Each trains `train.pilot.steps` steps of the full schedule from the
pre-trained encoder, on the same batches (same seed), and is validated on dev like any
evaluation; the best (the first on a tie) is then trained in full, from the pre-trained encoder
again, so that its run is the one `train` gives without a pilot. The pilots' passes are the
choice's cost: counted as `pilot_passes`, logged with each candidate's dev figure."""

from __future__ import annotations

import copy
import logging

from freshen.config import set_dotted
from freshen.errors import FreshenError

log = logging.getLogger(__name__)


def candidates(p: dict) -> list[dict]:
    """The candidates' override sets, checked; [] when the pilot is off (fewer than two)."""
    pilot = p.get("pilot") or {}
    cands = pilot.get("candidates") or []
    if not isinstance(cands, list) or not all(isinstance(c, dict) for c in cands):
        raise FreshenError(
            "params.yaml: field 'train.pilot.candidates': must be a list of mappings of dotted "
            f"train keys to values, got {cands!r}"
        )
    if len(cands) < 2:
        return []
    steps = pilot.get("steps")
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= int(p["steps"]):
        raise FreshenError(
            f"params.yaml: field 'train.pilot.steps': must be an integer in [1, train.steps], got {steps!r}"
        )
    return cands


def variant(p: dict, overrides: dict, index: int) -> dict:
    """The `train` section with one candidate's overrides (and no pilot of its own)."""
    out = copy.deepcopy(p)
    out["pilot"] = None
    for key, value in overrides.items():
        try:
            set_dotted(out, key, value)
        except FreshenError:
            raise FreshenError(f"params.yaml: field 'train.pilot.candidates[{index}]': no train key '{key}'") from None
    return out


def choose(p: dict, run_pilot) -> tuple[dict, dict]:
    """(the chosen variant of `p`, a summary). `run_pilot(variant_params, steps)` trains one
    pilot and returns (dev nDCG@10 at its last step, training passage passes spent)."""
    cands = candidates(p)
    steps = int(p["pilot"]["steps"])
    scores, passes = [], []
    for i, overrides in enumerate(cands):
        score, spent = run_pilot(variant(p, overrides, i), steps)
        scores.append(score)
        passes.append(spent)
        log.info("pilot %d %s: dev nDCG@10 %.4f after %d steps", i, overrides or "(as written)", score, steps)
    best = max(range(len(cands)), key=lambda i: (scores[i], -i))
    summary = {
        "pilot_choice": best,
        "pilot_steps": steps,
        "pilot_passes": sum(passes),
        "pilot_candidates": [{"overrides": c, "dev_ndcg_at_10": s} for c, s in zip(cands, scores)],
    }
    return variant(p, cands[best], best), summary
