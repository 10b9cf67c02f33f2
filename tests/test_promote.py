"""Promotion against a real MLflow registry (SQLite): aliases move only on improvement over
both the champion and the pre-trained (zero-shot) encoder."""

import json
import logging
import shutil

import mlflow
import pytest
from freshen.errors import FreshenError
from freshen.integrity import checkpoint_digest
from freshen.params import validate_params
from freshen.steps import promote
from freshen.steps.evaluate import report
from freshen.steps.promote import (
    TAG_DECISION,
    TAG_REASON,
    TAG_VS_CHAMPION,
    TAG_VS_ZERO_SHOT,
    TAG_ZERO_SHOT_VALUE,
    decide,
)
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

NAME = "tiny-retriever"
ZS = ("dev.zero_shot.ndcg_at_10", 0.3)  # below every trained figure of the decide() tests


@pytest.fixture()
def client(mlflow_uri, tmp_path):
    mlflow.set_tracking_uri(mlflow_uri)
    c = MlflowClient()
    c.create_registered_model(NAME)
    return c


def _version(client, tmp_path, i):
    src = tmp_path / f"model{i}"
    src.mkdir()
    (src / "MLmodel").write_text("flavors: {}\n")
    return str(client.create_model_version(NAME, str(src)).version)


def test_first_model_becomes_champion(client, tmp_path):
    v1 = _version(client, tmp_path, 1)
    d = decide(client, NAME, v1, "dev.ndcg", 0.5, *ZS)
    assert d["promoted"] and str(client.get_model_version_by_alias(NAME, "champion").version) == v1
    assert str(client.get_model_version_by_alias(NAME, "challenger").version) == v1
    tags = client.get_model_version(NAME, v1).tags
    assert tags[TAG_DECISION] == "champion" and "first model" in tags[TAG_REASON]


def test_worse_challenger_never_takes_champion_and_better_does(client, tmp_path):
    v1, v2, v3 = (_version(client, tmp_path, i) for i in (1, 2, 3))
    decide(client, NAME, v1, "dev.ndcg", 0.50, *ZS)
    worse = decide(client, NAME, v2, "dev.ndcg", 0.40, *ZS)
    assert not worse["promoted"]
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == v1
    assert str(client.get_model_version_by_alias(NAME, "challenger").version) == v2
    assert "does not beat champion v1" in client.get_model_version(NAME, v2).tags[TAG_REASON]
    tie = decide(client, NAME, v3, "dev.ndcg", 0.50, *ZS)
    assert not tie["promoted"]
    better = decide(client, NAME, v3, "dev.ndcg", 0.61, *ZS)
    assert better["promoted"] and str(client.get_model_version_by_alias(NAME, "champion").version) == v3


def test_min_improvement_is_respected(client, tmp_path):
    v1, v2 = _version(client, tmp_path, 1), _version(client, tmp_path, 2)
    decide(client, NAME, v1, "m", 0.50, *ZS)
    assert not decide(client, NAME, v2, "m", 0.505, *ZS, min_improvement=0.01)["promoted"]


def test_promoting_the_same_version_twice_is_a_no_op(client, tmp_path):
    v1 = _version(client, tmp_path, 1)
    decide(client, NAME, v1, "m", 0.5, *ZS)
    before = client.get_model_version(NAME, v1).tags
    again = decide(client, NAME, v1, "m", 0.9, *ZS)
    assert not again["promoted"] and "already champion" in again["reason"]
    assert client.get_model_version(NAME, v1).tags == before
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == v1


def test_a_champion_at_the_maximum_is_named_a_saturated_split_not_refused_in_silence(client, tmp_path):
    """A small dev split where a model scores nDCG@10 = 1.0 cannot tell a better model from it:
    promote says so, naming the split and its size, when it happens and on every refusal after."""
    metric = "dev.trained.ndcg_at_10"
    v1, v2 = (_version(client, tmp_path, i) for i in (1, 2))
    first = decide(client, NAME, v1, metric, 1.0, *ZS, split_queries=3)
    assert first["promoted"]
    assert first["saturated"].startswith("the dev split (3 queries) is saturated: this model scores 1.0000")
    assert "data.min_dev_queries" in first["saturated"] and first["saturated"] in first["reason"]
    tie = decide(client, NAME, v2, metric, 1.0, *ZS, split_queries=3)
    assert not tie["promoted"] and _alias_of(client, "champion") == v1
    assert tie["saturated"].startswith(
        f"the dev split (3 queries) is saturated: champion v{v1} scores 1.0000 on {metric}, the maximum, "
        "so no challenger can ever beat it; use more or harder dev queries"
    )
    assert tie["saturated"] in client.get_model_version(NAME, v2).tags[TAG_REASON]
    # the pre-trained encoder at the maximum: no model can beat it either
    from freshen.saturation import promotion_note

    note = promotion_note(metric, 0.9, None, None, 1.0, None)
    assert note.startswith("the dev split is saturated: the pre-trained encoder already scores the maximum")


def test_a_split_below_the_maximum_is_not_called_saturated(client, tmp_path):
    v1, v2 = _version(client, tmp_path, 1), _version(client, tmp_path, 2)
    assert decide(client, NAME, v1, "dev.x", 0.99, *ZS, split_queries=40)["saturated"] is None
    assert decide(client, NAME, v2, "dev.x", 0.98, *ZS, split_queries=40)["saturated"] is None


def test_evaluate_warns_of_a_saturated_dev_split_with_its_size():
    from freshen.saturation import evaluation_note

    dev = {"queries": 3, "trained": {"ndcg_at_10": 1.0}, "zero_shot": {"ndcg_at_10": 0.8}}
    note = evaluation_note({"dev": dev}, "dev")
    assert note.startswith("the dev split (3 queries) is saturated: trained scores ndcg_at_10 = 1.0, the maximum")
    assert "qrels/dev.tsv" in note
    both = evaluation_note({"dev": {**dev, "zero_shot": {"ndcg_at_10": 1.0}}}, "dev")
    assert "trained and zero_shot score ndcg_at_10 = 1.0" in both
    assert evaluation_note({"dev": {**dev, "trained": {"ndcg_at_10": 0.97}}}, "dev") is None


def _alias_of(client, alias):
    return str(client.get_model_version_by_alias(NAME, alias).version)


# promote.run end to end: an eval.json and a model folder per run, registered as a pyfunc


@pytest.fixture()
def project(tmp_path, tiny_params, mlflow_uri):
    mlflow.set_tracking_uri(mlflow_uri)
    return tmp_path / "proj", tiny_params


def _promote(project, tiny_model, trained: float, zero_shot: float, variant: int) -> dict:
    """promote.run over dev nDCG@10 `trained` vs `zero_shot`, for weights told apart by `variant`."""
    root, params = project
    encoder = root / params["train"]["out_dir"] / "encoder"
    shutil.rmtree(encoder, ignore_errors=True)
    shutil.copytree(tiny_model, encoder)
    (encoder / "variant.json").write_text(json.dumps(variant))  # other bytes: another model digest
    _eval_json(project, trained, zero_shot, checkpoint_digest(encoder.parent))
    return promote.run(validate_params(params), root)


def _eval_json(project, trained: float, zero_shot: float, digest: str | None, **caches: str) -> None:
    root, _ = project
    (root / "metrics").mkdir(parents=True, exist_ok=True)
    (root / "metrics/eval.json").write_text(
        json.dumps(
            {
                "dev": {"queries": 4, "trained": {"ndcg_at_10": trained}, "zero_shot": {"ndcg_at_10": zero_shot}},
                **({"measured": {"model_digest": digest, **caches}} if digest else {}),
            }
        )
    )


def _alias(client, name, alias):
    return str(client.get_model_version_by_alias(name, alias).version)


def _written(project) -> dict:
    root, params = project
    return json.loads((root / params["promote"]["out"]).read_text())


def test_challenger_beating_the_champion_but_not_zero_shot_stays_challenger(project, tiny_model, caplog):
    caplog.set_level(logging.INFO, logger="freshen.steps.promote")
    name = project[1]["promote"]["registered_model"]
    client = MlflowClient()
    assert _promote(project, tiny_model, 0.60, 0.50, 1)["promoted"]
    d = _promote(project, tiny_model, 0.65, 0.70, 2)
    assert not d["promoted"] and d["version"] == "2"
    assert _alias(client, name, "champion") == "1" and _alias(client, name, "challenger") == "2"
    tags = client.get_model_version(name, "2").tags
    assert tags[TAG_DECISION] == "challenger"
    assert tags[TAG_VS_ZERO_SHOT] == "0.6500 <= 0.7000 + 0.0" and tags[TAG_VS_CHAMPION] == "0.6500 > 0.6000 + 0.0"
    written = _written(project)
    assert written["beats_zero_shot"] is False and written["beats_champion"] is True
    assert written["champion_value"] == 0.60 and written["zero_shot_value"] == 0.70
    assert written["zero_shot_metric"] == "dev.zero_shot.ndcg_at_10" and written["champion"] == "1"
    assert "zero-shot" in written["reason"] and "champion v1 unchanged" in written["reason"]
    assert "champion v1 (" not in written["reason"]  # the champion comparison was won: not named as the block
    assert caplog.records[-1].getMessage().startswith("promote: NOT promoted: ")

    # the same refused weights again: the same version, refused again for the same reason
    again = _promote(project, tiny_model, 0.65, 0.70, 2)
    assert not again["promoted"] and again["reason"] == written["reason"] and again["version"] == "2"
    assert len(client.search_model_versions(f"name='{name}'")) == 2
    assert _alias(client, name, "champion") == "1"
    caplog.clear()
    # the champion's weights again: nothing to do, and no "NOT promoted" for it
    same = _promote(project, tiny_model, 0.60, 0.50, 1)
    assert not same["promoted"] and "already champion" in same["reason"] and _alias(client, name, "champion") == "1"
    assert _written(project)["beats_zero_shot"] is True and "NOT promoted" not in caplog.text


def test_promote_warns_when_the_champion_saturates_dev_and_writes_it(project, tiny_model, caplog):
    caplog.set_level(logging.INFO, logger="freshen.steps.promote")
    assert _promote(project, tiny_model, 1.0, 0.5, 1)["promoted"]
    d = _promote(project, tiny_model, 1.0, 0.5, 2)
    assert not d["promoted"] and _written(project)["saturated"] == d["saturated"]
    assert "the dev split (4 queries) is saturated: champion v1 scores 1.0000" in d["saturated"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings[-1] == f"promote: {d['saturated']}"


def test_first_model_not_beating_zero_shot_does_not_become_champion(project, tiny_model):
    name = project[1]["promote"]["registered_model"]
    client = MlflowClient()
    d = _promote(project, tiny_model, 0.50, 0.50, 1)  # a tie does not beat it
    assert not d["promoted"] and d["champion"] is None
    with pytest.raises(MlflowException, match="champion"):  # no such alias
        client.get_model_version_by_alias(name, "champion")
    assert _alias(client, name, "challenger") == "1"
    tags = client.get_model_version(name, "1").tags
    assert tags[TAG_DECISION] == "challenger" and tags[TAG_VS_CHAMPION] == "no champion"
    assert tags[TAG_VS_ZERO_SHOT] == "0.5000 <= 0.5000 + 0.0"
    written = _written(project)
    assert written["beats_zero_shot"] is False and written["beats_champion"] is None
    assert written["champion_value"] is None
    assert written["reason"] == (
        "dev.trained.ndcg_at_10=0.5000 does not beat the pre-trained (zero-shot) encoder "
        "(dev.zero_shot.ndcg_at_10=0.5000, margin 0.0): no champion yet"
    )


def test_a_model_beating_both_is_promoted_with_both_comparisons_recorded(project, tiny_model):
    name = project[1]["promote"]["registered_model"]
    client = MlflowClient()
    first = _promote(project, tiny_model, 0.60, 0.50, 1)
    assert first["promoted"] and "first model" in first["reason"] and "zero-shot" in first["reason"]
    d = _promote(project, tiny_model, 0.70, 0.50, 2)
    assert d["promoted"] and _alias(client, name, "champion") == "2" and _alias(client, name, "challenger") == "2"
    tags = client.get_model_version(name, "2").tags
    assert tags[TAG_DECISION] == "champion" and tags[TAG_ZERO_SHOT_VALUE] == "0.5"
    assert tags[TAG_VS_CHAMPION] == "0.7000 > 0.6000 + 0.0" and tags[TAG_VS_ZERO_SHOT] == "0.7000 > 0.5000 + 0.0"
    written = _written(project)
    assert written["beats_zero_shot"] is True and written["beats_champion"] is True
    assert written["champion_value"] == 0.60 and written["zero_shot_value"] == 0.50 and written["champion"] == "2"
    assert "beats champion v1" in written["reason"] and "zero-shot" in written["reason"]


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"min_improvement_over_zero_shot": -1},
            "params: promote.min_improvement_over_zero_shot: Input should be greater than or equal to 0, got -1",
        ),
        (
            {"min_improvement_over_zero_shot": "abc"},
            "params: promote.min_improvement_over_zero_shot: Input should be a valid number, got 'abc'",
        ),
        (
            {"zero_shot_metric": "dev.zero_shot.ndcg_at_5"},
            "field 'dev.zero_shot.ndcg_at_5' (promote.zero_shot_metric) not found",
        ),
    ],
)
def test_bad_zero_shot_params_fail_before_anything_is_registered(project, tiny_model, change, message):
    project[1]["promote"].update(change)
    with pytest.raises(FreshenError) as err:
        _promote(project, tiny_model, 0.60, 0.50, 1)
    assert message in str(err.value)
    if "zero_shot_metric" in change:
        assert "eval.json" in str(err.value)
    assert MlflowClient().search_registered_models() == []


def test_the_vs_zero_shot_section_is_no_split_in_the_report():
    m = {"ndcg_at_10": 0.5, "recall_at_100": 0.9, "mrr_at_10": 0.4}
    text = report({"dev": {"trained": m, "zero_shot": m}, "drift": {}, "vs_zero_shot": {"dev": 0.0}})
    assert "vs_zero_shot" not in text and text.count("system") == 1


@pytest.mark.parametrize("measured", ["another", None])
def test_figures_of_another_model_are_never_registered(project, tiny_model, measured):
    """eval.json written for other weights (or by an older evaluate that did not say which) is
    refused before the registry is touched: retrain without evaluate cannot promote on stale figures."""
    root, params = project
    assert _promote(project, tiny_model, 0.60, 0.50, 1)["promoted"]
    (root / params["train"]["out_dir"] / "encoder" / "variant.json").write_text("2")  # retrained, not evaluated
    _eval_json(project, 0.90, 0.50, "0" * 64 if measured else None)
    with pytest.raises(FreshenError, match=r"eval.json: field 'measured(.model_digest)?'.*run evaluate again"):
        promote.run(validate_params(params), root)
    name = params["promote"]["registered_model"]
    assert len(MlflowClient().search_model_versions(f"name='{name}'")) == 1
    assert _alias(MlflowClient(), name, "champion") == "1"


def test_a_promote_killed_after_registering_is_finished_by_its_rerun(project, tiny_model, monkeypatch):
    """Killed after the version exists but before its decision tags: the rerun finds the
    version by its digest (tagged when it was created) and registers nothing twice."""
    name = project[1]["promote"]["registered_model"]

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed")

    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(MlflowClient, "set_model_version_tag", killed)
        _promote(project, tiny_model, 0.60, 0.50, 1)
    versions = MlflowClient().search_model_versions(f"name='{name}'")
    assert len(versions) == 1 and versions[0].tags[promote.TAG_DIGEST]  # tagged at creation
    d = _promote(project, tiny_model, 0.60, 0.50, 1)
    assert d["promoted"] and d["version"] == "1"
    assert len(MlflowClient().search_model_versions(f"name='{name}'")) == 1


def test_a_pyfunc_logged_by_a_killed_promote_is_reused(project, tiny_model, monkeypatch):
    """Killed between logging the pyfunc and registering it: the rerun registers that logged model."""
    import mlflow

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed")

    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(mlflow, "register_model", killed)
        _promote(project, tiny_model, 0.60, 0.50, 1)
    logged = mlflow.search_logged_models(output_format="list")
    assert len(logged) == 1
    _promote(project, tiny_model, 0.60, 0.50, 1)
    assert len(mlflow.search_logged_models(output_format="list")) == 1
    name = project[1]["promote"]["registered_model"]
    v = MlflowClient().get_model_version(name, "1")
    assert v.source == logged[0].model_uri


def test_promote_logs_the_model_without_mlflow_advice_warnings(project, tiny_model):
    """The signature is given, so MLflow's hints about inferring one are noise in every task log."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _promote(project, tiny_model, 0.60, 0.50, 1)
    advice = [str(w.message) for w in caught if "type hint" in str(w.message) or "input example" in str(w.message)]
    assert advice == []


@pytest.mark.parametrize("body", [None, b"", b'{"dev": {"trained": ', b'{"dev": "\xff"}', b"[1, 2]"])
def test_an_unreadable_eval_json_exits_as_a_named_data_error(project, tiny_model, monkeypatch, capsys, body):
    """eval.json missing, empty, cut short, not UTF-8 or not an object: `freshen promote` exits 2
    with one line naming the file, never a traceback, and registers nothing."""
    from freshen.cli import main

    root, params = project
    _promote(project, tiny_model, 0.60, 0.50, 1)  # a model and a readable eval.json first
    name = params["promote"]["registered_model"]
    metrics_file = root / "metrics/eval.json"
    if body is None:
        metrics_file.unlink()
    else:
        metrics_file.write_bytes(body)
    (root / params["train"]["out_dir"] / "encoder" / "variant.json").write_text("2")  # weights not yet registered
    monkeypatch.setattr("freshen.cli.load_params", lambda *args, **kwargs: validate_params(params))
    capsys.readouterr()
    assert main(["promote", "--root", str(root)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"freshen promote: error: {metrics_file}: "), err
    assert (
        "not found: run evaluate first"
        if body is None
        else "not valid"
        if body[:1] != b"["
        else "must be a JSON object"
    ) in err[0]
    assert len(MlflowClient().search_model_versions(f"name='{name}'")) == 1


def test_figures_measured_on_another_cache_are_never_registered(project, tiny_model):
    """eval.json records the caches it ranked with: a cache rebuilt since (here the re-embedded one,
    at another precision) makes its figures stale, and promote refuses them until evaluate reruns."""
    from freshen.integrity import file_sha256

    root, params = project
    manifests = {
        key: root / params[section]["out_dir"] / "manifest.json"
        for key, section in (("stale_cache", "cache"), ("fresh_cache", "reembed"))
    }
    for key, manifest in manifests.items():
        manifest.parent.mkdir(parents=True, exist_ok=True)
        manifest.write_text(json.dumps({"cache": key, "precision": "fp32"}))
    measured = {key: file_sha256(m) for key, m in manifests.items()}
    encoder = root / params["train"]["out_dir"] / "encoder"
    shutil.copytree(tiny_model, encoder)
    _eval_json(project, 0.60, 0.50, checkpoint_digest(encoder.parent), **measured)
    assert promote.run(validate_params(params), root)["promoted"]  # the caches it measured: registered

    (encoder / "variant.json").write_text("2")  # retrained and evaluated, then the fresh cache rebuilt
    _eval_json(project, 0.90, 0.50, checkpoint_digest(encoder.parent), **measured)
    manifests["fresh_cache"].write_text(json.dumps({"cache": "fresh_cache", "precision": "bf16"}))
    with pytest.raises(
        FreshenError,
        match=r"eval.json: field 'measured.fresh_cache': measured another fresh cache "
        r".*run evaluate again",
    ):
        promote.run(validate_params(params), root)
    name = params["promote"]["registered_model"]
    assert len(MlflowClient().search_model_versions(f"name='{name}'")) == 1
    measured["fresh_cache"] = file_sha256(manifests["fresh_cache"])  # evaluated again: registered
    _eval_json(project, 0.90, 0.50, checkpoint_digest(encoder.parent), **measured)
    assert promote.run(validate_params(params), root)["version"] == "2"
