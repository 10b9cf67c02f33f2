"""Orchestration step corrected_index: the moment a new champion exists, serve it without
waiting for the full re-embedding: its corrector maps the OLD cache (cache.out_dir, the stale
cache it was trained against) to estimates of the new embeddings, which become a cache
(manifest "corrected": true) and an index in the serving folder. publish_index replaces it
when the real re-embedding lands; this step skips once that happened for this champion and
this corpus.

The corpus served is the prepared one, which may be a newer version than the stale cache's:
a document whose text the stale cache holds gets h(stale row), one whose text it lacks (added
or edited since) is encoded by the champion, a removed one has no row. A row the champion's own
re-embedding already holds (the train pipeline's `reembed`, the last refresh) is taken as is."""

from __future__ import annotations

import logging
from pathlib import Path

from freshen.cache import Cache, load_cache
from freshen.embed_corpus import embed_to_cache, place
from freshen.encoding import set_threads
from freshen.errors import DataError
from freshen.index_store import publish, read_pointer, serving_name, write_index
from freshen.integrity import file_sha256
from freshen.locks import hold
from freshen.modeling.corrector import Corrector
from freshen.modeling.encoder import Encoder, model_digest
from freshen.params import Params
from freshen.retrieval import index_settings
from freshen.steps.common import NullLog, path
from freshen.steps.embed_cache import prepared_corpus, prepared_corpus_file
from freshen.steps.fetch_champion import champion_identity, read_champion
from freshen.steps.reembed_shard import reusable_caches

logger = logging.getLogger(__name__)

SECTIONS = ["cache", "encode", "orchestration", "evaluate"]
OPTIONS = ()


def skip_reason(params: Params, root: Path) -> str | None:
    champ = read_champion(params, root)
    if not champ.get("has_corrector"):
        return f"champion v{champ['version']} has no corrector"
    current = read_pointer(path(root, params.orchestration.serving_dir)) or {}
    same_corpus = current.get("corpus_sha256") == file_sha256(prepared_corpus_file(params, root))
    if current.get("corrected") is False and current.get("encoder_digest") == champ["encoder_digest"] and same_corpus:
        return f"the re-embedded index of champion v{champ['version']} is already serving ({current['folder']})"
    return None


def check_lineage(stale: Cache, params: Params) -> None:
    """The stale cache must be of this project's corpus: another corpus's cache would silently
    cost a full re-embedding (no text in common) or serve rows of the wrong documents' lineage."""
    theirs = stale.manifest.get("corpus")
    if theirs is not None and theirs != params.data.name:
        raise DataError(
            stale.path / "manifest.json",
            f"cache of corpus '{theirs}', this project's corpus is '{params.data.name}' (data.name): "
            "point cache.out_dir at this corpus's cache, or run embed_cache",
            field="corpus",
        )


def run(params: Params, root: Path, log=NullLog()) -> dict:
    champ = read_champion(params, root)
    stale = load_cache(path(root, params.cache.out_dir))
    check_lineage(stale, params)
    corpus = prepared_corpus(params, root)
    corpus_sha = file_sha256(corpus.path)
    corrector = Corrector.load(champ["corrector_dir"], expect_dim=stale.dim).eval()
    serving = path(root, params.orchestration.serving_dir)
    folder = serving / serving_name("corrected", champ, corpus_sha)
    set_threads()
    encoder = place(Encoder.load(champ["encoder_dir"]), params.encode.device)
    # the serving folder has one writer at a time, this step or publish_index; holding the new
    # folder's lock too clears what a killed attempt left beside it, inside the serving folder
    with hold(serving, folder):
        cache, stats = embed_to_cache(
            encoder,
            corpus,
            folder,
            params.encode,
            {
                "model": f"models:/{champ['registered_model']}/{champ['version']}",
                "model_digest": champ["encoder_digest"],
                "corrector_digest": model_digest(champ["corrector_dir"]),
                "source": "corrected_index",
                "stale_cache": str(stale.path),
                "stale_model_digest": stale.manifest.get("model_digest"),
                "champion_version": champ["version"],
                "corpus": params.data.name,
                "corpus_sha256": corpus_sha,
            },
            "corrected index",
            reuse_from=reusable_caches(params, root),
            corrected=(stale, corrector),
        )
        write_index(cache, settings=index_settings(params.evaluate))
        pointer = publish(
            serving,
            folder,
            {
                "corrected": bool(cache.manifest.get("corrected")),
                "corpus_sha256": corpus_sha,
                **champion_identity(champ),
            },
            keep=params.orchestration.keep_serving,
        )
    counts = cache.rows.counts()
    log.metrics({"docs": len(cache), "passes": stats["passes"], **{f"rows_{k}": v for k, v in counts.items()}})
    logger.info(
        f"corrected-index: champion v{champ['version']} serves {folder}: {counts['corrected']} rows h(stale), "
        f"{counts['reused']} re-embedded rows reused, {counts['encoded']} encoded (added or edited documents)"
    )
    return pointer
