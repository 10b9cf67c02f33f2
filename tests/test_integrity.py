"""Nothing silently wrong: a cache of another corpus, NaN in a cache, a loss or a metric each
stop the step with where it came from, before anything is written."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from freshen.atomic import write_json
from freshen.cache import load_cache, write_cache
from freshen.errors import DataError, FreshenError
from freshen.integrity import check_cache_corpus, nonfinite_key
from freshen.modeling.corrector import Corrector
from freshen.modeling.encoder import Encoder
from freshen.params import validate_params
from freshen.steps import cluster_queries, embed_cache, prepare, train
from freshen.training.loop import Trainer
from tiny import train_params


@pytest.fixture()
def embedded(tmp_path, tiny_params, mlflow_uri):
    """A project folder with prepared data, clusters and the initial cache (steps run in-process)."""
    root = tmp_path / "proj"
    root.mkdir()
    for step in (prepare, cluster_queries, embed_cache):
        step.run(validate_params(tiny_params), root)
    return root, tiny_params


def _corpus(root: Path, params: dict) -> Path:
    return root / params["data"]["out_dir"] / "corpus.jsonl"


def test_the_cache_manifest_names_its_corpus_and_array(embedded):
    from freshen.integrity import file_sha256

    root, params = embedded
    cache = load_cache(root / params["cache"]["out_dir"])
    assert cache.manifest["corpus_sha256"] == file_sha256(_corpus(root, params))
    assert cache.manifest["embeddings_sha256"] == file_sha256(cache.path / "embeddings.npy")


def test_train_refuses_a_cache_of_another_corpus_and_writes_nothing(embedded):
    root, params = embedded
    corpus = _corpus(root, params)
    corpus.write_text(corpus.read_text() + json.dumps({"_id": "new1", "title": "", "text": "a new document"}) + "\n")
    with pytest.raises(DataError, match=r"manifest.json: field 'corpus_sha256': the cache was embedded from another"):
        train.run(validate_params(params), root)
    assert not (root / params["train"]["out_dir"]).exists() and not (root / params["train"]["metrics"]).exists()


def test_a_cache_of_part_of_the_corpus_or_with_unknown_ids_is_refused(tmp_path):
    ids = ["d1", "d2", "d3"]
    cache = write_cache(tmp_path / "c", ids, 4, lambda arr: arr.fill(0.5), {})
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("")
    check_cache_corpus(cache, ids, corpus)  # the same documents: fine
    with pytest.raises(
        DataError,
        match=r"ids.json: the cache does not match .*1 corpus documents are not cached, "
        r"e.g. 'd4'",
    ):
        check_cache_corpus(cache, [*ids, "d4"], corpus)
    with pytest.raises(DataError, match=r"1 cached ids are not in the corpus, e.g. 'd3'"):
        check_cache_corpus(cache, ids[:2], corpus)


def test_a_nan_row_in_the_cache_stops_train_naming_the_row_and_document(embedded):
    root, params = embedded
    cache = load_cache(root / params["cache"]["out_dir"])
    arr = np.load(cache.path / "embeddings.npy", mmap_mode="r+")
    arr[3, 5] = np.nan
    arr.flush()
    del arr
    with pytest.raises(DataError, match=rf"embeddings.npy: row 3 \(document '{cache.ids[3]}'\) holds NaN or Inf"):
        train.run(validate_params(params), root)
    assert not (root / params["train"]["out_dir"]).exists()


def test_a_cache_is_never_written_with_nan_rows(tmp_path):
    def fill(arr):
        arr.fill(0.1)
        arr[2, 0] = np.inf

    with pytest.raises(DataError, match=r"row 2 \(document 'c'\) holds NaN or Inf.*nothing was written"):
        write_cache(tmp_path / "cache", ["a", "b", "c"], 4, fill, {})
    assert list(tmp_path.iterdir()) == []


def test_a_diverging_run_stops_naming_the_step(tiny_training):
    """lr 1e8 blows the encoder up within a few steps: the step it happens at is named, not a
    misleading error from the negative sampler downstream."""
    ds, cache, clusters, params = tiny_training
    p = train_params(
        params["train"], precision="fp32", steps=6, eval_every=0, pilot={"candidates": []}, lr=1e8, warmup_ratio=0.0
    )

    t = Trainer(Encoder.from_params(params["model"]), ds, cache, clusters, p, seed=5)
    with pytest.raises(
        FreshenError,
        match=r"train: step \d: the (encoder's query embeddings hold NaN or Inf|"
        r"(retriever|corrector) loss is nan): training diverged",
    ):
        t.run()


def test_metrics_json_never_holds_nan(tmp_path):
    target = tmp_path / "m.json"
    with pytest.raises(DataError, match=r"m.json: field 'dev.trained.ndcg_at_10': not a finite number"):
        write_json(target, {"dev": {"trained": {"ndcg_at_10": float("nan")}}, "ok": 1.0})
    assert not target.exists() and list(tmp_path.iterdir()) == []
    assert nonfinite_key({"a": [1.0, {"b": float("inf")}]}) == "a.1.b"
    assert nonfinite_key({"a": [1.0, 2], "b": "nan"}) is None


def test_a_corrector_with_nan_weights_is_not_saved(tmp_path):
    c = Corrector(8, hidden=4)
    with torch.no_grad():
        next(c.parameters())[0, 0] = float("nan")
    with pytest.raises(FreshenError, match="holds NaN or Inf: not saved"):
        c.save(tmp_path / "corrector")
    assert not (tmp_path / "corrector").exists()


def _nan_row(folder: Path, row: int = 3) -> None:
    arr = np.load(folder / "embeddings.npy", mmap_mode="r+")
    arr[row, 5] = np.nan
    arr.flush()
    del arr


def _other_corpus(folder: Path) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, "corpus_sha256": "0" * 64}))


@pytest.mark.parametrize("cache", ["cache", "reembed"])
@pytest.mark.parametrize(
    "fault, message",
    [
        pytest.param(
            _other_corpus,
            r"manifest.json: field 'corpus_sha256': the cache was embedded from another corpus",
            id="other-corpus",
        ),
        pytest.param(_nan_row, r"embeddings.npy: row 3 \(document '[^']+'\) holds NaN or Inf", id="nan-row"),
    ],
)
def test_evaluate_refuses_a_cache_of_another_corpus_or_with_a_nan_row(embedded, cache, fault, message):
    """Either cache evaluate ranks with (the stale one, the re-embedded one): of another corpus, or
    with a NaN row, it stops naming the file; metrics/eval.json keeps the previous figures, and no
    run files or plot table are written."""
    import shutil

    from freshen.steps import evaluate

    root, params = embedded
    stale = root / params["cache"]["out_dir"]
    shutil.copytree(stale, root / params["reembed"]["out_dir"])  # a valid re-embedded cache of the same corpus
    fault(root / params[cache]["out_dir"])
    metrics = root / params["evaluate"]["metrics"]
    metrics.parent.mkdir(parents=True, exist_ok=True)
    metrics.write_text('{"previous": "figures"}\n')
    with pytest.raises(DataError, match=message) as err:
        evaluate.run(validate_params(params), root)
    assert str(root / params[cache]["out_dir"]) in str(err.value)
    assert metrics.read_text() == '{"previous": "figures"}\n'
    assert not (root / params["evaluate"]["out_dir"]).exists() and not (root / params["evaluate"]["plot"]).exists()


@pytest.mark.parametrize("previous", ['{"steps_run": 6, "previous": "run"}\n', None])
def test_a_diverging_train_leaves_metrics_train_json_as_it_was(embedded, previous):
    """train rewrites metrics/train.json at every evaluation; a run that then fails (here it
    diverges) puts back the file of the run before it (or none), so the figures beside the
    model there are never those of a run that did not replace it."""
    import copy

    root, params = embedded
    params = copy.deepcopy(params)
    params["train"].update(lr=1e8, warmup_ratio=0, steps=6)  # step 0 is evaluated (and written) first
    params["train"]["pilot"]["candidates"] = [{}]  # no pilot: the run itself diverges
    metrics = root / params["train"]["metrics"]
    if previous is not None:
        metrics.parent.mkdir(parents=True, exist_ok=True)
        metrics.write_text(previous)
    with pytest.raises(FreshenError, match="training diverged"):
        train.run(validate_params(params), root)
    if previous is None:
        assert not metrics.exists()
    else:
        assert metrics.read_text() == previous
    assert not (root / params["train"]["out_dir"]).exists()
    assert [p.name for p in metrics.parent.iterdir() if p.name.startswith(".train.json.")] == []
