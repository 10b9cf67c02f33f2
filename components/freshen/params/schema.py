"""The whole of params.yaml as one typed object: `Params`. Every default lives here, and equals
the committed params.yaml's value, so a file that leaves a section out gets the default pipeline's."""

from __future__ import annotations

from typing import Any

from freshen.params.base import Section, doc, section
from freshen.params.orchestration import OrchestrationParams
from freshen.params.sections import (
    CacheParams,
    ClusterParams,
    DataParams,
    EncodeParams,
    EvaluateParams,
    MlflowParams,
    ModelParams,
    PromoteParams,
    ReembedParams,
)
from freshen.params.train import TrainParams


class Params(Section):
    """Every knob of the pipeline. DVC tracks each stage's sections; `freshen <step> --set train.steps=200`
    and `dvc exp run -S train.steps=200` override single keys."""

    seed: int = doc(13, "Seeds Python, NumPy and torch at the start of every step.")
    data: DataParams = section(DataParams, "The dataset: where it is found, its checksums, the dev split.")
    model: ModelParams = section(ModelParams, "The pre-trained encoder.")
    encode: EncodeParams = section(EncodeParams, "Encoding texts in bulk: caches, re-embedding, clustering queries.")
    cluster: ClusterParams = section(ClusterParams, "k-means over the training queries (TAS batches).")
    cache: CacheParams = section(CacheParams, "The initial passage cache.")
    train: TrainParams = section(TrainParams, "Training the retriever and its corrector.")
    reembed: ReembedParams = section(ReembedParams, "The corpus re-embedded after training.")
    evaluate: EvaluateParams = section(EvaluateParams, "Retrieval evaluation on dev and test.")
    promote: PromoteParams = section(PromoteParams, "Registering the model and moving the champion alias.")
    mlflow: MlflowParams = section(MlflowParams, "Experiment tracking.")
    orchestration: OrchestrationParams = section(OrchestrationParams, "How Airflow and Kubeflow run the steps.")

    def sections(self, names: list[str] | None = None) -> dict[str, Any]:
        """Plain values of some sections (all when None), in the order params.yaml has them."""
        dumped = self.model_dump()
        return dumped if names is None else {name: dumped[name] for name in names}
