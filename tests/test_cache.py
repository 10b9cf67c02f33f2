"""The embedding cache: round trip, validation against the manifest, atomic writes."""

import json

import numpy as np
import pytest
from freshen.atomic import atomic_dir
from freshen.cache import load_cache, write_cache
from freshen.errors import DataError


def _fill(values):
    def fill(arr):
        arr[:] = values

    return fill


def test_round_trip_is_float16_memmap(tmp_path):
    vals = np.random.default_rng(0).normal(size=(7, 5)).astype(np.float32)
    cache = write_cache(tmp_path / "c", [f"d{i}" for i in range(7)], 5, _fill(vals), {"model_digest": "abc"})
    assert cache.embeddings.dtype == np.float16 and isinstance(cache.embeddings, np.memmap)
    np.testing.assert_allclose(cache.embeddings, vals, atol=2e-3)
    assert cache.ids == [f"d{i}" for i in range(7)] and cache.row_of()["d3"] == 3
    m = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert m["count"] == 7 and m["dim"] == 5 and m["dtype"] == "float16" and m["model_digest"] == "abc"


def test_manifest_mismatch_is_named(tmp_path):
    write_cache(tmp_path / "c", ["a", "b"], 3, _fill(np.ones((2, 3))), {})
    mf = tmp_path / "c" / "manifest.json"
    m = json.loads(mf.read_text())
    mf.write_text(json.dumps({**m, "count": 3}))
    with pytest.raises(DataError, match=r"manifest\.json: field 'count': manifest says 3 rows, array has 2"):
        load_cache(tmp_path / "c")
    mf.write_text(json.dumps({**m, "dim": 4}))
    with pytest.raises(DataError, match=r"field 'dim'"):
        load_cache(tmp_path / "c")
    mf.write_text(json.dumps(m))
    (tmp_path / "c" / "ids.json").write_text(json.dumps(["a", "x"]))
    with pytest.raises(DataError, match=r"field 'ids_sha256'"):
        load_cache(tmp_path / "c")


def test_failed_write_leaves_previous_cache_untouched(tmp_path):
    write_cache(tmp_path / "c", ["a"], 2, _fill(np.ones((1, 2))), {"v": 1})

    def boom(arr):
        arr[:] = 5
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        write_cache(tmp_path / "c", ["a", "b"], 2, boom, {"v": 2})
    cache = load_cache(tmp_path / "c")
    assert cache.manifest["v"] == 1 and len(cache) == 1 and float(cache.embeddings[0, 0]) == 1.0
    assert [p.name for p in tmp_path.iterdir()] == ["c"]  # no temporary leftovers


def test_atomic_dir_never_publishes_partial(tmp_path):
    with pytest.raises(ValueError, match="half-way"):
        with atomic_dir(tmp_path / "out") as tmp:
            (tmp / "half").write_text("x")
            raise ValueError("half-way")
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "name,body,message",
    [
        (
            "manifest.json",
            "{not json",
            r"manifest\.json: not valid JSON \(Expecting property name enclosed in double "
            r"quotes at line 1 column 2\)",
        ),
        ("manifest.json", "", r"manifest\.json: not valid JSON \(the file is empty\)"),
        ("manifest.json", "[1, 2]", r"manifest\.json: must be a JSON object, got a list"),
        ("ids.json", '["a", "b"', r"ids\.json: not valid JSON"),
        ("ids.json", '{"a": 0}', r"ids\.json: must be a JSON list of document ids, got a dict"),
        ("ids.json", '["a", 2]', r"ids\.json: must be a JSON list of document ids \(strings\), item 2 is 2"),
    ],
)
def test_unreadable_manifest_or_ids_is_named(tmp_path, name, body, message):
    write_cache(tmp_path / "c", ["a", "b"], 3, _fill(np.ones((2, 3))), {})
    (tmp_path / "c" / name).write_text(body)
    with pytest.raises(DataError, match=message):
        load_cache(tmp_path / "c")


@pytest.mark.parametrize("field", ["format", "count", "dim", "dtype"])
def test_manifest_without_a_field_is_named(tmp_path, field):
    write_cache(tmp_path / "c", ["a", "b"], 3, _fill(np.ones((2, 3))), {})
    mf = tmp_path / "c" / "manifest.json"
    m = json.loads(mf.read_text())
    del m[field]
    mf.write_text(json.dumps(m))
    with pytest.raises(DataError, match=rf"manifest\.json: field '{field}': missing"):
        load_cache(tmp_path / "c")


@pytest.mark.parametrize(
    "keep,message",
    [
        (0, r"embeddings\.npy: the file is empty \(0 bytes\)"),
        (20, r"embeddings\.npy: not a readable \.npy array, truncated or damaged"),
        (-6, r"embeddings\.npy: not a readable \.npy array, truncated or damaged"),
    ],
)
def test_empty_or_truncated_embeddings_are_named(tmp_path, keep, message):
    write_cache(tmp_path / "c", ["a", "b"], 3, _fill(np.ones((2, 3))), {})
    emb = tmp_path / "c" / "embeddings.npy"
    data = emb.read_bytes()
    emb.write_bytes(data[:keep] if keep >= 0 else data[: len(data) + keep])
    with pytest.raises(DataError, match=message):
        load_cache(tmp_path / "c")


def test_a_garbled_progress_file_starts_the_cache_again(tmp_path):
    """progress.json is only a resume hint: unreadable, the build starts from row 0."""
    from freshen.cache import build_cache

    part = tmp_path / ".c.partial"
    part.mkdir()
    (part / "embeddings.npy").write_bytes(b"")
    (part / "progress.json").write_text('{"resume_key": ')

    def encode_rows(start, sink, checkpoint):
        sink(start, np.full((2 - start, 3), 4.0))
        checkpoint(2)

    cache, start = build_cache(tmp_path / "c", ["a", "b"], 3, encode_rows, {}, resume_key="k")
    assert start == 0 and float(cache.embeddings[1, 2]) == 4.0 and not part.exists()


def test_a_damaged_partial_array_starts_the_cache_again(tmp_path):
    from freshen.atomic import write_json
    from freshen.cache import build_cache

    part = tmp_path / ".c.partial"
    part.mkdir()
    (part / "embeddings.npy").write_bytes(b"\x93NUMPY")  # the build died while creating it
    write_json(part / "progress.json", {"resume_key": "k", "rows_done": 1, "rows": 2})

    def encode_rows(start, sink, checkpoint):
        sink(start, np.full((2 - start, 3), 4.0))
        checkpoint(2)

    cache, start = build_cache(tmp_path / "c", ["a", "b"], 3, encode_rows, {}, resume_key="k")
    assert start == 0 and float(cache.embeddings[0, 0]) == 4.0


def test_the_row_reader_gives_the_arrays_rows_without_mapping_them(tmp_path):
    from freshen.cache import EMBEDDINGS, NpyRowReader

    x = np.random.default_rng(0).standard_normal((37, 5)).astype(np.float16)
    ids = [f"d{i}" for i in range(37)]
    cache = write_cache(tmp_path / "c", ids, 5, lambda a: a.__setitem__(slice(None), x), {})
    reader = NpyRowReader(cache.path / EMBEDDINGS)
    assert reader.shape == (37, 5) and len(reader) == 37 and reader.dtype == np.float16
    assert np.array_equal(reader[3:11], x[3:11]) and np.array_equal(reader[30:99], x[30:])
    assert reader[5:5].shape == (0, 5)
    assert np.array_equal(reader[np.array([36, 0, 7, 7])], x[[36, 0, 7, 7]])
    assert reader[np.array([], dtype=np.int64)].shape == (0, 5)
    with (cache.path / EMBEDDINGS).open("r+b") as fh:  # the file cut short after the reader opened it
        fh.truncate(reader.offset + 30 * reader.row_bytes)
    assert np.array_equal(reader[np.array([29, 1])], x[[29, 1]])
    with pytest.raises(DataError, match=r"embeddings\.npy: row 30 lies past the end of the file"):
        reader[np.array([1, 30])]
