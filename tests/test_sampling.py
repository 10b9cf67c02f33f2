"""Batch composition (TAS) and negative selection (top-k, Gumbel-top-k, balanced margins)."""

from collections import Counter

import numpy as np
import pytest
import torch
from freshen.params.train import NegativesParams
from freshen.sampling.negatives import chunked_topk
from freshen.sampling.scorer import CacheScorer
from freshen.sampling.selection import balanced_pick
from freshen.sampling.tas import RandomBatches, TASBatches


def _clusters(sizes):
    out, n = {}, 0
    for c, size in enumerate(sizes):
        for _ in range(size):
            out[f"q{n}"] = c
            n += 1
    return out


def test_tas_batches_stay_inside_one_cluster():
    cluster_of = _clusters([10, 12, 9, 20])
    batches = TASBatches(cluster_of, 8, 1, np.random.default_rng(0))
    seen = Counter()
    for _ in range(200):
        batch = next(batches)
        assert len(batch) == 8 and len(set(batch)) == 8
        assert len({cluster_of[q] for q in batch}) == 1
        seen[cluster_of[batch[0]]] += 1
    assert set(seen) == {0, 1, 2, 3}  # every cluster gets drawn


def test_tas_n_clusters_and_top_up_from_another_cluster():
    cluster_of = _clusters([3, 30, 30, 30])
    batches = TASBatches(cluster_of, 8, 2, np.random.default_rng(1))
    topped_up = 0
    for _ in range(300):
        batch = next(batches)
        clusters = Counter(cluster_of[q] for q in batch)
        assert len(batch) == 8 and len(set(batch)) == 8
        if 0 in clusters and clusters[0] == 3:
            topped_up += 1
            assert len(clusters) >= 2
        else:
            assert len(clusters) == 2 and sorted(clusters.values()) == [4, 4]
    assert topped_up > 0


def test_random_batches_are_uniform_and_seeded():
    qids = [f"q{i}" for i in range(20)]
    assert next(RandomBatches(qids, 5, np.random.default_rng(3))) == next(
        RandomBatches(qids, 5, np.random.default_rng(3))
    )
    batches = RandomBatches(qids, 5, np.random.default_rng(0))
    counts = Counter(q for _ in range(400) for q in next(batches))
    assert set(counts) == set(qids) and max(counts.values()) < 2 * min(counts.values())


def _setup(n=50, d=8, b=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    cache = torch.randn(n, d, generator=g).half()
    q = torch.randn(b, d, generator=g)
    return q, cache


def test_chunked_topk_equals_dense_topk_and_skips_positives():
    q, cache = _setup()
    exclude = [[0, 1], [], [49], [10, 11, 12]]
    rows, _ = chunked_topk(q, cache, 5, exclude, chunk_size=7)
    scores = q @ cache.float().T
    for i, ex in enumerate(exclude):
        scores[i, ex] = float("-inf")
    assert torch.equal(rows, scores.topk(5, dim=1).indices)


@pytest.mark.parametrize("selection", ["topk", "gumbel", "balanced"])
def test_no_positive_is_ever_a_negative(selection):
    q, cache = _setup(n=30)
    rng = np.random.default_rng(0)
    for trial in range(20):
        positives = [list(rng.choice(30, size=3, replace=False)) for _ in range(4)]
        # make the positives the highest-scoring rows so a bug would pick them
        cache[[p for ps in positives for p in ps]] = (q.repeat_interleave(3, 0) * 10).half()
        scorer = CacheScorer(cache, NegativesParams(selection=selection, candidates=20, chunk_size=9))

        rows = scorer.select(
            q, 4, positives, [ps[0] for ps in positives], generator=torch.Generator().manual_seed(trial), rng=rng
        )
        assert rows.shape == (4, 4)
        for i, ps in enumerate(positives):
            assert not set(rows[i].tolist()) & set(int(p) for p in ps)
            assert len(set(rows[i].tolist())) == 4  # without replacement


def test_gumbel_top1_follows_the_softmax():
    scores = torch.tensor([[1.0, 0.5, 0.0, -1.0, 2.0]])
    cache = torch.eye(5)  # <q, row j> = scores[j]
    beta, n = 1.5, 6000
    gen = torch.Generator().manual_seed(0)
    counts = torch.zeros(5)
    for _ in range(n):
        rows, _ = chunked_topk(scores, cache, 1, [[]], noise=gen, beta=beta, chunk_size=2)
        counts[rows[0, 0]] += 1
    expected = torch.softmax(beta * scores[0], 0)
    assert torch.allclose(counts / n, expected, atol=0.02)


def test_gumbel_top_k_is_without_replacement_and_varies():
    q, cache = _setup(n=40)
    gen = torch.Generator().manual_seed(0)
    draws = {tuple(sorted(chunked_topk(q, cache, 6, [[]] * 4, noise=gen, beta=0.5)[0][0].tolist())) for _ in range(20)}
    assert len(draws) > 1 and all(len(set(d)) == 6 for d in draws)


def test_balanced_pick_spreads_over_bins():
    rng = np.random.default_rng(0)
    # 90 candidates with tiny margins, 10 with large: uniform-over-bins must not follow the mass
    margins = np.concatenate([np.full(90, 0.01) + rng.random(90) * 0.01, np.linspace(0.5, 1.0, 10)])
    picks = [balanced_pick(margins, 2, 10, rng) for _ in range(500)]
    large = sum(p >= 90 for ps in picks for p in ps) / 1000
    assert large > 0.5  # 10% of candidates, but they fill most non-empty bins
    assert all(len(set(ps)) == 2 for ps in picks)
    # equal margins (one bin): k distinct candidates, and never more than there are
    assert len(set(balanced_pick(np.zeros(5), 3, 10, rng))) == 3
    assert (
        sorted(balanced_pick(np.zeros(5), 5, 10, rng))
        == sorted(balanced_pick(np.zeros(5), 9, 10, rng))
        == list(range(5))
    )


def test_batches_too_large_for_the_training_queries_name_the_param():
    from freshen.errors import FreshenError

    rng = np.random.default_rng(0)
    with pytest.raises(
        FreshenError,
        match=r"params\.yaml: field 'train\.batch_size': 3 training queries cannot fill "
        r"a batch of 8",
    ):
        TASBatches(_clusters([3]), 8, 1, rng)
    with pytest.raises(FreshenError, match=r"field 'train\.batch_size': 3 training queries cannot fill a batch of 8"):
        RandomBatches(["q0", "q1", "q2"], 8, rng)
    with pytest.raises(FreshenError, match=r"field 'train\.batch_size': must be an integer >= 1, got 0"):
        TASBatches(_clusters([3]), 0, 1, rng)
    with pytest.raises(FreshenError, match=r"field 'train\.clusters_per_batch': must be an integer >= 1, got 0"):
        TASBatches(_clusters([3]), 2, 0, rng)


def _assignments(tmp_path, text):
    (tmp_path / "assignments.tsv").write_text(text)
    return tmp_path


def test_cluster_assignments_are_read(tmp_path):
    from freshen.steps.common import read_clusters

    assert read_clusters(_assignments(tmp_path, "query-id\tcluster\nq0\t1\nq1\t0\r\n\n")) == {"q0": 1, "q1": 0}


@pytest.mark.parametrize(
    "text,message",
    [
        (None, r"assignments\.tsv: cluster assignments missing \(run cluster_queries first\)"),
        ("", r"assignments\.tsv: no cluster assignments \(run cluster_queries again\)"),
        ("query-id\tcluster\n", r"assignments\.tsv: no cluster assignments"),
        ("query-id\tcluster\nq0\t1\nq1\tx\n", r"assignments\.tsv:3: field 'cluster': must be an integer >= 0, got 'x'"),
        ("query-id\tcluster\nq0\t-1\n", r"assignments\.tsv:2: field 'cluster': must be an integer >= 0, got '-1'"),
        ("query-id\tcluster\nq0 1\n", r"assignments\.tsv:2: the row has 1 columns, 2 expected \(query-id, cluster\)"),
        ("query-id\tcluster\nq0\t1\t2\n", r"assignments\.tsv:2: the row has 3 columns, 2 expected"),
        ("query-id\tcluster\nq0\t1\nq0\t2\n", r"assignments\.tsv:3: field 'query-id': duplicate query id 'q0'"),
        ("query-id\tcluster\n\t1\n", r"assignments\.tsv:2: field 'query-id': empty"),
        ("query-id\tcluster\nq0\t\xe91\n", r"assignments\.tsv:2: not valid UTF-8"),
    ],
)
def test_missing_or_garbled_cluster_assignments_are_named(tmp_path, text, message):
    from freshen.errors import DataError
    from freshen.steps.common import read_clusters

    if text is not None:
        (tmp_path / "assignments.tsv").write_bytes(text.encode("latin-1"))
    with pytest.raises(DataError, match=message):
        read_clusters(tmp_path)


def test_the_cache_goes_to_the_training_device_only_within_its_budget(tmp_path):
    """`device_memory_gb`: a cache in memory that fits goes to the scoring device (here the meta
    device stands in for a GPU: no values, but a real placement); a larger one, or one read from
    its file, stays on the host; 0 scores on the CPU; on a CPU nothing is copied."""
    from freshen.cache import NpyRowReader
    from freshen.sampling.file_table import FileTable
    from freshen.training.step_negatives import scoring_device

    table = torch.zeros((1024, 64), dtype=torch.float16)  # 128 KiB
    fits = NegativesParams(device_memory_gb=128 / 2**20)
    too_small = NegativesParams(device_memory_gb=127 / 2**20)
    assert CacheScorer(table, fits, device="meta").table.device.type == "meta"
    assert CacheScorer(table, too_small, device="meta").table is table  # streamed chunk by chunk instead
    assert CacheScorer(table, fits).table is table  # the CPU: scored where it is, no copy
    np.save(tmp_path / "rows.npy", table.numpy())
    on_file = FileTable(NpyRowReader(tmp_path / "rows.npy"))
    assert CacheScorer(on_file, fits, device="meta").table is on_file
    assert scoring_device("cuda:1", fits) == torch.device("cuda:1")
    assert scoring_device("cuda:1", NegativesParams(device_memory_gb=0)) == torch.device("cpu")
    assert scoring_device(None, fits) == torch.device("cpu")


def test_a_cache_on_another_device_than_its_queries_is_scored_where_the_queries_are():
    """chunked_topk moves each chunk to the queries' device and returns on the CPU; the scorer's
    rows come back as float32 on its device."""
    gen = torch.Generator().manual_seed(0)
    cache = torch.randn((50, 8), generator=gen).half()
    q = torch.randn((3, 8), generator=gen)
    rows, scores = chunked_topk(q, cache.numpy(), 4, [[]] * 3, chunk_size=7)  # a host array, chunk by chunk
    expect = (q @ cache.float().T).topk(4, dim=1)
    assert torch.equal(rows, expect.indices) and torch.allclose(scores, expect.values)
    assert rows.device.type == scores.device.type == "cpu"
    scorer = CacheScorer(cache, NegativesParams())
    stale = scorer.stale([4, 2])
    assert stale.dtype == torch.float32 and torch.equal(stale, cache[[4, 2]].float())
