"""The encoding layer: batches under a token budget, the rule for awkward text, the lazily read
corpus, and caches written chunk by chunk that resume after the last completed chunk."""

import json

import numpy as np
import pytest
from freshen import embed_corpus
from freshen.cache import load_cache
from freshen.data.beir import doc_text, read_corpus
from freshen.data.corpus_file import CorpusFile
from freshen.embed_corpus import embed_to_cache
from freshen.encoding import clean_text, encode, plan_batches
from freshen.errors import DataError
from freshen.modeling.encoder import Encoder
from freshen.params import EncodeParams

SETTINGS = EncodeParams(batch_size=8, precision="fp32", chunk_rows=5, max_tokens=None)


@pytest.fixture()
def encoder(tiny_model):
    return Encoder.from_params({"name_or_path": str(tiny_model), "passage_max_len": 32})


def test_batches_respect_count_and_token_budget_and_cover_every_text():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 300, size=500)
    batches = plan_batches(lengths, batch_size=64, max_tokens=2048)
    seen = np.concatenate(batches)
    assert sorted(seen.tolist()) == list(range(500))  # each text exactly once
    for b in batches:
        assert len(b) <= 64
        assert len(b) == 1 or len(b) * lengths[b].max() <= 2048
    assert all(lengths[a].min() >= lengths[b].max() for a, b in zip(batches, batches[1:]))  # longest first
    short = plan_batches(np.full(100, 10), batch_size=64, max_tokens=2048)
    assert [len(b) for b in short] == [64, 36]  # the count cap binds for short texts
    assert [len(b) for b in plan_batches(np.full(10, 400), batch_size=64, max_tokens=1000)] == [2] * 5


def test_token_budget_does_not_change_embeddings(encoder):
    texts = [("word " * n).strip() for n in (1, 30, 2, 17, 5, 40, 3)]
    plain = encode(encoder, texts, "passage", batch_size=8, precision="fp32")
    budget = encode(encoder, texts, "passage", batch_size=8, precision="fp32", max_tokens=40, chunk_rows=3)
    np.testing.assert_allclose(plain, budget, atol=1e-5)


def test_awkward_text_is_encoded_by_the_documented_rule(encoder):
    long = "cell " * 5000
    texts = ["", "   \n\t ", "protein \ud800 gene", long, "cell protein"]
    out = encode(encoder, texts, "passage", batch_size=8, precision="fp32")
    assert out.shape == (5, encoder.dim) and np.isfinite(out).all()
    np.testing.assert_allclose(out[0], out[1], atol=1e-6)  # blank and whitespace: both the empty string
    np.testing.assert_allclose(
        out[2], encode(encoder, ["protein \ufffd gene"], "passage", precision="fp32")[0], atol=1e-5
    )  # an unpaired surrogate becomes U+FFFD
    cut = encode(encoder, [" ".join(long.split()[:200])], "passage", precision="fp32")[0]
    np.testing.assert_allclose(out[3], cut, atol=1e-5)  # long text: truncated to max_len tokens
    assert clean_text("  a  ") == "a"


def test_corpus_file_reads_what_read_corpus_reads(tiny_beir):
    path = tiny_beir / "corpus.jsonl"
    eager = read_corpus(path)
    lazy = CorpusFile(path)
    assert lazy.ids == list(eager) and len(lazy) == len(eager)
    assert lazy.read(0, len(lazy)) == [doc_text(d) for d in eager.values()]
    part = lazy.slice(3, 7)
    assert part.ids == list(eager)[3:7] and part.read(0, 4) == lazy.read(3, 7) and part[1] == lazy[4]


def test_surrogates_and_non_utf8_in_a_corpus_are_refused_with_line_and_field(tmp_path):
    bad = tmp_path / "corpus.jsonl"
    bad.write_text('{"_id": "d1", "text": "fine"}\n{"_id": "d2", "title": "x \\ud800", "text": "t"}\n')
    with pytest.raises(DataError, match=r"corpus\.jsonl:2: field 'title': unpaired surrogate"):
        CorpusFile(bad)
    bad.write_bytes(b'{"_id": "d1", "text": "fine"}\n{"_id": "d2", "text": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"corpus\.jsonl:2: .*not valid UTF-8"):
        CorpusFile(bad)


def test_cache_resumes_after_the_last_completed_chunk(encoder, tiny_beir, tmp_path, monkeypatch):
    corpus = CorpusFile(tiny_beir / "corpus.jsonl")
    manifest = {"model_digest": "m1"}
    whole, _ = embed_to_cache(encoder, corpus, tmp_path / "whole", SETTINGS, manifest, "whole")
    expected = np.asarray(whole.embeddings)

    real = embed_corpus.encode_chunks
    calls = []

    def stop_after_two_chunks(encoder, texts, kind, sink, on_chunk=None, start_row=0, **kw):
        calls.append(start_row)

        def checkpoint(rows_done):
            on_chunk(rows_done)
            if rows_done >= 10 and len(calls) == 1:
                raise KeyboardInterrupt  # the run is stopped

        return real(encoder, texts, kind, sink, on_chunk=checkpoint, start_row=start_row, **kw)

    monkeypatch.setattr(embed_corpus, "encode_chunks", stop_after_two_chunks)
    out = tmp_path / "cache"
    with pytest.raises(KeyboardInterrupt):
        embed_to_cache(encoder, corpus, out, SETTINGS, manifest, "stopped")
    assert not out.exists()
    progress = json.loads((tmp_path / ".cache.partial" / "progress.json").read_text())
    assert progress["rows_done"] == 10

    cache, stats = embed_to_cache(encoder, corpus, out, SETTINGS, manifest, "resumed")
    assert calls == [0, 10] and stats["resumed_from_row"] == 10 and stats["passes"] == len(corpus) - 10
    np.testing.assert_array_equal(np.asarray(cache.embeddings), expected)
    assert cache.ids == corpus.ids and not (tmp_path / ".cache.partial").exists()
    assert load_cache(out).manifest["model_digest"] == "m1"


def test_a_partial_cache_from_other_settings_is_started_again(encoder, tiny_beir, tmp_path, monkeypatch):
    corpus = CorpusFile(tiny_beir / "corpus.jsonl")
    real = embed_corpus.encode_chunks

    def stop_early(encoder, texts, kind, sink, on_chunk=None, **kw):
        def checkpoint(rows_done):
            on_chunk(rows_done)
            raise KeyboardInterrupt

        return real(encoder, texts, kind, sink, on_chunk=checkpoint, **kw)

    monkeypatch.setattr(embed_corpus, "encode_chunks", stop_early)
    with pytest.raises(KeyboardInterrupt):
        embed_to_cache(encoder, corpus, tmp_path / "cache", SETTINGS, {"model_digest": "old"}, "stopped")
    monkeypatch.setattr(embed_corpus, "encode_chunks", real)
    _, stats = embed_to_cache(encoder, corpus, tmp_path / "cache", SETTINGS, {"model_digest": "new"}, "other model")
    assert stats["resumed_from_row"] == 0 and stats["passes"] == len(corpus)


def test_progress_goes_to_stdout_when_stderr_is_no_terminal(capsys):
    """Airflow files every stderr line of a task as ERROR: off a terminal the bars go to stdout."""
    from freshen.progress import QUIET_INTERVAL, progress

    bar = progress(range(3), desc="work")
    assert list(bar) == [0, 1, 2] and bar.mininterval >= QUIET_INTERVAL
    out, err = capsys.readouterr()
    assert "work" in out and "work" not in err


@pytest.mark.parametrize(
    "key,value", [("chunk_rows", 0), ("chunk_rows", -1), ("batch_size", 0), ("chunk_rows", 2.5), ("max_tokens", -1)]
)
def test_bad_encode_settings_are_refused_when_params_load(key, value):
    """chunk_rows 0 used to fail inside the first chunk, leaving `.cache.partial/` behind: the
    schema refuses it when params are loaded, before any step starts."""
    from freshen.errors import FreshenError
    from freshen.params import validate_params

    with pytest.raises(FreshenError, match=rf"^params: encode\.{key}: Input should be .*, got {value}$"):
        validate_params({"encode": {**SETTINGS.model_dump(), key: value}})
