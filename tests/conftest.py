import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tiny import make_beir, make_tiny_bert  # noqa: E402

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
    import yaml

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"].update(local_dir=str(tiny_beir), url=None, sha256={}, verify=False, min_dev_queries=1)
    params["model"].update(name_or_path=str(tiny_model), query_max_len=16, passage_max_len=32)
    params["encode"].update(batch_size=16, precision="fp32")
    params["cluster"].update(queries_per_cluster=6, niter=5)
    # keep_best off: on a 3-query dev split the training-time index can rank step 0 (the random-weight
    # model) first, and the end-to-end tests promote a trained model; the tests of keep_best set it on
    params["train"].update(
        steps=6,
        batch_size=4,
        log_every=2,
        passage_max_len=32,
        lr=1e-3,
        eval_every=3,
        probe_passages=8,
        overlap_passages=30,
        overlap_k=5,
        keep_best=False,
    )
    params["train"]["pilot"]["steps"] = 2
    params["train"]["negatives"].update(k=2)
    params["train"]["corrector"].update(hidden=32, warmup_steps=2)
    return params


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
