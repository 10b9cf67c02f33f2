"""A corpus is encoded once per model: embed_cache, reembed and the refresh shards copy the rows
of a complete cache with the same embedding key (model, corpus, settings that change a row)
instead of encoding again, and count the encoder passes this saved (issue 26, defect 5)."""

import numpy as np
import pytest
import torch
from freshen import embed_corpus, sharding
from freshen.cache import load_cache
from freshen.modeling.encoder import Encoder
from freshen.params import validate_params
from freshen.steps import embed_cache, merge_shards, reembed, reembed_shard
from tiny import ENCODER_DIR


@pytest.fixture()
def encoded(monkeypatch):
    """The number of texts the encoder is given, by every step, from now on."""
    real, texts = embed_corpus.encode_chunks, []

    def counting(encoder, corpus, kind, sink, start_row=0, **kw):
        texts.append(len(corpus) - start_row)
        return real(encoder, corpus, kind, sink, start_row=start_row, **kw)

    monkeypatch.setattr(embed_corpus, "encode_chunks", counting)
    return texts


def with_(params: dict, **encode) -> dict:
    return {**params, "encode": {**params["encode"], **encode}}


def files(folder):
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.iterdir()}


def test_a_second_embed_cache_with_the_same_model_and_corpus_encodes_nothing(prepared_project, encoded):
    root, params = prepared_project
    first = embed_cache.run(validate_params(params), root)
    assert first["passes"] == 60 and first["passes_saved"] == 0 and encoded == [60]
    out = root / params["cache"]["out_dir"]
    before = files(out)
    # the batch size and chunking only schedule the same work: still the same cache
    again = embed_cache.run(validate_params(with_(params, batch_size=5, chunk_rows=7)), root)
    assert again["passes"] == 0 and again["passes_saved"] == 60 and encoded == [60]
    assert files(out) == before  # not rewritten


@pytest.mark.parametrize(
    "change",
    [
        {"encode": {"precision": "bf16"}},  # another precision gives other rows
        {"model": {"passage_max_len": 16}},  # another token limit too
        {"encode": {"reuse": False}},  # asked to encode again
    ],
)
def test_embed_cache_encodes_again_when_a_row_could_differ(prepared_project, encoded, change):
    root, params = prepared_project
    embed_cache.run(validate_params(params), root)
    changed = {k: {**params[k], **v} for k, v in change.items()}
    stats = embed_cache.run(validate_params({**params, **changed}), root)
    assert stats["passes"] == 60 and stats["passes_saved"] == 0 and encoded == [60, 60]


def test_a_damaged_cache_is_encoded_again_and_an_edited_corpus_only_where_it_changed(prepared_project, encoded):
    root, params = prepared_project
    embed_cache.run(validate_params(params), root)
    out = root / params["cache"]["out_dir"]
    emb = out / "embeddings.npy"
    data = bytearray(emb.read_bytes())
    data[-1] ^= 0xFF  # one byte of one row changed since the cache was written
    emb.write_bytes(bytes(data))
    assert embed_cache.run(validate_params(params), root)["passes"] == 60
    corpus = root / params["data"]["out_dir"] / "corpus.jsonl"
    edited = sum("protein" in line for line in corpus.read_text().splitlines())
    assert 0 < edited < 60
    corpus.write_text(corpus.read_text().replace("protein", "proteins"))  # same ids, some other texts
    stats = embed_cache.run(validate_params(params), root)
    assert (stats["passes"], stats["rows_reused"], stats["rows_encoded"]) == (edited, 60 - edited, edited)
    assert encoded == [60, 60, edited]


def test_refresh_shards_take_the_rows_reembed_wrote_for_the_same_model(prepared_project, encoded, monkeypatch):
    """After a promotion the champion is the model `reembed` just used: the refresh copies those
    rows instead of embedding the corpus a second time."""
    root, params = prepared_project
    reembed.run(validate_params(params), root)
    assert encoded == [60]
    stats = [
        reembed_shard.run(validate_params(params), root, shard=i, num_shards=3, model_dir=ENCODER_DIR) for i in range(3)
    ]
    assert encoded == [60]  # no text encoded by the shards
    assert [(s["passes"], s["passes_saved"]) for s in stats] == [(0, 20)] * 3
    merge_shards.run(validate_params(params), root, num_shards=3, model_dir=ENCODER_DIR)
    one = load_cache(root / params["reembed"]["out_dir"])
    merged = load_cache(root / params["orchestration"]["refresh_dir"])
    assert merged.ids == one.ids and merged.manifest["model_digest"] == one.manifest["model_digest"]
    np.testing.assert_array_equal(np.asarray(merged.embeddings), np.asarray(one.embeddings))  # the same rows
    assert merged.manifest["embedding_key"] == one.manifest["embedding_key"]

    # another model (here: the encoder changed on disk) is embedded for real
    Encoder.load(root / ENCODER_DIR).save(root / "other")
    cfg = root / "other" / "config.json"
    cfg.write_text(cfg.read_text().replace("}", ', "note": 1}', 1))  # a different model digest
    shards = root / params["orchestration"]["shards_dir"]
    stats = reembed_shard.run(validate_params(params), root, shard=0, num_shards=3, model_dir="other")
    assert stats["passes"] == 20 and encoded == [60, 20]
    assert load_cache(shards / sharding.shard_name(0, 3)).manifest.get("reused_from") is None


def test_a_shard_whose_rows_did_not_change_still_names_the_new_corpus_version(prepared_project, encoded):
    """A corpus update that leaves shard 0's documents as they were: its folder holds the right rows
    but a manifest of the old version; it is written again (rows copied, nothing encoded) so that
    the merge accepts the set. (The live deployment check found this.)"""
    import json

    from freshen.integrity import file_sha256
    from freshen.steps import prepare

    root, params = prepared_project
    p = validate_params(params)
    for i in range(3):
        reembed_shard.run(p, root, shard=i, num_shards=3, model_dir=ENCODER_DIR)
    corpus = params["data"]["local_dir"] + "/corpus.jsonl"
    docs = [json.loads(line) for line in open(corpus)]
    docs[-1]["text"] += " revised"  # shard 2 changes; shards 0 and 1 hold the same texts
    with open(corpus, "w") as fh:
        fh.writelines(json.dumps(d) + "\n" for d in docs)
    prepare.run(p, root)
    encoded.clear()
    stats = [reembed_shard.run(p, root, shard=i, num_shards=3, model_dir=ENCODER_DIR) for i in range(3)]
    assert [s["passes"] for s in stats] == [0, 0, 1] and encoded == [1]
    new_sha = file_sha256(root / params["data"]["out_dir"] / "corpus.jsonl")
    shards = root / params["orchestration"]["shards_dir"]
    assert {load_cache(shards / sharding.shard_name(i, 3)).manifest["corpus_sha256"] for i in range(3)} == {new_sha}
    merge_shards.run(p, root, num_shards=3, model_dir=ENCODER_DIR)
    assert load_cache(root / params["orchestration"]["refresh_dir"]).manifest["count"] == 60


def test_a_run_that_kept_the_pre_trained_encoder_is_not_embedded_again(prepared_project, encoded):
    """A run that keeps step 0 saves a copy of the pre-trained encoder (other files, another
    digest, the same weights): `reembed` copies the stale cache's rows instead of encoding them."""
    root, params = prepared_project  # its trained encoder is such a copy
    embed_cache.run(validate_params(params), root)
    stale = load_cache(root / params["cache"]["out_dir"])
    stats = reembed.run(validate_params(params), root)
    assert encoded == [60]  # embed_cache's passes only
    assert (stats["passes"], stats["passes_saved"], stats["rows_reused"]) == (0, 60, 60)
    out = load_cache(root / params["reembed"]["out_dir"])
    assert out.ids == stale.ids
    np.testing.assert_array_equal(np.asarray(out.embeddings), np.asarray(stale.embeddings))
    assert out.rows.counts() == {"encoded": 0, "reused": 60, "corrected": 0}
    assert out.manifest["model_digest"] != stale.manifest["model_digest"]  # it names the model it stands for
    assert out.manifest["reused_from"] == ["embed_cache"] and out.manifest["corrected"] is False

    # the same encoder encoded for real gives those rows (what the copy stands for)
    assert reembed.run(validate_params(with_(params, reuse=False)), root)["passes"] == 60
    np.testing.assert_array_equal(np.asarray(load_cache(out.path).embeddings), np.asarray(stale.embeddings))
    assert encoded == [60, 60]

    # one weight changed: another encoder, encoded
    enc = Encoder.load(root / ENCODER_DIR)
    with torch.no_grad():
        next(enc.parameters())[0, 0] += 1e-3
    enc.save(root / ENCODER_DIR)
    assert reembed.run(validate_params(params), root)["passes"] == 60 and encoded == [60, 60, 60]
    assert load_cache(out.path).rows.counts()["encoded"] == 60
