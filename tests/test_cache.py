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

    with pytest.raises(RuntimeError):
        write_cache(tmp_path / "c", ["a", "b"], 2, boom, {"v": 2})
    cache = load_cache(tmp_path / "c")
    assert cache.manifest["v"] == 1 and len(cache) == 1 and float(cache.embeddings[0, 0]) == 1.0
    assert [p.name for p in tmp_path.iterdir()] == ["c"]  # no temporary leftovers


def test_atomic_dir_never_publishes_partial(tmp_path):
    with pytest.raises(ValueError):
        with atomic_dir(tmp_path / "out") as tmp:
            (tmp / "half").write_text("x")
            raise ValueError
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == []
