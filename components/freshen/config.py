"""params.yaml: loading, dotted overrides (`train.steps=200`), hashing and seeding."""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path

import yaml

from freshen.errors import FreshenError

DEFAULT_PARAMS = "params.yaml"


def load_params(path: str | Path = DEFAULT_PARAMS, overrides: list[str] | None = None) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FreshenError(f"{path}: params file not found (pass --params PATH)")
    with open(path, encoding="utf-8") as fh:
        params = yaml.safe_load(fh) or {}
    if not isinstance(params, dict):
        raise FreshenError(f"{path}: top level must be a mapping")
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep:
            raise FreshenError(f"override '{item}' must look like key.sub=value")
        set_dotted(params, key.strip(), yaml.safe_load(raw))
    return params


def set_dotted(params: dict, key: str, value) -> None:
    node = params
    parts = key.split(".")
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            raise FreshenError(f"override '{key}': '{part}' is not a section of params.yaml")
        node = node[part]
    if parts[-1] not in node:
        raise FreshenError(f"override '{key}': no such key in params.yaml")
    node[parts[-1]] = value


def get_dotted(params: dict, key: str):
    node = params
    for part in key.split("."):
        node = node[part]
    return node


def params_hash(params: dict, sections: list[str] | None = None) -> str:
    """A stable digest of the params (or of some sections) that produced an artifact."""
    chosen = params if sections is None else {s: params.get(s) for s in sections}
    blob = json.dumps(chosen, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def flatten(params: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
