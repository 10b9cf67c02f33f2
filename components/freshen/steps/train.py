"""Step 3, train: the retriever and its corrector, from the stale cache and the clusters."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from freshen.atomic import atomic_dir, write_json, write_text
from freshen.cache import load_cache
from freshen.config import params_hash
from freshen.data.teacher import read_teacher_scores
from freshen.embed_corpus import place
from freshen.encoding import set_threads
from freshen.errors import FreshenError
from freshen.modeling.corrector import Corrector
from freshen.modeling.encoder import Encoder
from freshen.steps.common import NullLog, path, prepared, read_clusters
from freshen.training.loop import check_train_params, train

SECTIONS = ["seed", "model", "train"]
CURVE_FIELDS = ["step", "loss", "corrector_loss", "corrector_ce", "cos_stale_fresh", "cos_corrected_fresh",
                "dev_ndcg_at_10", "probe_cos_stale_fresh", "probe_cos_corrected_fresh",
                "train_passage_passes", "reembed_passes"]


def run(params: dict, root: Path, log=NullLog()) -> dict:
    p = params["train"]
    check_train_params(p)  # fail on bad params before loading anything heavy
    set_threads()
    ds = prepared(params, root)
    cache = load_cache(path(root, params["cache"]["out_dir"]))
    clusters = read_clusters(path(root, params["cluster"]["out_dir"]))
    teacher = None
    if (p.get("teacher") or {}).get("scores"):
        teacher = read_teacher_scores(path(root, p["teacher"]["scores"]), ds.corpus, ds.queries)
    if (p.get("corrector") or {}).get("init"):
        Corrector.load(path(root, p["corrector"]["init"]), expect_dim=cache.dim)  # fail before training
    encoder = place(Encoder.from_params(params["model"]), {"device": p.get("device", "auto")})
    if encoder.dim != cache.dim:
        raise FreshenError(f"{cache.path}/manifest.json: field 'dim': cache dim {cache.dim} does not match "
                           f"the encoder's {encoder.dim}")
    result = train(encoder, ds, cache, clusters, p, int(params["seed"]), teacher=teacher,
                   on_log=lambda rec, step: log.metrics({k: v for k, v in rec.items() if k != "step"}, step))
    with atomic_dir(path(root, p["out_dir"])) as tmp:
        result.encoder.save(tmp / "encoder")
        if result.corrector is not None:
            result.corrector.save(tmp / "corrector")
        # no wall time in the model folder (it is in metrics/train.json): the same params must
        # give the same bytes, so that DVC and the registry see the same model
        counters = {k: v for k, v in result.counters.as_dict().items() if k != "wall_seconds"}
        write_json(tmp / "train_state.json", {"counters": counters,
                                               "params_hash": params_hash(params, SECTIONS),
                                               "cache_manifest": cache.manifest, "steps": int(p["steps"])})
    last = result.curve[-1]
    summary = {**result.counters.as_dict(), "final_loss": last["loss"], "steps_run": len(result.curve),
               **({"best_step": result.best_step,
                   "best_dev_ndcg_at_10": max(v.get("dev_ndcg_at_10", float("-inf")) for v in result.validations)}
                  if result.best_step is not None else {}),
               **{k: last[k] for k in ("corrector_loss", "cos_stale_fresh", "cos_corrected_fresh") if k in last}}
    write_json(path(root, p["metrics"]), summary)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CURVE_FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(result.curve)
    write_text(path(root, p["curve"]), buf.getvalue())
    log.metrics({k: v for k, v in summary.items() if isinstance(v, (int, float))})
    log.artifact(path(root, p["curve"]), "plots")
    return summary
