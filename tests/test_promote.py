"""Promotion against a real MLflow registry (SQLite): aliases move only on improvement."""

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from freshen.steps.promote import TAG_DECISION, TAG_REASON, decide

NAME = "tiny-retriever"


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
    d = decide(client, NAME, v1, "dev.ndcg", 0.5)
    assert d["promoted"] and str(client.get_model_version_by_alias(NAME, "champion").version) == v1
    assert str(client.get_model_version_by_alias(NAME, "challenger").version) == v1
    tags = client.get_model_version(NAME, v1).tags
    assert tags[TAG_DECISION] == "champion" and "first model" in tags[TAG_REASON]


def test_worse_challenger_never_takes_champion_and_better_does(client, tmp_path):
    v1, v2, v3 = (_version(client, tmp_path, i) for i in (1, 2, 3))
    decide(client, NAME, v1, "dev.ndcg", 0.50)
    worse = decide(client, NAME, v2, "dev.ndcg", 0.40)
    assert not worse["promoted"]
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == v1
    assert str(client.get_model_version_by_alias(NAME, "challenger").version) == v2
    assert "does not beat champion v1" in client.get_model_version(NAME, v2).tags[TAG_REASON]
    tie = decide(client, NAME, v3, "dev.ndcg", 0.50)
    assert not tie["promoted"]
    better = decide(client, NAME, v3, "dev.ndcg", 0.61)
    assert better["promoted"] and str(client.get_model_version_by_alias(NAME, "champion").version) == v3


def test_min_improvement_is_respected(client, tmp_path):
    v1, v2 = _version(client, tmp_path, 1), _version(client, tmp_path, 2)
    decide(client, NAME, v1, "m", 0.50)
    assert not decide(client, NAME, v2, "m", 0.505, min_improvement=0.01)["promoted"]


def test_promoting_the_same_version_twice_is_a_no_op(client, tmp_path):
    v1 = _version(client, tmp_path, 1)
    decide(client, NAME, v1, "m", 0.5)
    before = client.get_model_version(NAME, v1).tags
    again = decide(client, NAME, v1, "m", 0.9)
    assert not again["promoted"] and "already champion" in again["reason"]
    assert client.get_model_version(NAME, v1).tags == before
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == v1
