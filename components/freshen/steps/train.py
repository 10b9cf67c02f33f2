"""Step 3, train: the retriever and its corrector, from the stale cache and the clusters.
`train.metrics` is rewritten after every evaluation (the counters and that evaluation's
figures), so a run killed half-way (kill -9) leaves its last measurements; the end of the run
writes the summary there. A run that fails or is stopped (an error, Ctrl-C, SIGTERM) before its
model replaced the previous one puts the previous run's file back (or none): the figures there
describe the model there (the failed run's measurements are in its MLflow run and its log)."""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

from freshen.atomic import atomic_dir, restored_on_failure, write_json, write_text
from freshen.config import params_hash
from freshen.data.teacher import read_teacher_scores
from freshen.embed_corpus import place
from freshen.encoding import set_threads
from freshen.errors import FreshenError
from freshen.locks import hold
from freshen.modeling.corrector import Corrector
from freshen.modeling.encoder import Encoder
from freshen.params import Params, TrainParams
from freshen.steps.common import NullLog, checked_cache, path, prepared, read_clusters
from freshen.training import pilot, serving_fit
from freshen.training.distributed import World
from freshen.training.loop import Trainer, train

logger = logging.getLogger(__name__)

SECTIONS = ["seed", "model", "train"]
CURVE_FIELDS = [
    "step",
    "loss",
    "corrector_loss",
    "corrector_ce",
    "cos_stale_fresh",
    "cos_corrected_fresh",
    "dev_ndcg_at_10",
    "probe_cos_stale_fresh",
    "probe_cos_corrected_fresh",
    "overlap_stale_fresh",
    "overlap_corrected_fresh",
    "fn_rank",
    "fn_margin",
    "fn_short",
    "fn_in_batch",
    "train_passage_passes",
    "reembed_passes",
    "wall_seconds",
]
EVAL_FIELDS = [
    "dev_ndcg_at_10",
    "probe_cos_stale_fresh",
    "probe_cos_corrected_fresh",
    "overlap_stale_fresh",
    "overlap_corrected_fresh",
]


def corrector_not_saved(p: TrainParams) -> str | None:
    """Why the run's corrector is not saved with the retriever (None: it is), for the train
    section `p` the run trained with (the pilot's choice, when there is one). A saved corrector
    is applied to `cache.out_dir` by evaluate, reembed and corrected_index, so only one that maps
    that cache ships: 'stale' trains one only to measure drift, and with refresh the corrector
    maps the last refreshed cache, which lived only in memory."""
    neg = p.negatives
    if neg.strategy != "corrected":
        return f"strategy '{neg.strategy}' does not sample through a corrector"
    if neg.refresh_every > 0:
        return "with refresh_every the corrector maps the last refreshed cache, not cache.out_dir"
    return None


def evaluation(record: dict) -> dict:
    """One evaluation's figures and its step."""
    return {"step": record["step"], **{k: record[k] for k in EVAL_FIELDS if k in record}}


def verdict(validations: list[dict], best_step: int | None, keep_best: bool) -> tuple[dict, str | None]:
    """The run against the pre-trained encoder (its step-0 validation on dev): the summary's
    figures, and a plain sentence when the saved model does not beat it (None when it does)."""
    dev = [v for v in validations if "dev_ndcg_at_10" in v]
    if not dev or dev[0]["step"] != 0:
        return {}, None
    zero, final = dev[0]["dev_ndcg_at_10"], dev[-1]["dev_ndcg_at_10"]
    saved = max(v["dev_ndcg_at_10"] for v in dev) if keep_best else final
    figures = {"zero_shot_dev_ndcg_at_10": zero, "beats_zero_shot": saved > zero}
    if keep_best and best_step == 0:
        best_later = max(dev[1:], key=lambda v: v["dev_ndcg_at_10"], default=None)
        later = (
            f"; the best later step, {best_later['step']}, reached {best_later['dev_ndcg_at_10']:.4f}"
            if best_later
            else ""
        )
        return figures, (
            f"training did not beat the pre-trained encoder on dev (nDCG@10 {zero:.4f} at step 0"
            f"{later}): the saved model is the pre-trained encoder"
        )
    if saved <= zero:
        return figures, (
            f"the saved model does not beat the pre-trained encoder on dev (nDCG@10 {saved:.4f} "
            f"against {zero:.4f} at step 0)"
        )
    return figures, None


def fit_for_serving(result, p: TrainParams, cache, ds, params: Params) -> dict:
    """train.corrector.serving_fit: the saved corrector fitted for retrieval after training
    (freshen.training.serving_fit); what it did, for the metrics. Replaces `result.corrector`."""
    if not p.corrector.serving_fit.epochs:
        return {}
    if not ds.qrels.get("dev"):
        logger.warning("freshen train: no dev queries, so no serving fit (it keeps the epoch that is best on dev)")
        return {}
    fit = serving_fit.fit_for_serving(result.encoder, result.corrector, cache, ds, p, params.seed, params.encode)
    result.corrector = fit.corrector
    return {
        "serving_fit_epoch": fit.epoch,
        "serving_fit_dev_ndcg_at_10_before": fit.dev_ndcg_at_10[0],
        "serving_fit_dev_ndcg_at_10": fit.dev_ndcg_at_10[fit.epoch],
    }


def progress_writer(metrics: Path):
    """`on_eval`: the counters and the evaluation so far, written to `train.metrics`."""
    return lambda rec, counters: write_json(
        metrics, {**counters.as_dict(), "steps_run": rec["step"], "evaluation": evaluation(rec)}
    )


def run(params: Params, root: Path, log=NullLog()) -> dict:
    t = params.train
    world = World.from_env()  # one process, or this rank of a `torchrun` / `freshen train --nproc N` run
    try:
        if not world.main:  # rank 0 holds the outputs, writes and logs; the others train beside it
            return train_and_save(params, root, NullLog(), world=world)
        # one train of this project at a time: the model, the metrics rewritten at every evaluation, the curve
        with (
            hold(path(root, t.out_dir), path(root, t.metrics), path(root, t.curve)),
            restored_on_failure(path(root, t.metrics)) as model_saved,
        ):
            return train_and_save(params, root, log, model_saved, world)
    finally:
        world.close()


def train_and_save(params: Params, root: Path, log=NullLog(), model_saved=lambda: None, world: World = World()) -> dict:
    """The pilot when there is one, training, then the model, metrics and curve written;
    `model_saved()` is called once the new model has replaced the previous one. A rank other
    than 0 of a distributed run trains and writes nothing (it returns {})."""
    t = p = params.train  # p: the section trained with, the pilot's choice when there is one
    set_threads(world.size)
    ds = prepared(params, root, lazy_corpus=True)  # passage texts read by byte offset, as batches need them
    cache = checked_cache(path(root, params.cache.out_dir), params, root, ds)
    clusters = read_clusters(path(root, params.cluster.out_dir))
    teacher = None
    if t.teacher.scores:
        teacher = read_teacher_scores(path(root, t.teacher.scores), ds.corpus, ds.queries)
    if t.corrector.init:  # a path in the project, as every path param, wherever the trainer runs
        init = str(path(root, t.corrector.init))
        Corrector.load(init, expect_dim=cache.dim)  # fail before training
        p = t.model_copy(update={"corrector": t.corrector.model_copy(update={"init": init})})

    def pretrained():
        encoder = place(Encoder.from_params(params.model.model_dump(), root), t.device)
        if encoder.dim != cache.dim:
            raise FreshenError(
                f"{cache.path}/manifest.json: field 'dim': cache dim {cache.dim} does not match "
                f"the encoder's {encoder.dim}"
            )
        return encoder

    pilot_summary: dict = {}
    if pilot.candidates(p):

        def run_pilot(variant: TrainParams, steps: int) -> tuple[float, int]:
            trainer = Trainer(
                pretrained(),
                ds,
                cache,
                clusters,
                variant,
                params.seed,
                encode_p=params.encode,
                teacher=teacher,
                world=world,
            )
            res = trainer.run(steps)
            return res.validations[-1]["dev_ndcg_at_10"], res.counters.train_passage_passes

        p, pilot_summary = pilot.choose(p, run_pilot)
        log.metrics(
            {
                "pilot_passes": pilot_summary["pilot_passes"],
                "pilot_choice": pilot_summary["pilot_choice"],
                **{
                    f"pilot_{i}_dev_ndcg_at_10": c["dev_ndcg_at_10"]
                    for i, c in enumerate(pilot_summary["pilot_candidates"])
                },
            }
        )
        logger.info(
            f"freshen train: pilot chose candidate {pilot_summary['pilot_choice']} "
            f"{pilot_summary['pilot_candidates'][pilot_summary['pilot_choice']]}"
        )
    result = train(
        pretrained(),
        ds,
        cache,
        clusters,
        p,
        params.seed,
        encode_p=params.encode,
        teacher=teacher,
        on_log=lambda rec, step: log.metrics({k: v for k, v in rec.items() if k != "step"}, step),
        on_eval=progress_writer(path(root, t.metrics)) if world.main else None,
        world=world,
    )
    world.barrier()  # every rank finished training: a rank that died fails the run before anything is written
    if not world.main:
        return {}
    not_saved = corrector_not_saved(p) if result.corrector is not None else "no corrector"
    fitted = fit_for_serving(result, p, cache, ds, params) if not_saved is None else {}
    with atomic_dir(path(root, t.out_dir)) as tmp:
        result.encoder.save(tmp / "encoder")
        if not_saved is None:
            result.corrector.save(tmp / "corrector")
        # no wall time in the model folder (it is in metrics/train.json): the same params must
        # give the same bytes, so that DVC and the registry see the same model
        counters = {k: v for k, v in result.counters.as_dict().items() if k != "wall_seconds"}
        write_json(
            tmp / "train_state.json",
            {
                "counters": counters,
                "corrector_saved": not_saved is None,
                **({"corrector_not_saved": not_saved} if not_saved else {}),
                **fitted,
                "params_hash": params_hash(params, SECTIONS),
                "cache_manifest": cache.manifest,
                "steps": t.steps,
            },
        )
    model_saved()  # from here on the metrics describe the model there, even if writing the summary fails
    last = result.curve[-1]
    figures, warning = verdict(result.validations, result.best_step, t.keep_best)
    summary = {
        **result.counters.as_dict(),
        "final_loss": last["loss"],
        "steps_run": len(result.curve),
        **figures,
        **pilot_summary,
        **fitted,
        **(
            {
                "best_step": result.best_step,
                "best_dev_ndcg_at_10": max(v.get("dev_ndcg_at_10", float("-inf")) for v in result.validations),
            }
            if result.best_step is not None
            else {}
        ),
        **{k: last[k] for k in ("corrector_loss", "cos_stale_fresh", "cos_corrected_fresh") if k in last},
        **({"evaluation": evaluation(result.validations[-1])} if result.validations else {}),
    }
    write_json(path(root, t.metrics), summary)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CURVE_FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows([v for v in result.validations if v["step"] == 0] + result.curve)
    write_text(path(root, t.curve), buf.getvalue())
    log.metrics({k: v for k, v in summary.items() if isinstance(v, (int, float))})
    log.artifact(path(root, t.curve), "plots")
    if warning:
        log.tags({"train.beats_zero_shot": "false"})
        logger.warning(f"freshen train: {warning}")
    return summary
