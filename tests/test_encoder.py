"""The encoder: declared pooling, normalisation, towers, and checkpoints that
sentence-transformers and transformers both load with the same embeddings."""

import json
import shutil

import huggingface_hub.constants
import numpy as np
import pytest
import torch
from freshen.encoding import encode
from freshen.errors import FreshenError
from freshen.modeling import encoder as encoder_module
from freshen.modeling.encoder import DEFAULT_MODEL, Encoder, declared_pooling, model_digest, pool
from tiny import make_tiny_bert
from transformers import AutoTokenizer

TEXTS = ["cell protein gene doc1", "heart artery blood pressure doc2 the of", "brain"]


def test_declared_pooling_read_from_modules_json(tiny_model, tmp_path):
    assert declared_pooling(tiny_model) == ("mean", True)
    plain = make_tiny_bert(tmp_path / "plain", sentence_transformers_layout=False)
    assert declared_pooling(plain) == ("mean", False)
    enc = Encoder.from_params({"name_or_path": str(plain), "normalize": True, "pooling": "cls"})
    assert enc.config.pooling == "cls" and enc.config.normalize


def test_mean_pooling_ignores_padding():
    hidden = torch.tensor([[[1.0, 1.0], [3.0, 3.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert torch.allclose(pool(hidden, mask, "mean"), torch.tensor([[2.0, 2.0]]))
    assert torch.allclose(pool(hidden, mask, "max"), torch.tensor([[3.0, 3.0]]))
    assert torch.allclose(pool(hidden, mask, "cls"), torch.tensor([[1.0, 1.0]]))


def test_embeddings_are_normalised_and_batch_independent(tiny_model):
    enc = Encoder.from_params({"name_or_path": str(tiny_model)})
    full = encode(enc, TEXTS, "passage", batch_size=3, precision="fp32")
    one_by_one = encode(enc, TEXTS, "passage", batch_size=1, precision="fp32")
    assert full.shape == (3, 32)
    np.testing.assert_allclose(np.linalg.norm(full, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(full, one_by_one, atol=1e-5)  # dynamic padding does not change results


def test_checkpoint_loads_in_sentence_transformers_and_automodel(tiny_model, tmp_path):
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel

    enc = Encoder.from_params({"name_or_path": str(tiny_model), "passage_max_len": 32})
    enc.save(tmp_path / "ckpt")
    ours = encode(Encoder.load(tmp_path / "ckpt"), TEXTS, "passage", precision="fp32")
    st = SentenceTransformer(str(tmp_path / "ckpt"), device="cpu").encode(TEXTS, convert_to_numpy=True)
    np.testing.assert_allclose(ours, st, atol=1e-5)
    assert AutoModel.from_pretrained(tmp_path / "ckpt").config.hidden_size == 32
    assert json.loads((tmp_path / "ckpt" / "sentence_bert_config.json").read_text())["max_seq_length"] == 32


def test_two_towers_are_independent_and_saved(tiny_model, tmp_path):
    enc = Encoder.from_params({"name_or_path": str(tiny_model), "towers": "separate"})
    assert not enc.shared
    with torch.no_grad():
        for p in enc.query_model.parameters():
            p.add_(0.5)
    q, p_ = enc.embed(TEXTS, "query"), enc.embed(TEXTS, "passage")
    assert not torch.allclose(q, p_)
    enc.save(tmp_path / "two")
    again = Encoder.load(tmp_path / "two")
    assert (tmp_path / "two" / "query_encoder" / "modules.json").is_file()
    with torch.no_grad():
        assert torch.allclose(again.embed(TEXTS, "query"), q, atol=1e-5)
        assert torch.allclose(again.embed(TEXTS, "passage"), p_, atol=1e-5)


def test_model_digest_tracks_weights(tiny_model, tmp_path):
    a = model_digest(tiny_model)
    other = make_tiny_bert(tmp_path / "other", seed=1)
    assert a == model_digest(tiny_model) and a != model_digest(other)


def test_bad_model_and_pooling_are_clear(tmp_path):
    with pytest.raises(FreshenError, match="not a local folder"):
        Encoder.from_params({"name_or_path": str(tmp_path / "no-such-model")})
    with pytest.raises(FreshenError, match="towers"):
        Encoder.from_params({"name_or_path": None, "towers": "three"})


def test_saved_folder_does_not_depend_on_hf_hub_offline(tiny_model, tmp_path, monkeypatch):
    """The digest identifies weights, so how the tokenizer was loaded must not leak into it.
    huggingface_hub reads HF_HUB_OFFLINE once, at import: the test sets what it read."""
    digests = []
    for offline in (True, False):
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", offline)
        raw = tmp_path / f"raw-{offline}"
        AutoTokenizer.from_pretrained(str(tiny_model)).save_pretrained(raw)
        written = json.loads((raw / "tokenizer_config.json").read_text())
        assert written["local_files_only"] is offline  # what the encoder must drop
        enc = Encoder.from_params({"name_or_path": str(tiny_model)})
        enc.save(tmp_path / str(offline))
        assert "local_files_only" not in json.loads((tmp_path / str(offline) / "tokenizer_config.json").read_text())
        digests.append(model_digest(tmp_path / str(offline)))
    assert digests[0] == digests[1]


def test_saved_folder_does_not_depend_on_where_the_default_model_is_installed(tiny_model, tmp_path, monkeypatch):
    """`name_or_path: null` resolves to the package's folder, which differs between machines;
    the checkpoint records the name, so the same training gives the same digest anywhere."""
    elsewhere = shutil.copytree(tiny_model, tmp_path / "site-packages" / "model")
    digests = []
    for i, folder in enumerate((tiny_model, elsewhere)):
        monkeypatch.setattr(encoder_module, "default_model_path", lambda folder=folder: str(folder))
        Encoder.from_params({"name_or_path": None}).save(tmp_path / f"saved{i}")
        assert json.loads((tmp_path / f"saved{i}" / "freshen_encoder.json").read_text())["base_model"] == DEFAULT_MODEL
        digests.append(model_digest(tmp_path / f"saved{i}"))
    assert digests[0] == digests[1]


@pytest.fixture()
def saved_encoder(tiny_model, tmp_path):
    Encoder.from_params({"name_or_path": str(tiny_model)}).save(tmp_path / "enc")
    return tmp_path / "enc"


@pytest.mark.parametrize("keep", [0, 4, 100, -16])
def test_truncated_encoder_weights_are_named(saved_encoder, keep):
    from freshen.errors import DataError

    weights = saved_encoder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:keep] if keep >= 0 else data[: len(data) + keep])
    with pytest.raises(DataError, match=r"enc/model\.safetensors: not a readable safetensors file"):
        Encoder.load(saved_encoder)


def test_encoder_weights_that_do_not_fit_the_config_are_named(saved_encoder):
    from freshen.errors import DataError

    cfg = json.loads((saved_encoder / "config.json").read_text())
    (saved_encoder / "config.json").write_text(json.dumps({**cfg, "intermediate_size": 48}))
    with pytest.raises(DataError, match=r"enc/model\.safetensors: the weights do not fit .*enc/config\.json"):
        Encoder.load(saved_encoder)


def test_missing_encoder_weights_and_bad_meta_are_named(saved_encoder):
    from freshen.errors import DataError

    meta = saved_encoder / "freshen_encoder.json"
    meta.write_text("{")
    with pytest.raises(DataError, match=r"freshen_encoder\.json: not valid JSON"):
        Encoder.load(saved_encoder)
    meta.write_text('{"pooling": "mean", "layers": 3}')
    with pytest.raises(DataError, match=r"freshen_encoder\.json: field 'layers': unknown setting"):
        Encoder.load(saved_encoder)
    meta.write_text('{"pooling": "mean"}')
    (saved_encoder / "model.safetensors").unlink()
    with pytest.raises(DataError, match=r"enc: cannot load the model: .*no file named model\.safetensors"):
        Encoder.load(saved_encoder)


def test_a_relative_model_path_is_found_in_the_project_from_any_working_directory(tmp_path, mlflow_uri, monkeypatch):
    """model.name_or_path, like data.local_dir, may name a folder inside the project: a step run
    with --root from another working directory (an Airflow worker's) finds it there."""
    from freshen.cli import main
    from tiny import make_project

    root = make_project(tmp_path / "proj")  # params.yaml names the model "tiny-bert"
    monkeypatch.chdir(tmp_path)
    assert not (tmp_path / "tiny-bert").exists()
    assert main(["prepare", "--root", str(root)]) == 0
    assert main(["embed-cache", "--root", str(root)]) == 0
    manifest = json.loads((root / "artifacts/cache/initial/manifest.json").read_text())
    assert manifest["count"] == 60 and manifest["model"] == "tiny-bert"  # recorded as named, not resolved
