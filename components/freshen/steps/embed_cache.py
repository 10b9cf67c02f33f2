"""Step 2, embed_cache: embed the whole corpus once with the initial encoder. This stale
cache is all the corrector method ever needs; re-embedding becomes optional."""

from __future__ import annotations

from pathlib import Path

from freshen.config import params_hash
from freshen.data.corpus_file import CorpusFile
from freshen.embed_corpus import embed_to_cache, place
from freshen.encoding import set_threads
from freshen.integrity import file_sha256
from freshen.locks import hold
from freshen.modeling.encoder import DEFAULT_MODEL, Encoder, model_digest, resolve_model_path
from freshen.params import Params
from freshen.steps.common import NullLog, path

SECTIONS = ["model", "encode", "cache"]


def prepared_corpus_file(params: Params, root: Path) -> Path:
    return path(root, params.data.out_dir) / "corpus.jsonl"


def prepared_corpus(params: Params, root: Path) -> CorpusFile:
    """The prepared corpus, read lazily: memory holds ids, offsets and text hashes, not the texts."""
    return CorpusFile(prepared_corpus_file(params, root))


def run(params: Params, root: Path, log=NullLog()) -> dict:
    out = path(root, params.cache.out_dir)
    with hold(out):  # a second embed-cache of this project fails here, before loading the model
        threads = set_threads()
        corpus = prepared_corpus(params, root)
        encoder = place(Encoder.from_params(params.model.model_dump(), root), params.encode.device)
        base = resolve_model_path(params.model.name_or_path, root)
        _, stats = embed_to_cache(
            encoder,
            corpus,
            out,
            params.encode,
            {
                "model": str(params.model.name_or_path or DEFAULT_MODEL),
                "model_digest": model_digest(base),
                "params_hash": params_hash(params, SECTIONS),
                "source": "embed_cache",
                "corrected": False,
                "corpus": params.data.name,
                "corpus_sha256": file_sha256(corpus.path),
            },
            "embed cache",
        )
    log.metrics({**stats, "threads": threads})
    return stats
