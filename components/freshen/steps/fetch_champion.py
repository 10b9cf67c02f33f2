"""Orchestration step fetch_champion: copy the registry's `champion` (its encoder, and its
corrector when it has one) into orchestration.champion_dir, with champion.json saying which
version it is. Every refresh task reads the champion from there, so one refresh run uses one
model even if the alias moves meanwhile. A no-op when that version is already there.

It also decides whether this refresh re-embeds the corpus (orchestration.refresh, see
freshen.refresh_policy) and writes the decision beside the champion, where the re-embedding
steps read it (`reembed_skip_reason`)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import yaml

from freshen import refresh_policy
from freshen.atomic import atomic_dir, write_json
from freshen.errors import FreshenError
from freshen.integrity import file_sha256
from freshen.locks import hold
from freshen.modeling.encoder import model_digest
from freshen.params import Params
from freshen.steps.common import NullLog, path

logger = logging.getLogger(__name__)

SECTIONS = ["promote", "mlflow", "orchestration", "cache", "encode"]
OPTIONS = ()
INFO = "champion.json"


def champion_identity(champ: dict) -> dict:
    """How the serving pointer and the Asset events name a champion: its version, the registry's
    digest of the whole checkpoint (`model_digest`, as in promotion.json and the version's tag)
    and its encoder's alone (`encoder_digest`, what a cache manifest's `model_digest` names)."""
    return {
        "champion_version": champ["version"],
        "model_digest": champ["checkpoint_digest"],
        "encoder_digest": champ["encoder_digest"],
    }


def read_champion(params: Params, root: Path) -> dict:
    """champion.json of the fetched champion, with absolute encoder/corrector paths."""
    folder = path(root, params.orchestration.champion_dir)
    info_file = folder / INFO
    if not info_file.is_file():
        raise FreshenError(f"{info_file}: not found (run `freshen fetch-champion` first)")
    info = json.loads(info_file.read_text())
    info["encoder_dir"] = str(folder / "encoder")
    info["corrector_dir"] = str(folder / "corrector") if info.get("has_corrector") else None
    return info


def skip_reason(params: Params, root: Path) -> str | None:
    """Nothing to refresh before the first promotion: unpausing the refresh DAG runs its latest
    cron tick at once, which must not leave a failed run (and three failed attempts) behind."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from freshen import tracking

    tracking.setup(root, params.mlflow.experiment)
    name = params.promote.registered_model
    try:
        mlflow.tracking.MlflowClient().get_model_version_by_alias(name, "champion")
    except MlflowException:
        return f"registered model '{name}' has no 'champion' yet: nothing to refresh (run freshen_train first)"
    return None


def run(params: Params, root: Path, log=NullLog()) -> dict:
    import mlflow
    from mlflow.exceptions import MlflowException

    name = params.promote.registered_model
    client = mlflow.tracking.MlflowClient()
    try:
        version = client.get_model_version_by_alias(name, "champion")
    except MlflowException:
        raise FreshenError(
            f"registered model '{name}' (promote.registered_model) has no 'champion' alias yet: "
            "run the freshen_train DAG or `freshen promote` first"
        ) from None
    dest = path(root, params.orchestration.champion_dir)
    with hold(dest):  # one fetch into this folder at a time
        info = download_champion(name, version, dest, log)
        decision = refresh_decision(params, root, dest, info, version.tags)
    numbers = {k: v for k, v in decision.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    log.metrics({**numbers, "reembed": int(decision["reembed"])})
    log.tags({"refresh.policy": decision["policy"], "refresh.reason": decision["reason"][:5000]})
    logger.info(f"fetch-champion: {'re-embed' if decision['reembed'] else 'no re-embedding'}: {decision['reason']}")
    return {**info, "refresh": decision}


def refresh_decision(params: Params, root: Path, dest: Path, info: dict, tags: dict | None = None) -> dict:
    """Whether this refresh re-embeds the corpus (freshen.refresh_policy), written beside the
    champion. `tags`: the champion version's registry tags (the dev figure it was promoted on)."""
    from freshen.cache import load_cache
    from freshen.embed_corpus import place
    from freshen.modeling.corrector import Corrector
    from freshen.modeling.encoder import Encoder
    from freshen.steps.embed_cache import prepared_corpus, prepared_corpus_file

    refresh = params.orchestration.refresh

    def measure():
        promoted = promoted_dev_figure(info, tags or {}) if refresh.signal == "dev_ndcg" else None
        corpus = prepared_corpus(params, root)
        stale = load_cache(path(root, params.cache.out_dir))
        encoder = place(Encoder.load(dest / "encoder"), params.encode.device)
        corrector = Corrector.load(dest / "corrector", expect_dim=stale.dim).eval()
        if promoted is None:
            return refresh_policy.probe_drift(encoder, corrector, stale, corpus, refresh, params.encode, params.seed)
        queries, qrels = dev_split(params, root, corpus.ids)
        stats, passes = refresh_policy.probe_dev(encoder, corrector, stale, corpus, queries, qrels, params.encode)
        return {**stats, "promoted_dev_ndcg_at_10": promoted}, passes

    decision = refresh_policy.decide(params.orchestration.refresh, info["has_corrector"], measure)
    corpus_sha = file_sha256(prepared_corpus_file(params, root))
    return refresh_policy.write_decision(dest, decision, info["encoder_digest"], corpus_sha)


DEV_METRIC = "dev.trained.ndcg_at_10"  # what `evaluate` calls the re-embedded cache's dev nDCG@10


def promoted_dev_figure(info: dict, tags: dict) -> float:
    """The dev nDCG@10 of its own re-embedded cache that the champion was promoted on (its tags)."""
    from freshen.steps.promote import TAG_METRIC, TAG_VALUE

    if tags.get(TAG_METRIC) != DEV_METRIC or tags.get(TAG_VALUE) is None:
        raise FreshenError(
            f"models:/{info['registered_model']}/{info['version']}: tag '{TAG_METRIC}' is "
            f"{tags.get(TAG_METRIC)!r}, not '{DEV_METRIC}': orchestration.refresh.signal dev_ndcg compares "
            "with the dev figure the champion was promoted on (promote.metric); use signal cosine"
        )
    return float(tags[TAG_VALUE])


def dev_split(params: Params, root: Path, doc_ids: list[str]) -> tuple[dict, dict]:
    """The prepared dev queries and their relevant judgements (the corpus is not read)."""
    from freshen.data.beir import read_queries, relevant_queries
    from freshen.data.qrels import read_qrels

    data = path(root, params.data.out_dir)
    queries = read_queries(data / "queries.jsonl")
    qrels_file = data / "qrels" / "dev.tsv"
    return queries, relevant_queries(read_qrels(qrels_file, dict.fromkeys(doc_ids), queries), qrels_file)


def reembed_skip_reason(params: Params, root: Path) -> str | None:
    """For the re-embedding steps: why this refresh does not re-embed (None: it does)."""
    from freshen.steps.embed_cache import prepared_corpus_file

    refresh = params.orchestration.refresh
    if refresh.policy == "always":
        return None
    champ = read_champion(params, root)
    corpus_sha = file_sha256(prepared_corpus_file(params, root))
    folder = path(root, params.orchestration.champion_dir)
    return refresh_policy.reembed_skip_reason(refresh, folder, champ["encoder_digest"], corpus_sha)


def download_champion(name: str, version, dest: Path, log) -> dict:
    """Download model `version` into `dest` with champion.json, unless that version is already there."""
    import mlflow

    digest_tag = version.tags.get("freshen.model_digest")
    if (dest / INFO).is_file():
        have = json.loads((dest / INFO).read_text())
        if have.get("version") == str(version.version) and have.get("checkpoint_digest") == digest_tag:
            logger.info(f"fetch-champion: {name} v{version.version} already in {dest}")
            log.tags({"champion_version": version.version})
            return have
    with atomic_dir(dest) as tmp:
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{name}/{version.version}", dst_path=str(tmp / "_download")
            )
        )
        flavor = yaml.safe_load((local / "MLmodel").read_text())["flavors"]["python_function"]
        artifacts = flavor.get("artifacts", {})
        if "encoder" not in artifacts:
            raise FreshenError(f"models:/{name}/{version.version}: MLmodel field 'artifacts.encoder' missing")
        for key in ("encoder", "corrector"):
            if key in artifacts:
                shutil.move(str(local / artifacts[key]["path"]), str(tmp / key))
        shutil.rmtree(tmp / "_download")
        info = {
            "registered_model": name,
            "version": str(version.version),
            "checkpoint_digest": digest_tag,
            "encoder_digest": model_digest(tmp / "encoder"),
            "has_corrector": (tmp / "corrector").is_dir(),
            "source_run_id": version.run_id,
        }
        write_json(tmp / INFO, info)
    logger.info(f"fetch-champion: {name} v{version.version} -> {dest}")
    log.tags({"champion_version": version.version})
    return info
