"""Step 4, reembed: the corpus embedded again with a trained checkpoint, into a new cache of
the same format. This is the cost the corrector makes rare; it is counted in passes."""

from __future__ import annotations

from pathlib import Path

from freshen.config import params_hash
from freshen.embed_corpus import embed_to_cache, place
from freshen.encoding import set_threads
from freshen.modeling.encoder import Encoder, model_digest
from freshen.steps.common import NullLog, path, shown
from freshen.steps.embed_cache import prepared_corpus

SECTIONS = ["encode", "reembed"]


def run(params: dict, root: Path, log=NullLog()) -> dict:
    set_threads()
    corpus = prepared_corpus(params, root)
    model_dir = path(root, params["train"]["out_dir"]) / "encoder"
    encoder = place(Encoder.load(model_dir), params["encode"])
    _, stats = embed_to_cache(encoder, corpus, path(root, params["reembed"]["out_dir"]), params["encode"],
                              {"model": shown(model_dir, root), "model_digest": model_digest(model_dir),
                               "params_hash": params_hash(params, SECTIONS), "source": "reembed", "corrected": False},
                              "re-embed")
    log.metrics(stats)
    return stats
