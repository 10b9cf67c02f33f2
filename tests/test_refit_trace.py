"""benchmarks/refit_trace.py: `--freeze-after-refit` leaves the corrector exactly as the refit
left it, and only then; the trace's records are kept by step."""


import torch
from bench import load_benchmark

from freshen.modeling.encoder import Encoder
from freshen.training.loop import Trainer


def test_freeze_after_refit_keeps_the_refitted_corrector(tiny_training, monkeypatch):
    trace = load_benchmark("refit_trace")
    ds, cache, clusters, params = tiny_training
    p = {**params["train"], "precision": "fp32", "steps": 5, "eval_every": 0, "lr": 5e-3,
         "negatives": {**params["train"]["negatives"], "strategy": "corrected"}}
    p["corrector"] = {**p["corrector"], "warmup_steps": 0, "refit_every": 2, "refit_sample": 6, "refit_epochs": 5}
    original = Trainer.refit

    def run(freeze: bool):
        monkeypatch.setattr(Trainer, "refit", original)  # undone after the test
        if freeze:
            trace.freeze_after_refit()
        t = Trainer(Encoder.from_params(params["model"]), ds, cache, clusters, p, seed=3)
        after_refit, refit = [], t.refit

        def watched(step):
            out = refit(step)
            after_refit.append({k: v.clone() for k, v in t.corrector.state_dict().items()})
            return out

        t.refit = watched
        final = t.run().corrector.state_dict()
        assert len(after_refit) == 2  # refits after steps 2 and 4
        return after_refit[-1], final

    last, final = run(freeze=True)  # step 5 ran after the last refit
    assert all(torch.equal(last[k], final[k]) for k in last)
    last, final = run(freeze=False)  # the control: online updates do move it
    assert any(not torch.equal(last[k], final[k]) for k in last)


def test_records_merge_a_steps_logs():
    records = load_benchmark("refit_trace").Records()
    records.metrics({"loss": 1.0}, 5)
    records.metrics({"probe_cos_corrected_fresh": 0.9}, 5)
    records.metrics({"loss": 0.5}, 6)
    records.metrics({"steps_run": 6})  # the run's summary: no step
    assert records.by_step == {5: {"loss": 1.0, "probe_cos_corrected_fresh": 0.9}, 6: {"loss": 0.5}}
