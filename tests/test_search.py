"""Search indexes as a param: exact Flat, IVF and HNSW through retrieval.build_index, the
evaluate step's index settings, the serving index, and the training-time scorer's ANN path
(candidates from an IVF index, rescored through a corrector)."""

import faiss
import numpy as np
import pytest
import torch
from freshen.modeling.corrector import Corrector
from freshen.params import EvaluateParams, validate_params
from freshen.params.train import NegativesParams
from freshen.retrieval import build_index, index_settings, search
from freshen.sampling.negatives import chunked_topk
from freshen.sampling.scorer import CacheScorer
from freshen.steps.evaluate import make_index


def clustered(n=4000, dim=32, centres=40, seed=0):
    """Rows around `centres` unit vectors, L2-normalised, float16; queries near random rows."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, dim)).astype(np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    x = c[rng.integers(centres, size=n)] + 0.6 * rng.standard_normal((n, dim)).astype(np.float32) / np.sqrt(dim)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    near = rng.integers(n, size=64)
    q = x[near] + 0.3 * rng.standard_normal((64, dim)).astype(np.float32) / np.sqrt(dim)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return x.astype(np.float16), q.astype(np.float32), near


def exact_top(x, q, k):
    return np.argsort(-(q @ x.astype(np.float32).T), axis=1, kind="stable")[:, :k]


def recall(found, truth):
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


@pytest.mark.parametrize("kind", ["Flat", "flat"])
def test_flat_is_brute_force(kind, tmp_path):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3000, 24)).astype(np.float16)
    q = rng.standard_normal((20, 24)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")  # float16 memmap, added chunk by chunk
    index = build_index(mm, kind)
    assert index.ntotal == 3000 and index.metric_type == faiss.METRIC_INNER_PRODUCT
    scores, rows = search(index, q, 10)
    np.testing.assert_array_equal(rows, exact_top(x, q, 10))
    np.testing.assert_allclose(scores, np.take_along_axis(q @ x.astype(np.float32).T, rows, 1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind,knob", [("IVF64,Flat", {"nprobe": 8}), ("HNSW32", {"ef_search": 64})])
def test_ann_indexes_find_the_exact_neighbours(kind, knob):
    x, q, _ = clustered()
    index = build_index(x, kind, **knob)
    _, rows = search(index, q, 10)
    assert rows.shape == (64, 10) and rows.min() >= 0 and rows.max() < len(x)
    assert all(len(set(r)) == 10 for r in rows)
    assert recall(rows, exact_top(x, q, 10)) >= 0.9
    if "nprobe" in knob:
        assert faiss.extract_index_ivf(index).nprobe == 8
    else:
        assert index.hnsw.efSearch == 64


def test_nprobe_is_honoured_and_training_is_seeded():
    x, q, _ = clustered()
    truth = exact_top(x, q, 10)
    one = recall(search(build_index(x, "IVF64,Flat", nprobe=1), q, 10)[1], truth)
    all_lists = recall(search(build_index(x, "IVF64,Flat", nprobe=64), q, 10)[1], truth)
    assert all_lists == 1.0 and one < 0.95
    # trained on a seeded sample of 1000 of the 4000 rows: the same index twice
    a = search(build_index(x, "IVF32,Flat", nprobe=2, train_size=1000), q, 10)[1]
    b = search(build_index(x, "IVF32,Flat", nprobe=2, train_size=1000), q, 10)[1]
    np.testing.assert_array_equal(a, b)


def test_invalid_index_names_the_param():
    """A user's setting: a FreshenError (one line from the CLI, exit 2), not a ValueError."""
    from freshen.errors import FreshenError

    x, _, _ = clustered(n=500)
    with pytest.raises(
        FreshenError,
        match=r"params\.yaml: field 'evaluate\.index': 'IVFx,Flat' is not a valid faiss "
        r"index_factory",
    ):
        build_index(x, "IVFx,Flat", param="evaluate.index")
    with pytest.raises(
        FreshenError,
        match=r"field 'evaluate\.index': 'IVF1024,Flat' has 1024 inverted lists but .* "
        r"500 rows",
    ):
        make_index(x, EvaluateParams(index="IVF1024,Flat"))
    with pytest.raises(FreshenError, match=r"field 'train\.negatives\.ann_index': 'bogus'"):
        CacheScorer(torch.from_numpy(x), NegativesParams(ann_threshold=100, ann_index="bogus"))


def test_evaluate_builds_the_index_params_ask_for():
    x, q, _ = clustered()
    assert index_settings(EvaluateParams())["kind"] == "Flat"
    flat = make_index(x, EvaluateParams(index="Flat", nprobe=32, ef_search=128))
    assert isinstance(flat, faiss.IndexFlat)
    np.testing.assert_array_equal(search(flat, q, 10)[1], exact_top(x, q, 10))
    ivf = make_index(x, EvaluateParams(index="IVF16,Flat", nprobe=5))
    assert isinstance(ivf, faiss.IndexIVF) and ivf.nlist == 16 and ivf.nprobe == 5
    hnsw = make_index(x, EvaluateParams(index="HNSW16", ef_search=77))
    assert isinstance(hnsw, faiss.IndexHNSW) and hnsw.hnsw.efSearch == 77 and hnsw.ntotal == len(x)


def test_serving_index_takes_the_evaluate_settings(tmp_path):
    from freshen.cache import write_cache
    from freshen.index_store import INDEX_FILE, write_index

    x, _, _ = clustered(n=1000)
    ids = [f"d{i}" for i in range(len(x))]
    cache = write_cache(tmp_path / "cache", ids, x.shape[1], lambda arr: arr.__setitem__(slice(None), x), {})
    meta = write_index(cache, settings=index_settings(EvaluateParams(index="IVF16,Flat", nprobe=6)))
    index = faiss.read_index(str(cache.path / INDEX_FILE))
    assert meta["kind"] == "IVF16,Flat" and meta["count"] == 1000 and index.ntotal == 1000
    assert faiss.extract_index_ivf(index).nprobe == 6  # saved with the index
    assert write_index(cache)["kind"] == "IndexFlatIP"


def _corrector(dim, seed=0, scale=0.5):
    """A residual-MLP corrector that is not the identity."""
    torch.manual_seed(seed)
    h = Corrector(dim, "residual_mlp", hidden=dim)
    with torch.no_grad():
        h.mlp[-1].weight.normal_(0.0, scale / np.sqrt(dim))
    return h.eval()


def _scorer_case(selection="topk", candidates=300):
    x, q, near = clustered()
    cache, q = torch.from_numpy(x), torch.from_numpy(q[:16])
    h = _corrector(x.shape[1])
    with torch.no_grad():
        assert (h(cache[:100].float()) - cache[:100].float()).norm(dim=1).mean() > 0.1  # rescoring matters
    # each query's positive (the row it was drawn near) and its 3 nearest raw rows are excluded
    raw = exact_top(x, q.numpy(), 3)
    exclude = [[int(near[i])] + [int(r) for r in raw[i]] for i in range(16)]
    p = NegativesParams(
        selection=selection,
        ann_threshold=1000,
        ann_candidates=candidates,
        ann_index="IVF64,Flat",
        ann_nprobe=16,
        candidates=50,
    )
    return CacheScorer(cache, p), cache, q, h, exclude, [int(near[i]) for i in range(16)]


@pytest.mark.parametrize("selection", ["topk", "gumbel", "balanced"])
def test_scorer_ann_never_returns_excluded_rows(selection):
    scorer, cache, q, h, exclude, pos = _scorer_case(selection)
    assert isinstance(scorer.index, faiss.IndexIVF) and scorer.index.nprobe == 16 and scorer.index.ntotal == len(cache)
    rows = scorer.select(
        q, 10, exclude, pos, corrector=h, generator=torch.Generator().manual_seed(0), rng=np.random.default_rng(0)
    )
    assert rows.shape == (16, 10) and rows.dtype == torch.long
    for i in range(16):
        got = rows[i].tolist()
        assert len(set(got)) == 10 and not set(got) & set(exclude[i]) and min(got) >= 0


def test_scorer_ann_agrees_with_exact_corrected_topk():
    scorer, cache, q, h, exclude, pos = _scorer_case("topk")
    rows = scorer.select(q, 10, exclude, pos, corrector=h)
    exact, _ = chunked_topk(q, cache, 10, exclude, corrector=h, chunk_size=512)
    assert recall(rows.tolist(), exact.tolist()) >= 0.9
    # the batched rescoring is the per-query one: candidates, minus excluded, through h, top 10
    _, cand = scorer.index.search(q.numpy(), scorer.ann_candidates)
    for i in range(16):
        c = torch.tensor([r for r in cand[i] if r >= 0 and r not in exclude[i]])
        ref = c[(h(cache[c].float()) @ q[i]).topk(10).indices]
        assert set(ref.tolist()) == set(rows[i].tolist())


def test_scorer_ann_falls_back_to_exact_when_candidates_run_out():
    scorer, cache, q, h, exclude, pos = _scorer_case("topk", candidates=14)
    _, cand = scorer.index.search(q.numpy(), 14)
    # queries 0-7 lose 6 more of their 14 candidates: fewer than k=10 left, so they are selected exactly
    exclude = [e + [int(r) for r in cand[i][:6]] if i < 8 else e for i, e in enumerate(exclude)]
    rows = scorer.select(q, 10, exclude, pos, corrector=h)
    exact, _ = chunked_topk(q, cache, 10, exclude, corrector=h, chunk_size=512)
    assert rows.shape == (16, 10)
    for i in range(16):
        assert not set(rows[i].tolist()) & set(exclude[i]) and len(set(rows[i].tolist())) == 10
        if i < 8:
            assert set(rows[i].tolist()) == set(exact[i].tolist())


def test_evaluate_leaves_out_test_queries_without_a_relevant_judgement(tiny_params, tmp_path, caplog):
    """A test query judged only 0 would score 0 for every system and lower every mean: evaluate
    leaves it out of the metrics and the run files, and says so with the file and the count."""
    import copy
    import json
    from pathlib import Path

    import ir_measures
    from freshen.cache import write_cache
    from freshen.data.beir import load_beir
    from freshen.encoding import encode_into
    from freshen.modeling.encoder import Encoder
    from freshen.retrieval import evaluate_run
    from freshen.steps import evaluate, prepare

    params, root = copy.deepcopy(tiny_params), tmp_path / "proj"
    params["evaluate"].update(bm25=False, splits=["test"])
    qrels = Path(params["data"]["local_dir"]) / "qrels" / "test.tsv"
    qrels.write_text(qrels.read_text().replace("q31\td31\t1", "q31\td31\t0"))
    prepare.run(validate_params(params), root)
    ds = load_beir(root / params["data"]["out_dir"])
    assert ds.qrels["test"]["q31"] == {"d31": 0}
    encoder = Encoder.from_params(params["model"])
    encoder.save(root / params["train"]["out_dir"] / "encoder")
    ids = ds.doc_ids()
    for out in (params["cache"]["out_dir"], params["reembed"]["out_dir"]):
        write_cache(
            root / out,
            ids,
            encoder.dim,
            lambda arr: encode_into(encoder, ds.doc_texts(ids), "passage", arr, precision="fp32"),
            {},
        )
    with caplog.at_level("WARNING"):
        metrics = evaluate.run(validate_params(params), root)
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        f"{root / params['data']['out_dir'] / 'qrels' / 'test.tsv'}: 1 query has no relevant judgement (score > 0); "
        "left out of evaluation"
    ]
    run = ir_measures.read_trec_run(str(root / params["evaluate"]["out_dir"] / "test.trained.trec"))
    by_query: dict = {}
    for row in run:
        by_query.setdefault(row.query_id, {})[row.doc_id] = row.score
    assert set(by_query) == set(ds.qrels["test"]) - {"q31"}
    judged = {q: docs for q, docs in ds.qrels["test"].items() if q != "q31"}
    assert metrics["test"]["trained"] == pytest.approx(evaluate_run(judged, by_query))
    assert metrics["test"]["trained"]["ndcg_at_10"] > evaluate_run(ds.qrels["test"], by_query)["ndcg_at_10"]
    assert json.loads((root / params["evaluate"]["metrics"]).read_text())["test"] == metrics["test"]


def test_an_index_built_from_file_reads_is_the_index_built_from_the_array(tmp_path):
    """Past `negatives.memory_gb` the training-time ANN index is built from `NpyRowReader`
    (plain reads, no mapping): the same trained and filled index as from the array."""
    from freshen.cache import EMBEDDINGS, NpyRowReader, write_cache

    x = np.random.default_rng(1).standard_normal((500, 8)).astype(np.float16)
    x /= np.linalg.norm(x.astype(np.float32), axis=1, keepdims=True).astype(np.float16)
    cache = write_cache(tmp_path / "c", [f"d{i}" for i in range(500)], 8, lambda a: a.__setitem__(slice(None), x), {})
    q = np.random.default_rng(2).standard_normal((6, 8)).astype(np.float32)
    found = []
    for source in (x, NpyRowReader(cache.path / EMBEDDINGS)):
        index = build_index(source, "IVF8,Flat", nprobe=2, train_size=200, use_gpu=False)
        found.append(index.search(q, 10))
    assert np.array_equal(found[0][1], found[1][1]) and np.allclose(found[0][0], found[1][0])
