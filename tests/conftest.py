import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tiny import ENCODER_DIR, make_beir, make_tiny_bert, tiny_params_for  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("model") / "tiny-bert")


@pytest.fixture()
def tiny_beir(tmp_path) -> Path:
    return make_beir(tmp_path / "beir")


@pytest.fixture()
def tiny_params(tmp_path, tiny_model, tiny_beir):
    """params.yaml of the repo, pointed at tiny data and a tiny model, with small settings."""
    return tiny_params_for(REPO / "params.yaml", tiny_model, tiny_beir)


@pytest.fixture()
def prepared_project(tmp_path, tiny_params):
    """(root, params): a project with prepared data and an encoder where `train` leaves it (what
    reembed, the shards and the indexes use)."""
    import yaml
    from freshen.modeling.encoder import Encoder
    from freshen.params import validate_params
    from freshen.steps import prepare

    root = tmp_path / "proj"
    root.mkdir()
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_params, sort_keys=False))
    prepare.run(validate_params(tiny_params), root)
    Encoder.from_params(tiny_params["model"]).save(root / ENCODER_DIR)
    return root, tiny_params


@pytest.fixture()
def mlflow_uri(tmp_path, monkeypatch) -> str:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("FRESHEN_PARENT_RUN_ID", raising=False)
    return uri


@pytest.fixture()
def tiny_training(tiny_params, tiny_beir, tmp_path):
    """(dataset with a 4-query dev split, initial cache, clusters, params) for training tests."""
    from freshen.cache import write_cache
    from freshen.data.beir import load_beir
    from freshen.encoding import encode_into
    from freshen.modeling.encoder import Encoder

    ds = load_beir(tiny_beir)
    ds.qrels["dev"] = {q: ds.qrels["train"].pop(q) for q in sorted(ds.qrels["train"])[:4]}
    enc = Encoder.from_params(tiny_params["model"])
    ids = ds.doc_ids()
    cache = write_cache(
        tmp_path / "cache",
        ids,
        enc.dim,
        lambda arr: encode_into(enc, ds.doc_texts(ids), "passage", arr, precision="fp32"),
        {},
    )
    clusters = {q: i % 3 for i, q in enumerate(sorted(ds.positives("train")))}
    return ds, cache, clusters, tiny_params
