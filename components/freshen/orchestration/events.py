"""What the DAGs' Asset events carry, and what a refresh run records about why it ran.

- `corpus_change`: the `freshen_corpus` event of the freshen_corpus_update DAG. The prepared
  corpus is compared with the corpus the serving index holds (its `current.json`); when they
  differ, the event says which version is new and how many documents were added, edited and
  removed (by the content hash of each row, `cache_rows`); otherwise there is no event.
- `refresh_reasons`: why a freshen_cache_refresh run started: how it was started and the Asset
  events that triggered it (a new champion, a new corpus version, or both).
- `serving_event`: the `freshen_serving_index` event: the serving pointer, what its rows cost
  (passes spent and saved), the refresh decision (`refresh_policy`) and the run's reasons.

Imports neither Airflow nor MLflow: airflow_tasks calls these, tests call them directly."""

from __future__ import annotations

from pathlib import Path

from freshen.params import Params

# Airflow imports this module when it parses the DAGs, in images that may have no numpy, torch
# or faiss (the compose stack's scheduler): everything else is imported where it is used.

CHAMPION, CORPUS, SERVING = "freshen_champion", "freshen_corpus", "freshen_serving_index"
BINDING = ("encoder_digest", "corpus_sha256")  # what a decision is bound to: the pointer names both


def diff(old_ids: list[str], old_hashes, new_ids: list[str], new_hashes) -> dict[str, int | None]:
    """Documents added, edited (same id, other text), removed and unchanged between two versions;
    `edited` is None when the old version's text hashes are unknown (a cache from before them)."""
    import numpy as np

    from freshen.data.corpus_file import HASH_DTYPE

    old_set, new_set = set(old_ids), set(new_ids)
    added = sum(1 for i in new_ids if i not in old_set)
    removed = sum(1 for i in old_ids if i not in new_set)
    if old_hashes is None:
        return {"added": added, "edited": None, "removed": removed, "unchanged": None}
    old = dict(zip(old_ids, np.asarray(old_hashes, dtype=HASH_DTYPE).tolist()))
    new_list = np.asarray(new_hashes, dtype=HASH_DTYPE).tolist()
    edited = sum(1 for i, h in zip(new_ids, new_list) if i in old and old[i] != h)
    return {"added": added, "edited": edited, "removed": removed, "unchanged": len(new_ids) - added - edited}


def corpus_change(params: Params, root: Path) -> tuple[dict | None, str]:
    """(the corpus event's extra, "") when the prepared corpus is not the one served; else
    (None, why there is nothing to announce)."""
    from freshen.cache import load_cache
    from freshen.index_store import POINTER, read_pointer
    from freshen.integrity import file_sha256
    from freshen.steps.common import path
    from freshen.steps.embed_cache import prepared_corpus

    corpus = prepared_corpus(params, root)
    sha = file_sha256(corpus.path)
    serving = path(root, params.orchestration.serving_dir)
    pointer = read_pointer(serving)
    if pointer is None:
        return None, (
            f"nothing is served yet ({serving / POINTER} missing): the first refresh after a promotion "
            f"serves corpus version {sha[:8]}"
        )
    if pointer.get("corpus_sha256") == sha:
        return None, f"the serving index {pointer['folder']} already holds corpus version {sha[:8]}"
    served = load_cache(serving / pointer["folder"])
    hashes = served.rows.hashes if served.rows is not None else None
    extra = {
        "corpus": params.data.name,
        "corpus_sha256": sha,
        "served_corpus_sha256": pointer.get("corpus_sha256"),
        "served_folder": pointer["folder"],
        "docs": len(corpus),
        **diff(served.ids, hashes, corpus.ids, corpus.hashes),
    }
    return extra, ""


def refresh_reasons(run_type: str, events: dict[str, list[dict]]) -> dict:
    """Why a refresh run started: {"trigger": how (asset_triggered, scheduled, manual, ...),
    "champion": [versions announced], "corpus": [corpus events' extras], "summary": one line}."""
    champion = [str(e.get("version")) for e in events.get(CHAMPION, [])]
    corpus = [{k: e.get(k) for k in ("corpus_sha256", "added", "edited", "removed")} for e in events.get(CORPUS, [])]
    parts = []
    if champion:
        parts.append("champion moved to " + ", ".join(f"v{v}" for v in champion))
    for e in corpus:
        sha = str(e["corpus_sha256"] or "")[:8]
        parts.append(f"corpus version {sha} (+{e['added']} added, ~{e['edited']} edited, -{e['removed']} removed)")
    if not parts:
        parts.append({"scheduled": "orchestration.refresh_cron", "manual": "started by hand"}.get(run_type, run_type))
    return {"trigger": run_type, "champion": champion, "corpus": corpus, "summary": "; ".join(parts)}


def serving_event(params: Params, root: Path, reasons: dict | None = None) -> dict:
    """The serving Asset event's extra: current.json (less its history), the served cache's rows
    by origin with the passes they cost and saved, this refresh's decision, and `reasons`."""
    from freshen.cache import MANIFEST
    from freshen.index_store import read_pointer
    from freshen.jsonfile import read_json
    from freshen.refresh_policy import DECISION
    from freshen.steps.common import path

    serving = path(root, params.orchestration.serving_dir)
    pointer = read_pointer(serving) or {}
    extra = {k: v for k, v in pointer.items() if k != "history"}
    if pointer:
        origin = read_json(serving / pointer["folder"] / MANIFEST).get("origin") or {}  # not its rows
        extra["rows"] = origin
        extra["passes"] = origin.get("encoded")
        extra["passes_saved"] = origin.get("reused", 0) + origin.get("corrected", 0) if origin else None
    decision = path(root, params.orchestration.champion_dir) / DECISION
    if decision.is_file():
        made = read_json(decision)
        extra["refresh"] = {k: v for k, v in made.items() if k not in BINDING}
    if reasons:
        extra["reasons"] = reasons
    return extra
