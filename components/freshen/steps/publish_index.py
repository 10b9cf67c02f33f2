"""Orchestration step publish_index: make the refreshed cache and its index what consumers
read: checked against the champion it was meant for, hard-linked into an immutable serving
folder, and current.json swapped to it (replacing a corrected index of the same champion)."""

from __future__ import annotations

import logging
from pathlib import Path

from freshen.cache import load_cache
from freshen.errors import FreshenError
from freshen.index_store import INDEX_FILE, check_index, link_tree, publish, serving_name
from freshen.locks import hold
from freshen.params import Params
from freshen.steps.common import NullLog, path
from freshen.steps.fetch_champion import champion_identity, read_champion, reembed_skip_reason
from freshen.steps.fetch_champion import skip_reason as no_champion

logger = logging.getLogger(__name__)

SECTIONS = ["orchestration"]
OPTIONS = ()


def skip_reason(params: Params, root: Path) -> str | None:
    # it runs after skipped upstreams: skip when the whole refresh was, or when it did not re-embed
    return no_champion(params, root) or reembed_skip_reason(params, root)


def run(params: Params, root: Path, log=NullLog()) -> dict:
    orch = params.orchestration
    champ = read_champion(params, root)
    cache = load_cache(path(root, orch.refresh_dir))
    if cache.manifest.get("model_digest") != champ["encoder_digest"]:
        raise FreshenError(
            f"{cache.path / 'manifest.json'}: field 'model_digest': the refreshed cache was made by "
            f"{str(cache.manifest.get('model_digest'))[:12]}, not by champion v{champ['version']} "
            f"({champ['encoder_digest'][:12]}); re-run the refresh"
        )
    check_index(cache, cache.path / INDEX_FILE)
    serving = path(root, orch.serving_dir)
    corpus_sha = cache.manifest.get("corpus_sha256") or cache.manifest["ids_sha256"]
    folder = serving / serving_name("reembedded", champ, corpus_sha)
    # the serving folder has one writer at a time, this step or corrected_index; holding the new
    # folder's lock too clears what a killed attempt left beside it, inside the serving folder
    with hold(serving, folder):
        link_tree(cache.path, folder)
        pointer = publish(
            serving,
            folder,
            {"corrected": False, "corpus_sha256": corpus_sha, **champion_identity(champ)},
            keep=orch.keep_serving,
        )
    log.tags({"serving_folder": folder.name})
    logger.info(f"publish-index: champion v{champ['version']} serves {folder}")
    return pointer
