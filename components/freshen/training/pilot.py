"""An automatic choice on dev, for settings no single value of which suits every corpus.

`train.pilot.candidates` lists variants of the `train` section (dotted overrides; `{}` is the
section as written). Each trains `train.pilot.steps` steps of the full schedule from the
pre-trained encoder, on the same batches (same seed), and is validated on dev like any
evaluation; the best (the first on a tie) is then trained in full, from the pre-trained encoder
again, so that its run is the one `train` gives without a pilot. The pilots' passes are the
choice's cost: counted as `pilot_passes`, logged with each candidate's dev figure. The schema
checks every candidate when params are loaded (`freshen.params.train.check_candidate`)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from freshen.params import TrainParams
from freshen.params.train import pilot_variant

log = logging.getLogger(__name__)


def candidates(p: TrainParams) -> list[dict[str, Any]]:
    """The candidates' override sets; [] when the pilot is off (fewer than two)."""
    return p.pilot.candidates if len(p.pilot.candidates) >= 2 else []


def choose(p: TrainParams, run_pilot: Callable[[TrainParams, int], tuple[float, int]]) -> tuple[TrainParams, dict]:
    """(the chosen variant of `p`, a summary). `run_pilot(variant, steps)` trains one pilot (a
    variant: `p` with a candidate's overrides and no pilot of its own) and returns (dev nDCG@10 at
    its last step, training passage passes spent)."""
    cands = candidates(p)
    steps = p.pilot.steps
    scores, passes = [], []
    for i, overrides in enumerate(cands):
        score, spent = run_pilot(pilot_variant(p, overrides), steps)
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
    return pilot_variant(p, cands[best]), summary
