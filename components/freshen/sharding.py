"""Re-embedding the corpus as K shards that run anywhere, in parallel, and merging them back
into one cache of exactly the format `freshen reembed` writes.

Shard i of K holds the contiguous rows [i*N//K, (i+1)*N//K) of the corpus, in corpus order, in
its own folder `shard-III-of-KKK/` (a cache whose manifest says which rows, of which corpus, by
which model). Each is written atomically, so a failed or retried shard task replaces only its
own folder. The merge checks the whole set first — all K present, one corpus, one model, rows
that tile the corpus — and writes nothing unless it is complete and consistent."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from freshen.cache import Cache, ids_digest, load_cache, write_cache
from freshen.cache_rows import Rows
from freshen.embed_corpus import embed_to_cache
from freshen.errors import FreshenError
from freshen.integrity import file_sha256
from freshen.params import EncodeParams

CHUNK = 65536


class ShardSetError(FreshenError):
    """The shard folders do not make up one complete, consistent corpus."""


def shard_name(index: int, count: int) -> str:
    return f"shard-{index:03d}-of-{count:03d}"


def shard_bounds(n_docs: int, index: int, count: int) -> tuple[int, int]:
    """Rows [start, stop) of shard `index` of `count`; sizes differ by at most one."""
    if count < 1:
        raise FreshenError(f"num_shards must be >= 1, got {count}")
    if not 0 <= index < count:
        raise FreshenError(f"shard must be in 0..{count - 1}, got {index}")
    if count > n_docs:
        raise FreshenError(f"num_shards {count} is more than the {n_docs} documents of the corpus")
    return index * n_docs // count, (index + 1) * n_docs // count


def clear_leftovers(shards_dir: Path, index: int, count: int) -> None:
    """Remove temporary folders a killed attempt of this very shard left behind."""
    if shards_dir.is_dir():
        for tmp in shards_dir.glob(f".{shard_name(index, count)}.*.tmp"):
            shutil.rmtree(tmp, ignore_errors=True)


def embed_shard(
    encoder,
    corpus,
    index: int,
    count: int,
    shards_dir: Path,
    encode: EncodeParams,
    manifest: dict,
    reuse_from: list[Path] = (),
) -> tuple[Cache, dict]:
    """Embed rows [start, stop) of `corpus` (a CorpusFile) into this shard's folder; a retry of a
    stopped attempt resumes after its last completed chunk. When a cache in `reuse_from` holds these
    rows by the same model and settings, they are copied instead (see embed_corpus.embed_to_cache).
    Returns the shard and the embedding stats."""
    start, stop = shard_bounds(len(corpus), index, count)
    clear_leftovers(shards_dir, index, count)
    return embed_to_cache(
        encoder,
        corpus.slice(start, stop),
        shards_dir / shard_name(index, count),
        encode,
        {
            **manifest,
            "shard": index,
            "num_shards": count,
            "start": start,
            "stop": stop,
            "corpus_count": len(corpus),
            "corpus_ids_sha256": ids_digest(corpus.ids),
            "corpus_sha256": file_sha256(corpus.path),
        },
        f"re-embed shard {index + 1}/{count}",
        reuse_from,
    )


def check_shards(
    shards_dir: Path, count: int, corpus_ids: list[str] | None = None, model_digest: str | None = None
) -> list[Cache]:
    """Load and cross-check all `count` shards; raise ShardSetError naming every problem."""
    missing = [i for i in range(count) if not (shards_dir / shard_name(i, count)).is_dir()]
    if missing:
        names = ", ".join(f"{i} ({shards_dir / shard_name(i, count)})" for i in missing)
        raise ShardSetError(
            f"merge-shards: shard set incomplete, {len(missing)} of {count} missing: shard {names}; "
            f"re-run `freshen reembed-shard --shard I --num-shards {count}` for each"
        )
    shards = [load_cache(shards_dir / shard_name(i, count)) for i in range(count)]
    first = shards[0].manifest
    expected_corpus = ids_digest(corpus_ids) if corpus_ids is not None else first.get("corpus_ids_sha256")
    n_docs = len(corpus_ids) if corpus_ids is not None else first.get("corpus_count")
    problems = []
    for i, shard in enumerate(shards):
        m, where = shard.manifest, shard.path / "manifest.json"
        if (m.get("shard"), m.get("num_shards")) != (i, count):
            problems.append(
                f"{where}: field 'shard': says {m.get('shard')} of {m.get('num_shards')}, expected {i} of {count}"
            )
        if m.get("corpus_ids_sha256") != expected_corpus or m.get("corpus_count") != n_docs:
            problems.append(f"{where}: field 'corpus_ids_sha256': made from another corpus than the prepared one")
        if m.get("model_digest") != (model_digest or first.get("model_digest")):
            problems.append(
                f"{where}: field 'model_digest': made by model {str(m.get('model_digest'))[:12]}, "
                f"expected {str(model_digest or first.get('model_digest'))[:12]}"
            )
        if shard.dim != shards[0].dim:
            problems.append(f"{where}: field 'dim': {shard.dim}, shard 0 has {shards[0].dim}")
        if n_docs is not None and (m.get("start"), m.get("stop")) != shard_bounds(n_docs, i, count):
            problems.append(
                f"{where}: field 'start': rows {m.get('start')}..{m.get('stop')}, "
                f"expected {shard_bounds(n_docs, i, count)}"
            )
    if problems:
        raise ShardSetError(
            "merge-shards: inconsistent shard set (re-run the shards named):\n  " + "\n  ".join(problems)
        )
    ids = [d for shard in shards for d in shard.ids]
    if corpus_ids is not None and ids != corpus_ids:
        raise ShardSetError(f"merge-shards: the shards' doc ids in {shards_dir} are not the corpus ids, in order")
    return shards


def merge(shards: list[Cache], out_dir: Path, manifest: dict) -> Cache:
    """Concatenate checked shards into one cache at out_dir (atomic; rows copied chunk by chunk)."""
    ids = [d for shard in shards for d in shard.ids]
    first = shards[0].manifest

    def fill(arr: np.ndarray) -> None:
        row = 0
        for shard in shards:
            for s in range(0, len(shard), CHUNK):
                block = shard.embeddings[s : s + CHUNK]
                arr[row : row + len(block)] = block
                row += len(block)

    keep = {
        k: first[k]
        for k in ("model", "model_digest", "max_len", "corpus", "corpus_sha256", "embedding_key")
        if k in first
    }
    rows = None
    if all(shard.rows is not None for shard in shards):
        rows = Rows(
            np.concatenate([shard.rows.hashes for shard in shards]),
            np.concatenate([shard.rows.origin for shard in shards]),
        )
    return write_cache(
        out_dir,
        ids,
        shards[0].dim,
        fill,
        manifest={**keep, **manifest, "num_shards": len(shards), "source": "reembed", "corrected": False},
        rows=rows,
    )
