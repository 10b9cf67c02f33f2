"""A new corpus version against the caches of the last one (issue 30): only added and edited
documents are encoded, removed ones leave the cache and the index, every row says where it came
from, and a consumer never sees a removed document once the pointer has swapped, even when a run
died between writing the new index and swapping the pointer."""

import json

import numpy as np
import pytest
import torch
from freshen.cache import load_cache
from freshen.cache_rows import ORIGIN
from freshen.errors import DataError
from freshen.index_store import read_pointer, search_serving
from freshen.orchestration.events import serving_event
from freshen.params import validate_params
from freshen.steps import corrected_index, embed_cache, merge_shards, prepare, reembed
from test_sharding import make_champion, shard_all
from tiny import ENCODER_DIR

REMOVED = ["d50", "d51", "d52"]  # judged by no query: the dataset stays valid without them
EDITED = ["d1", "d2", "d3", "d4"]
ADDED = [f"d{i}" for i in range(60, 65)]


def new_version(params) -> list[str]:
    """Edit the source dataset (3 removed, 4 edited, 5 added) and prepare it again: the ids of v2."""
    corpus = params["data"]["local_dir"] + "/corpus.jsonl"
    with open(corpus) as fh:
        docs = [json.loads(line) for line in fh]
    docs = [d for d in docs if d["_id"] not in REMOVED]
    for d in docs:
        if d["_id"] in EDITED:
            d["text"] += " revised with new results on memory"
    docs += [{"_id": i, "title": f"brain {i}", "text": f"neuron cortex sleep study {i}"} for i in ADDED]
    with open(corpus, "w") as fh:
        fh.writelines(json.dumps(d) + "\n" for d in docs)
    return [d["_id"] for d in docs]


def test_a_refresh_of_a_new_corpus_version_encodes_only_added_and_edited_documents(prepared_project):
    root, params = prepared_project
    reembed.run(validate_params(params), root)  # the champion's rows of version 1
    v1 = load_cache(root / params["reembed"]["out_dir"])
    ids = new_version(params)
    prepare.run(validate_params(params), root)
    shard_all(root, params, 2)
    merged_stats = merge_shards.run(validate_params(params), root, num_shards=2, model_dir=ENCODER_DIR)
    v2 = load_cache(root / params["orchestration"]["refresh_dir"])
    assert v2.ids == ids and merged_stats["docs"] == 62 and not set(REMOVED) & set(v2.ids)
    assert v2.manifest["origin"] == {"encoded": len(EDITED) + len(ADDED), "reused": 62 - 9, "corrected": 0}
    origin = dict(zip(v2.ids, v2.rows.origin.tolist()))
    assert {i for i, o in origin.items() if o == 0} == set(EDITED) | set(ADDED)
    row1 = v1.row_of()
    for i, doc in enumerate(v2.ids):  # unchanged documents: the very rows of version 1
        if doc not in EDITED and doc not in ADDED:
            np.testing.assert_array_equal(v2.embeddings[i], v1.embeddings[row1[doc]])
    # the rows equal a full re-embedding of version 2 (up to float16 rounding of batch padding)
    full_params = {**params, "encode": {**params["encode"], "reuse": False}, "reembed": {"out_dir": "full"}}
    stats = reembed.run(validate_params(full_params), root)
    assert stats["passes"] == 62
    full = load_cache(root / "full")
    assert full.ids == v2.ids
    np.testing.assert_allclose(
        np.asarray(v2.embeddings, np.float32), np.asarray(full.embeddings, np.float32), atol=2e-3
    )
    np.testing.assert_array_equal(v2.rows.hashes, full.rows.hashes)


def test_corrected_index_serves_h_of_unchanged_rows_and_encodes_the_rest(prepared_project):
    root, params = prepared_project
    embed_cache.run(validate_params(params), root)
    _, corrector = make_champion(root, params)
    first = corrected_index.run(validate_params(params), root)
    stale = load_cache(root / params["cache"]["out_dir"])
    ids = new_version(params)
    prepare.run(validate_params(params), root)
    assert corrected_index.skip_reason(validate_params(params), root) is None
    pointer = corrected_index.run(validate_params(params), root)
    serving = root / params["orchestration"]["serving_dir"]
    assert pointer["folder"] != first["folder"] and pointer["history"] == [pointer["folder"], first["folder"]]
    cache = load_cache(serving / pointer["folder"])
    assert cache.ids == ids and cache.manifest["origin"] == {"encoded": 9, "reused": 0, "corrected": 53}
    row = stale.row_of()
    kept = [i for i, d in enumerate(ids) if d not in EDITED and d not in ADDED]
    with torch.no_grad():
        expected = corrector(torch.from_numpy(np.asarray(stale.embeddings, np.float32)[[row[ids[i]] for i in kept]]))
    np.testing.assert_allclose(np.asarray(cache.embeddings, np.float32)[kept], expected.numpy(), atol=2e-3)
    hits = search_serving(serving, np.asarray(cache.embeddings, np.float32), k=100)
    assert all(not set(REMOVED) & set(h) for h in hits) and len(hits[0]) == 62
    extra = serving_event(validate_params(params), root)  # what the serving Asset event tells
    assert extra["folder"] == pointer["folder"] and "history" not in extra
    assert extra["rows"] == cache.manifest["origin"] and (extra["passes"], extra["passes_saved"]) == (9, 53)


def test_a_run_killed_before_the_pointer_swap_never_serves_a_removed_document(prepared_project, monkeypatch):
    root, params = prepared_project
    embed_cache.run(validate_params(params), root)
    make_champion(root, params)
    first = corrected_index.run(validate_params(params), root)
    serving = root / params["orchestration"]["serving_dir"]
    queries = np.asarray(load_cache(serving / first["folder"]).embeddings, np.float32)
    new_version(params)
    prepare.run(validate_params(params), root)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the cache and its index are written; the pointer is not swapped

    monkeypatch.setattr(corrected_index, "publish", killed)
    with pytest.raises(KeyboardInterrupt):
        corrected_index.run(validate_params(params), root)
    assert read_pointer(serving)["folder"] == first["folder"]  # still version 1, whole
    assert any(set(REMOVED) & set(h) for h in search_serving(serving, queries, k=100))
    monkeypatch.undo()
    pointer = corrected_index.run(validate_params(params), root)  # the retry
    assert read_pointer(serving)["folder"] == pointer["folder"] != first["folder"]
    assert not any(set(REMOVED) & set(h) for h in search_serving(serving, queries, k=100))


def test_row_provenance_that_does_not_match_the_rows_is_refused(prepared_project):
    root, params = prepared_project
    embed_cache.run(validate_params(params), root)
    out = root / params["cache"]["out_dir"]
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**manifest, "origin": {"encoded": 59, "reused": 1, "corrected": 0}}))
    with pytest.raises(DataError, match=r"manifest.json.*field 'origin'"):
        load_cache(out)
    (out / "manifest.json").write_text(json.dumps(manifest))
    np.save(out / ORIGIN, np.ones(60, dtype=np.uint8))  # every row now claims to be reused
    with pytest.raises(DataError, match=r"field 'row_origin_sha256'"):
        load_cache(out)


def test_a_stale_cache_of_another_corpus_or_a_corpus_with_duplicate_ids_publishes_nothing(prepared_project):
    root, params = prepared_project
    embed_cache.run(validate_params(params), root)
    make_champion(root, params)
    out = root / params["cache"]["out_dir"]
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**manifest, "corpus": "nfcorpus"}))
    with pytest.raises(DataError, match=r"field 'corpus'.*nfcorpus"):
        corrected_index.run(validate_params(params), root)
    (out / "manifest.json").write_text(json.dumps(manifest))
    corpus = root / params["data"]["out_dir"] / "corpus.jsonl"
    lines = corpus.read_text().splitlines()
    corpus.write_text("\n".join(lines + [lines[0]]) + "\n")  # d0 twice
    with pytest.raises(DataError, match=rf"corpus.jsonl:{len(lines) + 1}.*d0"):
        corrected_index.run(validate_params(params), root)
    assert read_pointer(root / params["orchestration"]["serving_dir"]) is None
