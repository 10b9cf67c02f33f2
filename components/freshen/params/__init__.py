"""params.yaml as one typed, validated object (`Params`), and the one way to load it.

    params = load_params("params.yaml", sets=["train.steps=50"])
    params.train.lr, params.orchestration.num_shards

The schema (schema.py and the section modules) holds every default and every field's
description; docs/params.md is generated from it: `python -m freshen.params --markdown`."""

from freshen.params.loading import SET_ENV, Override, load_params, validate_params, with_overrides
from freshen.params.orchestration import OrchestrationParams
from freshen.params.schema import Params
from freshen.params.sections import EncodeParams, EvaluateParams, ModelParams
from freshen.params.train import ServingFitParams, TrainParams

__all__ = [
    "SET_ENV",
    "EncodeParams",
    "EvaluateParams",
    "ModelParams",
    "OrchestrationParams",
    "Override",
    "Params",
    "ServingFitParams",
    "TrainParams",
    "load_params",
    "validate_params",
    "with_overrides",
]
