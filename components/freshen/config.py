"""Helpers around params: dotted keys in plain dicts, hashing, flattening for MLflow, seeding.
Loading and validating params.yaml is `freshen.params.load_params`."""

from __future__ import annotations

import hashlib
import json
import os
import random
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from freshen.params import Params


def get_dotted(params: dict, key: str):
    """The value at a dotted key of a plain dict (KeyError when absent)."""
    node = params
    for part in key.split("."):
        node = node[part]
    return node


def params_hash(params: Params, sections: list[str] | None = None) -> str:
    """A stable digest of the params (or of some sections) that produced an artifact: the sha256
    of their plain values as sorted JSON, so the same values give the same digest as ever."""
    chosen = params.sections(sections)
    blob = json.dumps(chosen, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def flatten(params: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}."""
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
