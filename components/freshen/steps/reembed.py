"""Step 4, reembed: the corpus embedded again with a trained checkpoint, into a new cache of
the same format. This is the cost the corrector makes rare; it is counted in passes.

With `reembed.corrector: true` nothing is encoded: the trained corrector maps the stale cache
(`cache.out_dir`) to its estimate of the new embeddings, h(C), written as the new cache
(manifest `"corrected": true`), at no target-encoder pass.

A training run that keeps step 0 (nothing beat the pre-trained encoder on dev) saves a copy of
the pre-trained encoder: its rows are the stale cache's, which is then copied, not encoded again
(see `unchanged_encoder`)."""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

import torch

from freshen.cache import EMBEDDINGS, Cache, load_cache, write_cache, write_corrected_cache
from freshen.cache_rows import Rows
from freshen.config import params_hash
from freshen.data.corpus_file import CorpusFile
from freshen.embed_corpus import embed_to_cache, embedding_key, place
from freshen.encoding import set_threads
from freshen.errors import DataError, FreshenError
from freshen.integrity import file_sha256
from freshen.locks import hold
from freshen.modeling.corrector import Corrector
from freshen.modeling.encoder import Encoder, model_digest, resolve_model_path
from freshen.params import Params
from freshen.steps.common import NullLog, path, shown
from freshen.steps.embed_cache import prepared_corpus

logger = logging.getLogger(__name__)

SECTIONS = ["encode", "reembed"]


def run(params: Params, root: Path, log=NullLog()) -> dict:
    with hold(path(root, params.reembed.out_dir)):  # one reembed of this project at a time
        stats = reembed(params, root)
    log.metrics(stats)
    return stats


def reembed(params: Params, root: Path) -> dict:
    """The new cache, encoded with the trained encoder or, with `reembed.corrector`, h(cache)."""
    model_dir = path(root, params.train.out_dir)
    manifest = {
        "model": shown(model_dir / "encoder", root),
        "model_digest": model_digest(model_dir / "encoder"),
        "params_hash": params_hash(params, SECTIONS),
        "source": "reembed",
    }
    if params.reembed.corrector:
        stats = corrected(params, root, model_dir, manifest)
    else:
        set_threads()
        corpus = prepared_corpus(params, root)
        encoder = Encoder.load(model_dir / "encoder")
        manifest = {
            **manifest,
            "corrected": False,
            "corpus": params.data.name,
            "corpus_sha256": file_sha256(corpus.path),
        }
        out = path(root, params.reembed.out_dir)
        stale = (
            unchanged_encoder(params, root, encoder, corpus, manifest["corpus_sha256"]) if params.encode.reuse else None
        )
        if stale is not None:
            stats = copy_stale(
                stale, out, {**manifest, "embedding_key": embedding_key(encoder, manifest, params.encode)}
            )
        else:
            encoder = place(encoder, params.encode.device)
            _, stats = embed_to_cache(encoder, corpus, out, params.encode, manifest, "re-embed")
    return stats


def unchanged_encoder(
    params: Params, root: Path, encoder: Encoder, corpus: CorpusFile, corpus_sha256: str
) -> Cache | None:
    """The stale cache when `encoder` computes what the encoder that made it computes (same
    settings, tokenizer and weights), for this very corpus; None otherwise, or when the stale
    cache is missing or damaged. The saved copy of the pre-trained encoder has other files, hence
    another digest, than the model it was loaded from: its weights are compared instead."""
    try:
        stale = load_cache(path(root, params.cache.out_dir))
    except (DataError, OSError):
        return None
    m = stale.manifest
    if stale.rows is None or m.get("corpus_sha256") != corpus_sha256 or stale.ids != corpus.ids:
        return None
    source = Encoder.from_params(params.model.model_dump(), root)
    if not same_function(encoder, source):
        return None  # the usual case: training changed the encoder
    if m.get("model_digest") != model_digest(resolve_model_path(params.model.name_or_path, root)):
        return None  # the stale cache is another model's (or that model changed since)
    if m.get("embedding_key") != embedding_key(source, m, params.encode):
        return None  # made with other settings (precision, token limit) than these
    if m.get("embeddings_sha256") != file_sha256(stale.path / EMBEDDINGS):
        return None  # changed since it was written
    return stale


def same_function(a: Encoder, b: Encoder) -> bool:
    """Whether two encoders give the same embedding for every text: the same settings (but the
    name of their base model), the same tokenizer and the same tensors."""
    ca, cb = asdict(a.config), asdict(b.config)
    ca.pop("base_model"), cb.pop("base_model")
    if ca != cb or a.shared != b.shared or type(a.tokenizer) is not type(b.tokenizer):
        return False
    if a.tokenizer.is_fast and b.tokenizer.is_fast:
        if a.tokenizer.backend_tokenizer.to_str() != b.tokenizer.backend_tokenizer.to_str():
            return False
    elif a.tokenizer.get_vocab() != b.tokenizer.get_vocab():
        return False
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]) for k in sa)


def copy_stale(stale: Cache, out: Path, manifest: dict) -> dict:
    """The stale cache's rows written as the re-embedded cache (origin `reused`), at no encoder pass."""

    def fill(arr) -> None:
        for start in range(0, len(stale), 65536):
            arr[start : start + 65536] = stale.embeddings[start : start + 65536]

    cache = write_cache(
        out,
        stale.ids,
        stale.dim,
        fill,
        {**manifest, "max_len": stale.manifest.get("max_len"), "reused_from": [str(stale.manifest.get("source"))]},
        Rows.all(stale.rows.hashes, "reused"),
    )
    n = len(cache)
    logger.info(f"reembed: the trained encoder is the pre-trained one: {n} rows copied from {stale.path}, none encoded")
    return {"docs": n, "passes": 0, "passes_saved": n, "rows_encoded": 0, "rows_reused": n, "rows_corrected": 0}


def corrected(params: Params, root: Path, model_dir: Path, manifest: dict) -> dict:
    """h(C): the saved corrector applied to the stale cache, chunk by chunk."""
    if not (model_dir / "corrector").is_dir():
        raise FreshenError(
            f"params.yaml: field 'reembed.corrector': true, but {model_dir / 'corrector'} does not "
            "exist (only strategy 'corrected' without refresh saves a corrector)"
        )
    stale = load_cache(path(root, params.cache.out_dir))
    corrector = Corrector.load(model_dir / "corrector", expect_dim=stale.dim).eval()
    out = write_corrected_cache(
        path(root, params.reembed.out_dir),
        stale,
        corrector,
        {**manifest, "corrector_digest": model_digest(model_dir / "corrector"), "stale_cache": shown(stale.path, root)},
    )
    logger.info(f"reembed: {len(out)} passages as h(cache) from {stale.path}, no encoder pass")
    return {"docs": len(out), "passes": 0, "corrected": 1}
