"""The registered retriever as MLflow "models from code": `promote` logs this file as the model,
so MLflow stores code (run again at load time) instead of a cloudpickled object."""

import mlflow

from freshen.serving import FreshenEmbedder

mlflow.models.set_model(FreshenEmbedder())
