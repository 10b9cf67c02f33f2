"""Tiny test material made on the spot: a synthetic BEIR dataset, a random-weight BERT, train
sections typed as the trainer takes them, params pointed at them, and a whole project folder.

`python tests/tiny.py DIR` writes such a project (the deployment check runs every step on it)."""

from __future__ import annotations

import copy
import json
import random
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
ENCODER_DIR = "artifacts/model/encoder"  # where `train` leaves the encoder in a project

TOPICS = {
    "cell": "cell protein gene membrane mitochondria receptor kinase enzyme".split(),
    "heart": "heart artery blood pressure cardiac vessel stroke cholesterol".split(),
    "brain": "brain neuron cortex memory synapse cognitive dopamine sleep".split(),
    "virus": "virus infection vaccine immune antibody viral host pathogen".split(),
    "cancer": "tumor cancer metastasis chemotherapy oncogene biopsy lesion growth".split(),
    "diet": "diet obesity insulin glucose fat weight metabolism sugar".split(),
}
FILLER = "the a of in and study results show patients effect increased reduced level risk".split()


def vocab_words() -> list[str]:
    words = sorted({w for ws in TOPICS.values() for w in ws} | set(FILLER))
    return words + [f"doc{i}" for i in range(200)]


def make_beir(
    root: Path,
    n_docs: int = 60,
    n_train: int = 30,
    n_test: int = 12,
    seed: int = 0,
    with_dev: bool = False,
    crlf: bool = False,
    header: bool = True,
) -> Path:
    """Write a small BEIR folder; query i is about doc i's topic and judged relevant to it."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    topics = sorted(TOPICS)
    docs = []
    for i in range(n_docs):
        topic = topics[i % len(topics)]
        words = rng.sample(TOPICS[topic], 4) + rng.sample(FILLER, 5) + [f"doc{i}"]
        rng.shuffle(words)
        docs.append({"_id": f"d{i}", "title": f"{topic} doc{i}", "text": " ".join(words), "metadata": {}})
    with open(root / "corpus.jsonl", "w") as fh:
        fh.writelines(json.dumps(d) + "\n" for d in docs)
    n_q = n_train + n_test
    queries = []
    for i in range(n_q):
        d = docs[i % n_docs]
        topic = d["title"].split()[0]
        queries.append({"_id": f"q{i}", "text": " ".join(rng.sample(TOPICS[topic], 3) + [f"doc{i % n_docs}"])})
    with open(root / "queries.jsonl", "w") as fh:
        fh.writelines(json.dumps(q) + "\n" for q in queries)
    nl = "\r\n" if crlf else "\n"
    (root / "qrels").mkdir(exist_ok=True)
    splits = {"train": range(0, n_train), "test": range(n_train, n_q)}
    if with_dev:
        splits = {"train": range(0, n_train - 6), "dev": range(n_train - 6, n_train), "test": range(n_train, n_q)}
    for split, idx in splits.items():
        lines = (["query-id\tcorpus-id\tscore"] if header else []) + [f"q{i}\td{i % n_docs}\t1" for i in idx]
        (root / "qrels" / f"{split}.tsv").write_text(nl.join(lines) + nl)
    return root


def make_tiny_bert(
    path: Path,
    hidden: int = 32,
    layers: int = 2,
    seed: int = 0,
    sentence_transformers_layout: bool = True,
    dropout: float = 0.1,
) -> Path:
    """A random-weight BERT with a word-level vocab, saved as a transformers folder."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + vocab_words()
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    # the vocab as a mapping: transformers 5 reads no vocab_file here and maps every word to [UNK]
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    if tok.unk_token_id in tok("cell doc0")["input_ids"]:
        raise RuntimeError("tiny tokenizer maps known words to [UNK]: every text would embed alike")
    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=hidden * 2,
        max_position_embeddings=128,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    BertModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    if sentence_transformers_layout:
        (path / "modules.json").write_text(
            json.dumps(
                [
                    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                    {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                    {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
                ]
            )
        )
        (path / "1_Pooling").mkdir(exist_ok=True)
        (path / "1_Pooling" / "config.json").write_text(
            json.dumps(
                {
                    "word_embedding_dimension": hidden,
                    "pooling_mode_cls_token": False,
                    "pooling_mode_mean_tokens": True,
                    "pooling_mode_max_tokens": False,
                }
            )
        )
        (path / "2_Normalize").mkdir(exist_ok=True)
        (path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 64}))
    return path


def train_params(train: dict[str, Any], **changes: Any):
    """A `TrainParams` from a plain train section, complete (a test's params.yaml) or partial (the
    schema's defaults fill in the rest), with `changes` merged in: a mapping updates the
    sub-section it names (`negatives={"k": 3}` keeps the other negatives keys). Validated by the
    schema, as params.yaml is: a bad value is a FreshenError naming the field."""
    from freshen.params import validate_params

    return validate_params({"train": merged(train, changes)}, "test params").train


def merged(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of `base` with `changes` applied, mappings merged key by key."""
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def tiny_params_for(params_file: Path, tiny_model: Path | str, tiny_beir: Path | str) -> dict:
    """The params in `params_file` pointed at a tiny model and dataset, with small settings."""
    import yaml

    params = yaml.safe_load(Path(params_file).read_text())
    params["data"].update(local_dir=str(tiny_beir), url=None, sha256={}, verify=False, min_dev_queries=1)
    params["model"].update(name_or_path=str(tiny_model), query_max_len=16, passage_max_len=32)
    params["encode"].update(batch_size=16, precision="fp32")
    params["cluster"].update(queries_per_cluster=6, niter=5)
    # keep_best off: on a 3-query dev split the training-time index can rank step 0 (the random-weight
    # model) first, and the end-to-end tests promote a trained model; the tests of keep_best set it on
    params["train"].update(
        steps=6,
        batch_size=4,
        micro_batch=None,  # the batch of 4 in one pass; with --nproc 2, a pass a rank
        log_every=2,
        passage_max_len=32,
        lr=1e-3,
        eval_every=3,
        probe_passages=8,
        overlap_passages=30,
        overlap_k=5,
        keep_best=False,
    )
    params["train"]["pilot"]["steps"] = 2
    params["train"]["negatives"].update(k=2)
    params["train"]["corrector"].update(hidden=32, warmup_steps=2)
    params["train"]["corrector"]["serving_fit"].update(epochs=2, candidates=20, batch_queries=8)
    return params


def make_project(root: Path) -> Path:
    """A project folder steps run in: params.yaml (the repo's, made tiny), a tiny dataset and
    model inside it, named by relative paths so the folder can be mounted or copied anywhere."""
    import yaml

    root.mkdir(parents=True, exist_ok=True)
    make_beir(root / "tiny-beir")
    make_tiny_bert(root / "tiny-bert")
    params = tiny_params_for(REPO / "params.yaml", "tiny-bert", "tiny-beir")
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python tests/tiny.py DIR  (writes a tiny project there)")
    print(make_project(Path(sys.argv[1])))
