"""Data layer: BEIR loading, validation errors that name file/line/field, dev split, fetch."""

import json

import pytest

from freshen.data.beir import carve_dev, load_beir, read_queries
from freshen.data.fetch import ENV_VAR, resolve_dataset_dir, sha256_file
from freshen.errors import DataError, FreshenError
from tiny import make_beir


def test_loads_tiny_dataset(tiny_beir):
    ds = load_beir(tiny_beir)
    assert len(ds.corpus) == 60 and len(ds.queries) == 42
    assert set(ds.qrels) == {"train", "test"}
    assert len(ds.qrels["train"]) == 30 and ds.qrels["train"]["q0"] == {"d0": 1}
    assert ds.doc_texts(["d0"])[0].startswith("brain doc0 ") or ds.doc_texts(["d0"])[0].startswith("cell")


@pytest.mark.parametrize("crlf,header", [(True, True), (False, False), (True, False)])
def test_qrels_crlf_and_header_variants(tmp_path, crlf, header):
    ds = load_beir(make_beir(tmp_path / "b", crlf=crlf, header=header))
    assert len(ds.qrels["train"]) == 30
    assert all(d.startswith("d") and not d.endswith("\r") for docs in ds.qrels["test"].values() for d in docs)


def _rewrite_line(path, lineno, new):
    lines = path.read_text().splitlines()
    lines[lineno - 1] = new
    path.write_text("\n".join(lines) + "\n")


def test_bad_json_names_file_and_line(tiny_beir):
    _rewrite_line(tiny_beir / "corpus.jsonl", 3, '{"_id": "d2", "text": ')
    with pytest.raises(DataError, match=r"corpus\.jsonl:3: not valid JSON"):
        load_beir(tiny_beir)


def test_missing_id_and_text(tiny_beir):
    _rewrite_line(tiny_beir / "corpus.jsonl", 5, json.dumps({"title": "x", "text": "y"}))
    with pytest.raises(DataError, match=r"corpus\.jsonl:5: field '_id': missing"):
        load_beir(tiny_beir)
    _rewrite_line(tiny_beir / "corpus.jsonl", 5, json.dumps({"_id": "d4", "title": "x"}))
    with pytest.raises(DataError, match=r"corpus\.jsonl:5: field 'text': missing"):
        load_beir(tiny_beir)
    _rewrite_line(tiny_beir / "queries.jsonl", 2, json.dumps({"_id": "q1", "text": "  "}))
    with pytest.raises(DataError, match=r"queries\.jsonl:2: field 'text'"):
        read_queries(tiny_beir / "queries.jsonl")


def test_duplicate_ids(tiny_beir):
    _rewrite_line(tiny_beir / "corpus.jsonl", 7, json.dumps({"_id": "d1", "title": "", "text": "dup"}))
    with pytest.raises(DataError, match=r"corpus\.jsonl:7: field '_id': duplicate id 'd1' \(first seen on line 2\)"):
        load_beir(tiny_beir)


def test_qrels_unknown_ids_and_bad_score(tiny_beir):
    qrels = tiny_beir / "qrels" / "test.tsv"
    _rewrite_line(qrels, 3, "q31\tnope\t1")
    with pytest.raises(DataError, match=r"test\.tsv:3: field 'corpus-id': unknown document id 'nope'"):
        load_beir(tiny_beir)
    _rewrite_line(qrels, 3, "zz\td1\t1")
    with pytest.raises(DataError, match=r"test\.tsv:3: field 'query-id': unknown query id 'zz'"):
        load_beir(tiny_beir)
    _rewrite_line(qrels, 3, "q31\td31\thigh")
    with pytest.raises(DataError, match=r"test\.tsv:3: field 'score'"):
        load_beir(tiny_beir)


def test_empty_split_and_missing_split(tiny_beir):
    (tiny_beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n")
    with pytest.raises(DataError, match=r"test\.tsv: split is empty"):
        load_beir(tiny_beir)
    (tiny_beir / "qrels" / "test.tsv").unlink()
    with pytest.raises(DataError, match=r"required split 'test' not found"):
        load_beir(tiny_beir)


def test_carve_dev_is_seeded_and_disjoint(tiny_beir):
    train = load_beir(tiny_beir).qrels["train"]
    a_train, a_dev = carve_dev(train, 0.2, seed=7)
    b_train, b_dev = carve_dev(train, 0.2, seed=7)
    _, c_dev = carve_dev(train, 0.2, seed=8)
    assert a_dev == b_dev and a_train == b_train
    assert len(a_dev) == 6 and not set(a_dev) & set(a_train) and set(a_dev) | set(a_train) == set(train)
    assert set(c_dev) != set(a_dev)


def test_resolve_dataset_dir_env_local_and_missing(tiny_beir, tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    data = {"name": "tiny", "local_dir": str(tiny_beir), "url": None,
            "sha256": {"corpus.jsonl": sha256_file(tiny_beir / "corpus.jsonl")}}
    assert resolve_dataset_dir(data, tmp_path) == tiny_beir.resolve()
    bad = dict(data, sha256={"corpus.jsonl": "0" * 64})
    with pytest.raises(DataError, match="sha256 mismatch"):
        resolve_dataset_dir(bad, tmp_path)
    with pytest.raises(FreshenError, match=r"looked in .*nowhere-here.*FRESHEN_DATA_DIR"):
        resolve_dataset_dir(dict(data, local_dir=str(tmp_path / "nowhere-here")), tmp_path)
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "also-missing"))
    with pytest.raises(FreshenError, match="FRESHEN_DATA_DIR=.*no such folder"):
        resolve_dataset_dir(data, tmp_path)
    monkeypatch.setenv(ENV_VAR, str(tiny_beir))
    assert resolve_dataset_dir(dict(data, local_dir=None), tmp_path) == tiny_beir


def test_non_utf8_line_is_named(tiny_beir):
    path = tiny_beir / "corpus.jsonl"
    lines = path.read_bytes().splitlines()
    lines[8] = b'{"_id": "d8", "title": "", "text": "caf\xe9"}'
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(DataError, match=r"corpus\.jsonl:9: not valid UTF-8"):
        load_beir(tiny_beir)
