"""The registered model: an MLflow pyfunc that embeds text with the trained encoder.

`mlflow.pyfunc.load_model("models:/<name>@champion").predict(["some text"])` returns query
embeddings; pass `params={"kind": "passage"}` for passages. The corrector ships alongside
(artifact `corrector`) for indexes built from a stale cache."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd


def _texts(model_input) -> list[str]:
    if hasattr(model_input, "columns"):  # pandas DataFrame
        col = "text" if "text" in model_input.columns else model_input.columns[0]
        return [str(t) for t in model_input[col].tolist()]
    if isinstance(model_input, str):
        return [model_input]
    return [str(t) for t in model_input]


class FreshenEmbedder(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from freshen.modeling.encoder import Encoder

        self.encoder = Encoder.load(context.artifacts["encoder"])
        self.encoder.eval()

    # a DataFrame hint: MLflow validates the input against the logged signature (one string
    # column) and infers nothing from the hint
    def predict(self, context, model_input: pd.DataFrame, params=None) -> np.ndarray:
        from freshen.encoding import encode

        kind = (params or {}).get("kind", "query")
        if kind not in ("query", "passage"):
            raise ValueError(f"params.kind must be 'query' or 'passage', got {kind!r}")
        return encode(self.encoder, _texts(model_input), kind, batch_size=32, precision="fp32")
