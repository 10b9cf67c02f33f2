"""orchestration.refresh: whether a cache refresh re-embeds the corpus (issue 30). The decision
is made once, beside the champion, bound to its encoder and the corpus version; the re-embedding
steps skip when it says no, and refuse a decision made for another champion or corpus."""

import json

import numpy as np
import pytest
import torch
from freshen import refresh_policy
from freshen.cache import load_cache
from freshen.encoding import encode
from freshen.errors import FreshenError
from freshen.modeling.corrector import Corrector
from freshen.modeling.encoder import Encoder
from freshen.params import EncodeParams, validate_params
from freshen.params.orchestration import RefreshParams
from freshen.steps import build_index, embed_cache, fetch_champion, merge_shards, reembed_shard, version_cache
from freshen.steps.embed_cache import prepared_corpus
from test_sharding import make_champion
from tiny import ENCODER_DIR

REEMBEDDING_STEPS = [reembed_shard, merge_shards, build_index, version_cache]  # publish_index: test_dags


def with_policy(params: dict, **refresh) -> dict:
    orch = params["orchestration"]
    return {**params, "orchestration": {**orch, "refresh": {**orch.get("refresh", {}), **refresh}}}


def never_measured():
    raise AssertionError("only the drift policy measures")


@pytest.mark.parametrize(
    ("policy", "has_corrector", "cosine", "reembed"),
    [
        ("always", True, None, True),
        ("never", True, None, False),
        ("never", False, None, True),  # nothing but a re-embedding can serve it
        ("drift", True, 0.90, True),
        ("drift", True, 0.97, False),
        ("drift", False, None, True),
    ],
)
def test_the_decision_follows_the_policy_and_the_measured_drift(policy, has_corrector, cosine, reembed):
    refresh = RefreshParams(policy=policy, min_cosine=0.95, signal="cosine")
    measure = (lambda: ({"probe_docs": 8, "mean_cosine": cosine, "overlap_at_7": 0.5}, 8)) if cosine else never_measured
    decision = refresh_policy.decide(refresh, has_corrector, measure)
    assert decision["reembed"] is reembed and decision["policy"] == policy
    if cosine:
        assert decision["probe_passes"] == 8 and str(cosine) in decision["reason"]


def test_the_probe_finds_no_drift_for_an_identity_corrector_and_some_for_another(prepared_project):
    root, params = prepared_project
    embed_cache.run(validate_params(params), root)
    stale = load_cache(root / params["cache"]["out_dir"])
    encoder = Encoder.from_params(params["model"], root)  # the encoder that made the stale cache
    corpus = prepared_corpus(validate_params(params), root)
    refresh, enc = RefreshParams(probe_docs=20), EncodeParams(precision="fp32")
    identity = Corrector(stale.dim, hidden=16).eval()  # residual MLP: zero output layer at init
    stats, passes = refresh_policy.probe_drift(encoder, identity, stale, corpus, refresh, enc, seed=0)
    assert passes == 20 and stats["probe_docs"] == 20
    assert stats["mean_cosine"] > 0.999 and stats["overlap_at_10"] == 1.0
    torch.manual_seed(0)
    other = Corrector(stale.dim, hidden=16)
    torch.nn.init.normal_(other.mlp[-1].weight, std=0.5)
    drifted, _ = refresh_policy.probe_drift(encoder, other.eval(), stale, corpus, refresh, enc, seed=0)
    assert drifted["mean_cosine"] < 0.99 and drifted["overlap_at_10"] < 1.0


def test_under_never_the_reembedding_steps_skip_and_a_stale_decision_is_refused(prepared_project):
    root, params = prepared_project
    embed_cache.run(validate_params(params), root)
    champ, _ = make_champion(root, params)
    never = validate_params(with_policy(params, policy="never"))
    with pytest.raises(FreshenError, match="no refresh decision"):
        reembed_shard.skip_reason(never, root)
    info = json.loads((champ / "champion.json").read_text())
    decision = fetch_champion.refresh_decision(never, root, champ, info)
    assert decision["reembed"] is False and json.loads((champ / "refresh.json").read_text()) == decision
    for step in REEMBEDDING_STEPS:
        assert "no re-embedding" in step.skip_reason(never, root)
    always = validate_params(params)
    assert reembed_shard.skip_reason(always, root) is None  # always re-embeds, whatever was decided
    drift = validate_params(with_policy(params, policy="drift"))
    with pytest.raises(FreshenError, match="field 'policy'"):
        merge_shards.skip_reason(drift, root)
    corpus = root / params["data"]["out_dir"] / "corpus.jsonl"
    corpus.write_text(corpus.read_text().replace("protein", "proteins"))  # a new corpus version
    with pytest.raises(FreshenError, match="another champion or corpus version"):
        reembed_shard.skip_reason(never, root)


def test_the_drift_policy_reembeds_a_drifted_champion(prepared_project):
    root, params = prepared_project
    embed_cache.run(validate_params(params), root)
    champ, _ = make_champion(root, params)  # its corrector is far from the identity
    drift = validate_params(with_policy(params, policy="drift", signal="cosine", min_cosine=0.999, probe_docs=16))
    info = json.loads((champ / "champion.json").read_text())
    decision = fetch_champion.refresh_decision(drift, root, champ, info)
    assert decision["reembed"] is True and decision["probe_passes"] == 16 and decision["mean_cosine"] < 0.999
    assert reembed_shard.skip_reason(drift, root) is None
    assert reembed_shard.run(drift, root, shard=0, num_shards=2, model_dir=ENCODER_DIR)["docs"] == 30


@pytest.mark.parametrize(("on_h", "reembed"), [(0.70, True), (0.74, False), (0.80, False)])
def test_the_dev_signal_reembeds_when_h_of_the_cache_falls_behind_the_promoted_figure(on_h, reembed):
    refresh = RefreshParams(policy="drift", signal="dev_ndcg", max_dev_drop=0.01)
    stats = {"dev_queries": 81, "dev_docs": 5183, "dev_ndcg_at_10": on_h, "promoted_dev_ndcg_at_10": 0.745}
    decision = refresh_policy.decide(refresh, True, lambda: (stats, 0))
    assert decision["reembed"] is reembed and decision["signal"] == "dev_ndcg" and decision["probe_passes"] == 0
    assert decision["dev_drop"] == round(0.745 - on_h, 4) and str(on_h) in decision["reason"]


def test_the_dev_probe_scores_h_of_the_cache_as_evaluate_scores_a_cache(prepared_project):
    """An identity corrector over the cache its encoder made: the dev figure of that cache, with
    evaluate's rules (top 100, no query retrieves its own id); a damaged corrector scores lower."""
    from freshen.retrieval import evaluate_run, exclude_self, to_run

    root, params = prepared_project
    p = validate_params(params)
    embed_cache.run(p, root)
    stale = load_cache(root / params["cache"]["out_dir"])
    encoder = Encoder.from_params(params["model"], root)
    corpus = prepared_corpus(p, root)
    queries, qrels = fetch_champion.dev_split(p, root, corpus.ids)
    enc = EncodeParams(precision="fp32")
    identity = Corrector(stale.dim, hidden=16).eval()
    stats, passes = refresh_policy.probe_dev(encoder, identity, stale, corpus, queries, qrels, enc)
    assert passes == 0 and stats["dev_queries"] == len(qrels) == 3 and stats["dev_docs"] == 60
    qids = sorted(qrels)
    q = encode(encoder, [queries[x] for x in qids], "query", precision="fp32")
    table = np.asarray(stale.embeddings, dtype=np.float32)
    scores = q @ table.T
    top = np.argsort(-scores, axis=1)[:, :60]
    direct = evaluate_run(qrels, exclude_self(to_run(qids, stale.ids, np.take_along_axis(scores, top, 1), top)))
    assert stats["dev_ndcg_at_10"] == pytest.approx(direct["ndcg_at_10"], abs=1e-4)
    torch.manual_seed(0)
    damaged = Corrector(stale.dim, hidden=16)
    torch.nn.init.normal_(damaged.mlp[-1].weight, std=3.0)
    worse, _ = refresh_policy.probe_dev(encoder, damaged.eval(), stale, corpus, queries, qrels, enc)
    assert worse["dev_ndcg_at_10"] < stats["dev_ndcg_at_10"]


def test_the_dev_signal_reads_the_promoted_figure_from_the_champions_tags(prepared_project):
    root, params = prepared_project
    embed_cache.run(validate_params(params), root)
    champ, _ = make_champion(root, params)
    drift = validate_params(with_policy(params, policy="drift", signal="dev_ndcg", max_dev_drop=0.01))
    info = json.loads((champ / "champion.json").read_text())
    with pytest.raises(FreshenError, match="tag 'freshen.metric' is None"):
        fetch_champion.refresh_decision(drift, root, champ, info, {})
    promoted = {"freshen.metric": "dev.trained.ndcg_at_10"}
    high = fetch_champion.refresh_decision(drift, root, champ, info, {**promoted, "freshen.metric_value": "1.0"})
    assert high["reembed"] is True and high["promoted_dev_ndcg_at_10"] == 1.0 and high["probe_passes"] == 0
    assert json.loads((champ / "refresh.json").read_text())["dev_drop"] == high["dev_drop"] > 0.01
    low = fetch_champion.refresh_decision(drift, root, champ, info, {**promoted, "freshen.metric_value": "0.0"})
    assert low["reembed"] is False and low["dev_ndcg_at_10"] == high["dev_ndcg_at_10"]
    assert "no re-embedding" in reembed_shard.skip_reason(drift, root)
