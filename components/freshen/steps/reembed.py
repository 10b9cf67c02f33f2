"""Step 4, reembed: the corpus embedded again with a trained checkpoint, into a new cache of
the same format. This is the cost the corrector makes rare; it is counted in passes.

With `reembed.corrector: true` nothing is encoded: the trained corrector maps the stale cache
(`cache.out_dir`) to its estimate of the new embeddings, h(C), written as the new cache
(manifest `"corrected": true`), at no target-encoder pass."""

from __future__ import annotations

import logging
from pathlib import Path

from freshen.cache import load_cache, write_corrected_cache
from freshen.config import params_hash
from freshen.embed_corpus import embed_to_cache, place
from freshen.encoding import set_threads
from freshen.errors import FreshenError
from freshen.integrity import file_sha256
from freshen.locks import hold
from freshen.modeling.corrector import Corrector
from freshen.modeling.encoder import Encoder, model_digest
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
        encoder = place(Encoder.load(model_dir / "encoder"), params.encode.device)
        _, stats = embed_to_cache(
            encoder,
            corpus,
            path(root, params.reembed.out_dir),
            params.encode,
            {**manifest, "corrected": False, "corpus": params.data.name, "corpus_sha256": file_sha256(corpus.path)},
            "re-embed",
        )
    return stats


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
