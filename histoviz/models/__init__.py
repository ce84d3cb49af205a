"""Slide-level molecular prediction models and their registry.

Registered models (``histoviz.models.list_models()``):

========================  =============================================================
``multiomics``            ABMIL + shared FC-512 + one linear head per modality (MTL)
``multiomics-stl``        one ABMIL + FC-512 + linear model per modality (STL)
``multiomics-tangle``     MTL after TANGLE-style contrastive pretraining
``meanpool-mlp``          mean-pooled features + FC-512 + heads (baseline)
``cpnn``                  cell-type prototypes x image-derived composition weights
``ridge``                 mean-pool + PCA + ridge (HEST protocol)
``knn``                   mean-pool + PCA + k-nearest neighbours
========================  =============================================================

Importing this package does not import torch; the torch models import it when built.
"""

from __future__ import annotations

from histoviz.models.base import (
    ModelInfo,
    PatchMaps,
    SlideModel,
    check_bags,
    create_model,
    list_models,
    model_info,
    model_param_names,
    register_model,
)
from histoviz.models.baselines import KNNBaseline, RidgeBaseline
from histoviz.models.cpnn import CPNNRegressor
from histoviz.models.multiomics import MultiOmicsRegressor

__all__ = [
    "CPNNRegressor",
    "KNNBaseline",
    "ModelInfo",
    "MultiOmicsRegressor",
    "PatchMaps",
    "RidgeBaseline",
    "SlideModel",
    "check_bags",
    "create_model",
    "list_models",
    "model_info",
    "model_param_names",
    "register_model",
]


def _register_builtin() -> None:
    from histoviz.models.base import _MODELS

    if "multiomics" in _MODELS:
        return
    register_model("multiomics", MultiOmicsRegressor, mode="mtl", pooling="abmil",
                   description="ABMIL + shared FC-512 + linear head per modality (multi-task)")
    register_model("multiomics-stl", MultiOmicsRegressor, mode="stl", pooling="abmil",
                   description="one ABMIL + FC-512 + linear model per modality (single-task)")
    register_model("multiomics-tangle", MultiOmicsRegressor, mode="mtl", pooling="abmil", contrastive_epochs=30,
                   description="multi-task after TANGLE-style contrastive pretraining on expression")
    register_model("meanpool-mlp", MultiOmicsRegressor, mode="mtl", pooling="mean",
                   description="mean-pooled features + FC-512 + linear heads (baseline)")
    register_model("cpnn", CPNNRegressor, description="cell-type prototypes x per-patch composition weights")
    register_model("ridge", RidgeBaseline, description="mean-pool + PCA + ridge (HEST protocol)")
    register_model("knn", KNNBaseline, description="mean-pool + PCA + k-nearest neighbours")


_register_builtin()
