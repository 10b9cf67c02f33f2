"""Sharded re-embedding, merge, index and corrected index on tiny data, without Airflow:
K shards merge into the one-process `reembed` cache; a failed shard retried leaves a correct
cache and touches no other shard; an incomplete or mixed shard set is refused, writing nothing."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from freshen import embed_corpus, sharding
from freshen.cache import load_cache
from freshen.cli import main
from freshen.errors import FreshenError
from freshen.index_store import INDEX_FILE, check_index, read_pointer
from freshen.integrity import checkpoint_digest
from freshen.modeling.corrector import Corrector
from freshen.modeling.encoder import Encoder, model_digest
from freshen.params import validate_params
from freshen.steps import build_index, corrected_index, merge_shards, reembed, reembed_shard
from tiny import ENCODER_DIR


def shard_all(root, params, count, skip=()):
    for i in range(count):
        if i not in skip:
            reembed_shard.run(validate_params(params), root, shard=i, num_shards=count, model_dir=ENCODER_DIR)


def assert_same_cache(a, b):
    assert a.ids == b.ids
    np.testing.assert_allclose(
        np.asarray(a.embeddings, dtype=np.float32), np.asarray(b.embeddings, dtype=np.float32), atol=1e-3, rtol=0
    )  # float16 rounding of the same model's output


def test_three_shards_merge_into_the_one_process_cache(prepared_project):
    root, params = prepared_project
    reembed.run(validate_params(params), root)
    one = load_cache(root / params["reembed"]["out_dir"])
    shard_all(root, {**params, "encode": {**params["encode"], "reuse": False}}, 3)  # encoded, not copied
    merge_shards.run(validate_params(params), root, num_shards=3, model_dir=ENCODER_DIR)
    merged = load_cache(root / params["orchestration"]["refresh_dir"])
    assert_same_cache(merged, one)
    assert merged.manifest["model_digest"] == one.manifest["model_digest"] == model_digest(root / ENCODER_DIR)
    assert merged.manifest["source"] == "reembed" and merged.manifest["corrected"] is False
    assert set(one.manifest) <= set(merged.manifest)  # same format as `freshen reembed`, plus num_shards
    # paths inside the project are recorded relative to it, so the DVC hash is the same in every checkout
    assert one.manifest["model"] == merged.manifest["model"] == ENCODER_DIR
    shards_dir = root / params["orchestration"]["shards_dir"]
    assert [len(load_cache(shards_dir / sharding.shard_name(i, 3))) for i in range(3)] == [20, 20, 20]


def test_failed_shard_resumes_after_its_last_chunk_and_touches_only_its_own_output(prepared_project, monkeypatch):
    root, params = prepared_project
    params["encode"]["chunk_rows"] = 4  # 20 rows a shard: 5 chunks
    shards_dir = root / params["orchestration"]["shards_dir"]
    shard_all(root, params, 3, skip=(1,))
    before = {i: (shards_dir / sharding.shard_name(i, 3) / "embeddings.npy").stat().st_mtime_ns for i in (0, 2)}

    real = embed_corpus.encode_chunks

    def killed_after_two_chunks(encoder, texts, kind, sink, on_chunk=None, **kw):
        def checkpoint(rows_done):
            on_chunk(rows_done)
            if rows_done >= 8:
                raise RuntimeError("worker killed")

        return real(encoder, texts, kind, sink, on_chunk=checkpoint, **kw)

    monkeypatch.setattr(embed_corpus, "encode_chunks", killed_after_two_chunks)
    with pytest.raises(RuntimeError, match="worker killed"):
        reembed_shard.run(validate_params(params), root, shard=1, num_shards=3, model_dir=ENCODER_DIR)
    assert not (shards_dir / sharding.shard_name(1, 3)).exists()  # never a half-written shard
    partial = shards_dir / ".shard-001-of-003.partial"
    assert json.loads((partial / "progress.json").read_text())["rows_done"] == 8
    (shards_dir / ".shard-001-of-003.killed.tmp").mkdir()  # what a SIGKILLed attempt would leave

    starts = []

    def counting(encoder, texts, kind, sink, start_row=0, **kw):
        starts.append(start_row)
        return real(encoder, texts, kind, sink, start_row=start_row, **kw)

    monkeypatch.setattr(embed_corpus, "encode_chunks", counting)
    reembed_shard.run(validate_params(params), root, shard=1, num_shards=3, model_dir=ENCODER_DIR)
    assert starts == [8]  # the retry re-embedded rows 8..20 only
    assert not partial.exists() and not (shards_dir / ".shard-001-of-003.killed.tmp").exists()
    assert {i: (shards_dir / sharding.shard_name(i, 3) / "embeddings.npy").stat().st_mtime_ns for i in (0, 2)} == before
    merge_shards.run(validate_params(params), root, num_shards=3, model_dir=ENCODER_DIR)
    reembed.run(validate_params(params), root)
    assert_same_cache(
        load_cache(root / params["orchestration"]["refresh_dir"]), load_cache(root / params["reembed"]["out_dir"])
    )


def test_merge_with_a_missing_shard_fails_clearly_and_writes_nothing(prepared_project, mlflow_uri, capsys):
    root, params = prepared_project
    refreshed = root / params["orchestration"]["refresh_dir"]
    shard_all(root, params, 2)
    merge_shards.run(validate_params(params), root, num_shards=2, model_dir=ENCODER_DIR)  # an earlier, complete version
    snapshot = {p.name: p.read_bytes() for p in refreshed.iterdir()}

    shard_all(root, params, 3, skip=(2,))
    code = main(["merge-shards", "--root", str(root), "--num-shards", "3", "--model-dir", ENCODER_DIR])
    err = capsys.readouterr().err
    assert code == 2
    assert "1 of 3 missing: shard 2" in err and sharding.shard_name(2, 3) in err
    assert "reembed-shard" in err  # says how to fix it
    assert {p.name: p.read_bytes() for p in refreshed.iterdir()} == snapshot
    assert not [p for p in refreshed.parent.iterdir() if p.name.startswith(".refreshed")]


def test_merge_refuses_a_shard_from_another_model(prepared_project, tmp_path):
    root, params = prepared_project
    shard_all(root, params, 3)
    from tiny import make_tiny_bert

    other = make_tiny_bert(tmp_path / "other-bert", seed=1)
    Encoder.from_params({**params["model"], "name_or_path": str(other)}).save(root / "other" / "encoder")
    reembed_shard.run(validate_params(params), root, shard=1, num_shards=3, model_dir="other/encoder")
    with pytest.raises(sharding.ShardSetError) as err:
        merge_shards.run(validate_params(params), root, num_shards=3, model_dir=ENCODER_DIR)
    assert "shard-001-of-003/manifest.json: field 'model_digest'" in str(err.value)
    assert not (root / params["orchestration"]["refresh_dir"]).exists()


def test_bad_shard_numbers_are_refused_before_any_work(prepared_project):
    root, params = prepared_project
    with pytest.raises(FreshenError, match="shard must be in 0..2"):
        reembed_shard.run(validate_params(params), root, shard=3, num_shards=3, model_dir=ENCODER_DIR)
    with pytest.raises(FreshenError, match="more than the 60 documents"):
        reembed_shard.run(validate_params(params), root, shard=0, num_shards=61, model_dir=ENCODER_DIR)


def test_build_index_writes_an_index_matching_its_cache(prepared_project):
    root, params = prepared_project
    reembed.run(validate_params(params), root)
    meta = build_index.run(validate_params(params), root, cache_dir=params["reembed"]["out_dir"])
    cache = load_cache(root / params["reembed"]["out_dir"])
    assert meta["count"] == 60 and meta["ids_sha256"] == cache.manifest["ids_sha256"]
    import faiss

    index = faiss.read_index(str(cache.path / INDEX_FILE))
    assert index.ntotal == 60 and index.metric_type == faiss.METRIC_INNER_PRODUCT
    np.testing.assert_array_equal(index.reconstruct_n(0, 60), np.asarray(cache.embeddings, dtype=np.float32))
    check_index(cache, cache.path / INDEX_FILE)
    assert not [p for p in cache.path.iterdir() if p.name.startswith(".")]
    assert not Path(meta["cache"]).is_absolute() and (cache.path / meta["cache"]).resolve() == cache.path.resolve()


def make_champion(root, params, version="3"):
    """A fetched champion (what fetch-champion leaves), with a corrector that is not the identity."""
    champ = root / params["orchestration"]["champion_dir"]
    Encoder.load(root / ENCODER_DIR).save(champ / "encoder")
    torch.manual_seed(0)
    corrector = Corrector(32, hidden=16)
    torch.nn.init.normal_(corrector.mlp[-1].weight, std=0.1)
    corrector.save(champ / "corrector")
    (champ / "champion.json").write_text(
        json.dumps(
            {
                "registered_model": "freshen-retriever",
                "version": version,
                "encoder_digest": model_digest(champ / "encoder"),
                "checkpoint_digest": checkpoint_digest(champ),
                "has_corrector": True,
            }
        )
    )
    return champ, corrector


def test_corrected_index_serves_the_corrector_over_the_old_cache_until_replaced(prepared_project):
    root, params = prepared_project
    from freshen.steps import embed_cache

    embed_cache.run(validate_params(params), root)
    champ, corrector = make_champion(root, params)
    assert corrected_index.skip_reason(validate_params(params), root) is None
    pointer = corrected_index.run(validate_params(params), root)
    serving = root / params["orchestration"]["serving_dir"]
    assert pointer["corrected"] is True and read_pointer(serving)["folder"] == pointer["folder"]
    cache = load_cache(serving / pointer["folder"])
    stale = load_cache(root / params["cache"]["out_dir"])
    assert cache.manifest["corrected"] is True and cache.ids == stale.ids
    with torch.no_grad():
        expected = corrector(torch.from_numpy(np.asarray(stale.embeddings, dtype=np.float32))).numpy()
    np.testing.assert_allclose(np.asarray(cache.embeddings, dtype=np.float32), expected, atol=2e-3, rtol=0)
    check_index(cache, serving / pointer["index"])

    # once the real re-embedding of this champion serves, the corrected index is not made again
    from freshen.steps import publish_index

    shard_all(root, params, 2)
    merge_shards.run(validate_params(params), root, num_shards=2, model_dir=ENCODER_DIR)
    build_index.run(validate_params(params), root)
    published = publish_index.run(validate_params(params), root)
    assert published["corrected"] is False and published["history"] == [published["folder"], pointer["folder"]]
    assert "already serving" in corrected_index.skip_reason(validate_params(params), root)


def test_publish_refuses_a_cache_made_by_another_model(prepared_project):
    root, params = prepared_project
    shard_all(root, params, 2)
    merge_shards.run(validate_params(params), root, num_shards=2, model_dir=ENCODER_DIR)
    build_index.run(validate_params(params), root)
    make_champion(root, params)
    (root / params["orchestration"]["champion_dir"] / "champion.json").write_text(
        json.dumps(
            {
                "registered_model": "freshen-retriever",
                "version": "4",
                "encoder_digest": "f" * 64,
                "checkpoint_digest": "e" * 64,
                "has_corrector": False,
            }
        )
    )
    from freshen.steps import publish_index

    with pytest.raises(FreshenError, match="field 'model_digest'.*not by champion v4"):
        publish_index.run(validate_params(params), root)
    assert read_pointer(root / params["orchestration"]["serving_dir"]) is None


def test_disabled_dvc_versioning_exits_with_the_skip_code(prepared_project, mlflow_uri, capsys):
    root, _ = prepared_project
    args = ["version-cache", "--root", str(root), "--set", "orchestration.dvc.enabled=false"]
    assert main(args) == 99
    assert "skipped: orchestration.dvc.enabled is false" in capsys.readouterr().out
    assert main(args + ["--skip-exit-code", "0"]) == 0
    assert main(["version-cache", "--root", str(root)]) == 2  # enabled, but no DVC repository
    assert "not a DVC repository" in capsys.readouterr().err
    assert os.environ.get("FRESHEN_PARENT_RUN_ID") is None
