"""Data layer: BEIR loading, validation errors that name file/line/field, dev split, fetch."""

import json

import numpy as np
import pytest
from freshen.data.beir import carve_dev, load_beir, read_queries
from freshen.data.fetch import ENV_VAR, resolve_dataset_dir, sha256_file
from freshen.errors import DataError, FreshenError
from freshen.params.sections import DataParams
from tiny import make_beir


def test_loads_tiny_dataset(tiny_beir):
    ds = load_beir(tiny_beir)
    assert len(ds.corpus) == 60 and len(ds.queries) == 42
    assert set(ds.qrels) == {"train", "test"}
    assert len(ds.qrels["train"]) == 30 and ds.qrels["train"]["q0"] == {"d0": 1}
    first = json.loads((tiny_beir / "corpus.jsonl").read_text().splitlines()[0])
    assert first["_id"] == "d0" and ds.doc_texts(["d0"]) == [f"{first['title']} {first['text']}"]  # title, then text


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


def test_a_lazy_corpus_is_the_same_dataset_with_no_text_in_memory(tiny_beir):
    """`load_beir(lazy_corpus=True)` (what `train` loads): the same ids in file order, documents,
    qrels and passage texts, read from corpus.jsonl when asked for."""
    from freshen.data.corpus_file import CorpusFile, LazyCorpus

    _rewrite_line(tiny_beir / "corpus.jsonl", 4, json.dumps({"_id": "d3", "title": None, "text": " padded "}))
    eager, lazy = load_beir(tiny_beir), load_beir(tiny_beir, lazy_corpus=True)
    assert isinstance(lazy.corpus, LazyCorpus)
    assert list(lazy.corpus) == list(eager.corpus) and len(lazy.corpus) == len(eager.corpus) == 60
    assert all(lazy.corpus[d] == eager.corpus[d] for d in eager.corpus)
    assert "d3" in lazy.corpus and "nope" not in lazy.corpus
    assert lazy.qrels == eager.qrels
    texts = lazy.doc_texts()
    assert isinstance(texts, CorpusFile) and list(texts[0:60]) == eager.doc_texts()
    some = ["d41", "d3", "d0", "d41"]  # any order, repeats
    assert list(lazy.doc_texts(some)[0:4]) == eager.doc_texts(some) and lazy.doc_texts(some).at([3, 1]) == [
        eager.doc_texts(["d41"])[0],
        "padded",
    ]
    # the texts are read when asked for, not kept: the last document rewritten in place is read anew
    _rewrite_line(tiny_beir / "corpus.jsonl", 60, json.dumps({"_id": "d59", "text": "rewritten"}))
    assert lazy.corpus["d59"] == {"title": "", "text": "rewritten"} and texts[59] == "rewritten"


def test_the_training_load_skips_text_hashes_and_makes_the_same_ones_when_asked(tiny_beir):
    """`train` reads texts, never their hashes: its load (`lazy_corpus`) skips hashing; asked for
    anyway, the hashes (of the whole, a slice, a subset) equal those of the validating pass."""
    from freshen.data.corpus_file import CorpusFile, text_hash

    _rewrite_line(tiny_beir / "corpus.jsonl", 4, json.dumps({"_id": "d3", "title": None, "text": " padded "}))
    hashed = CorpusFile(tiny_beir / "corpus.jsonl")
    lazy = load_beir(tiny_beir, lazy_corpus=True).corpus.file
    assert lazy._hashes is None and hashed._hashes is not None and len(hashed.hashes) == 60
    part = lazy.take(np.array([41, 3, 0]))
    assert part._hashes is None and list(part.hashes) == [hashed.hashes[i] for i in (41, 3, 0)]
    assert part.hashes[1] == text_hash("padded")
    assert list(lazy.slice(10, 20).hashes) == list(hashed.hashes[10:20])
    assert np.array_equal(lazy.hashes, hashed.hashes) and lazy.hashes.dtype == hashed.hashes.dtype
    assert list(lazy.slice(5, 9).hashes) == list(hashed.hashes[5:9])  # from the whole, now made


@pytest.mark.parametrize(
    "line,match",
    [
        ('{"_id": "d2", "text": ', r"corpus\.jsonl:3: not valid JSON"),
        (json.dumps({"_id": "d1", "title": "", "text": "dup"}), r"corpus\.jsonl:3: field '_id': duplicate id 'd1'"),
    ],
)
def test_a_lazy_corpus_is_validated_as_an_eager_one(tiny_beir, line, match):
    _rewrite_line(tiny_beir / "corpus.jsonl", 3, line)
    for lazy in (False, True):
        with pytest.raises(DataError, match=match):
            load_beir(tiny_beir, lazy_corpus=lazy)


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
    data = DataParams(
        name="tiny",
        local_dir=str(tiny_beir),
        url=None,
        sha256={"corpus.jsonl": sha256_file(tiny_beir / "corpus.jsonl")},
    )
    assert resolve_dataset_dir(data, tmp_path) == tiny_beir.resolve()
    bad = data.model_copy(update={"sha256": {"corpus.jsonl": "0" * 64}})
    with pytest.raises(DataError, match="sha256 mismatch"):
        resolve_dataset_dir(bad, tmp_path)
    with pytest.raises(FreshenError, match=r"looked in .*nowhere-here.*FRESHEN_DATA_DIR"):
        resolve_dataset_dir(data.model_copy(update={"local_dir": str(tmp_path / "nowhere-here")}), tmp_path)
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "also-missing"))
    with pytest.raises(FreshenError, match="FRESHEN_DATA_DIR=.*no such folder"):
        resolve_dataset_dir(data, tmp_path)
    monkeypatch.setenv(ENV_VAR, str(tiny_beir))
    assert resolve_dataset_dir(data.model_copy(update={"local_dir": None}), tmp_path) == tiny_beir


def test_non_utf8_line_is_named(tiny_beir):
    path = tiny_beir / "corpus.jsonl"
    lines = path.read_bytes().splitlines()
    lines[8] = b'{"_id": "d8", "title": "", "text": "caf\xe9"}'
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(DataError, match=r"corpus\.jsonl:9: not valid UTF-8"):
        load_beir(tiny_beir)


def _qrels_line(tiny_beir, lineno, new, split="test"):
    _rewrite_line(tiny_beir / "qrels" / f"{split}.tsv", lineno, new)


@pytest.mark.parametrize("score", ["0.7", "1.5", "abc", "nan", "inf", "1e400"])
def test_qrels_score_must_be_an_integer_grade(tiny_beir, score):
    """A fractional grade is refused, not truncated (0.7 used to become 0: the positive vanished)."""
    _qrels_line(tiny_beir, 3, f"q31\td31\t{score}")
    with pytest.raises(DataError, match=rf"test\.tsv:3: field 'score': must be an integer grade .*got '{score}'"):
        load_beir(tiny_beir)


def test_qrels_integer_grades_are_read_as_written(tiny_beir):
    _qrels_line(tiny_beir, 3, "q31\td31\t2")
    _qrels_line(tiny_beir, 4, "q32\td32\t2.0")  # an integer written as a float is that integer
    _qrels_line(tiny_beir, 5, "q33\td33\t-1")
    test = load_beir(tiny_beir).qrels["test"]
    assert test["q31"] == {"d31": 2} and test["q32"] == {"d32": 2} and test["q33"] == {"d33": -1}
    assert all(isinstance(r, int) for docs in test.values() for r in docs.values())


@pytest.mark.parametrize("bad", ["d 2", "d\t2", "d2\n", " d2", "d\u00a02"])
def test_corpus_and_query_ids_with_whitespace_are_refused(tiny_beir, bad):
    """TREC run files separate fields by whitespace: such an id would make evaluate's runs unreadable."""
    _rewrite_line(tiny_beir / "corpus.jsonl", 3, json.dumps({"_id": bad, "title": "", "text": "x"}))
    with pytest.raises(DataError, match=r"corpus\.jsonl:3: field '_id': must not contain whitespace"):
        load_beir(tiny_beir)
    make_beir(tiny_beir)
    _rewrite_line(tiny_beir / "queries.jsonl", 2, json.dumps({"_id": bad.replace("d", "q"), "text": "x"}))
    with pytest.raises(DataError, match=r"queries\.jsonl:2: field '_id': must not contain whitespace"):
        load_beir(tiny_beir)


@pytest.mark.parametrize(
    "row,field,message",
    [
        ("q31 x\td31\t1", "query-id", "must not contain whitespace"),
        ("q31\td 31\t1", "corpus-id", "must not contain whitespace"),
        ("\td31\t1", "query-id", "empty"),
        ("q31\t\t1", "corpus-id", "empty"),
    ],
)
def test_qrels_ids_with_whitespace_or_empty_are_refused(tiny_beir, row, field, message):
    _qrels_line(tiny_beir, 3, row)
    with pytest.raises(DataError, match=rf"test\.tsv:3: field '{field}': {message}"):
        load_beir(tiny_beir)


def test_qrels_four_columns_are_named_as_such(tiny_beir):
    _qrels_line(tiny_beir, 3, "q31\td31\t1\textra")
    with pytest.raises(
        DataError,
        match=r"test\.tsv:3: the row has 4 columns, 3 expected \(query-id, corpus-id, "
        r"score\)",
    ) as err:
        load_beir(tiny_beir)
    assert err.value.field is None  # not blamed on 'score'
    _qrels_line(tiny_beir, 3, "q31 Q0 d31 2")  # a TREC qrels row still reads
    assert load_beir(tiny_beir).qrels["test"]["q31"] == {"d31": 2}


@pytest.mark.parametrize("name,lineno", [("qrels/test.tsv", 4), ("queries.jsonl", 6), ("corpus.jsonl", 9)])
def test_non_utf8_bytes_name_the_file_and_line(tiny_beir, name, lineno):
    path = tiny_beir / name
    lines = path.read_bytes().splitlines()
    lines[lineno - 1] = lines[lineno - 1].replace(b"\t", b"\t\xe9", 1).replace(b'"text": "', b'"text": "\xe9', 1)
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(DataError, match=rf"{name.replace('.', '[.]')}:{lineno}: not valid UTF-8"):
        load_beir(tiny_beir)


def test_a_utf8_bom_is_stripped(tiny_beir):
    """Editors on Windows start files with a BOM; it is not part of the first id or the header."""
    from freshen.data.corpus_file import CorpusFile

    make_beir(tiny_beir, header=False)
    for name in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv", "qrels/train.tsv"):
        path = tiny_beir / name
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    ds = load_beir(tiny_beir)
    assert "d0" in ds.corpus and "q0" in ds.queries and ds.qrels["train"]["q0"] == {"d0": 1}
    assert ds.qrels["test"]["q30"] == {"d30": 1}
    corpus = CorpusFile(tiny_beir / "corpus.jsonl")
    assert corpus.ids[0] == "d0" and corpus.read(0, 1) == ds.doc_texts(["d0"])


def test_json_error_message_reads_plainly(tiny_beir):
    _rewrite_line(tiny_beir / "corpus.jsonl", 3, '{"_id": "d2", "text": "abc')
    with pytest.raises(
        DataError,
        match=r"corpus\.jsonl:3: not valid JSON \(Unterminated string starting at "
        r"column 23\)",
    ) as err:
        load_beir(tiny_beir)
    assert "at at" not in str(err.value)


def _zero_judged(tiny_beir, qids):
    """Judge each of `qids` (test queries q30..) only with score 0."""
    path = tiny_beir / "qrels" / "test.tsv"
    lines = [line for line in path.read_text().splitlines() if line.split("\t")[0] not in qids]
    lines += [f"{q}\td{q[1:]}\t0" for q in qids] + [f"{q}\td0\t0" for q in qids]
    path.write_text("\n".join(lines) + "\n")


def test_queries_without_a_relevant_judgement_are_left_out_of_evaluation(tiny_beir, caplog):
    _zero_judged(tiny_beir, ["q31", "q35", "q40"])
    ds = load_beir(tiny_beir)
    assert ds.qrels["test"]["q31"] == {"d31": 0, "d0": 0}  # read as written
    with caplog.at_level("WARNING"):
        judged = ds.evaluation_qrels("test")
        assert ds.evaluation_qrels("test") is judged  # asked again: no second warning
    assert set(judged) == set(ds.qrels["test"]) - {"q31", "q35", "q40"} and len(judged) == 9
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [
        f"{tiny_beir / 'qrels' / 'test.tsv'}: 3 queries have no relevant judgement (score > 0); left out of evaluation"
    ]


def test_a_split_with_no_relevant_judgement_cannot_be_evaluated(tiny_beir):
    _zero_judged(tiny_beir, [f"q{i}" for i in range(30, 42)])
    ds = load_beir(tiny_beir)
    with pytest.raises(
        DataError,
        match=r"test\.tsv: no query has a relevant judgement \(score > 0\): "
        r"nothing to evaluate",
    ):
        ds.evaluation_qrels("test")


def test_failed_download_names_the_url_and_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    url = (tmp_path / "no-such.zip").as_uri()
    data = DataParams(
        name="tiny", local_dir=str(tmp_path / "not-here"), url=url, download_dir=str(tmp_path / "downloads"), sha256={}
    )
    with pytest.raises(FreshenError) as err:
        resolve_dataset_dir(data, tmp_path)
    message = str(err.value)
    assert url in message and str(tmp_path / "downloads" / "tiny") in message and str(tmp_path / "not-here") in message
    (tmp_path / "no-such.zip").write_text("not a zip archive")
    with pytest.raises(DataError, match=r"no-such\.zip: not a zip archive"):
        resolve_dataset_dir(data, tmp_path)
    assert not (tmp_path / "downloads" / "tiny").exists()
