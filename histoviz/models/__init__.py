"""Slide- and spot-level models and their registry.

A model is one file in ``histoviz/models/slide/`` or ``histoviz/models/spot/``: a class with
the estimator API (:class:`~histoviz.models.base.SlideModel`) carrying one or more
``@register_model(...)`` decorators. Every module in those two folders is imported the first
time the registry is used, so adding a model touches no shared file. ``histoviz models``
lists them with the tasks they serve.

Importing this package does not import torch; the torch models import it when built.
"""

from __future__ import annotations

import importlib
import pkgutil

from histoviz.models.base import PatchMaps, SlideModel, check_bags
from histoviz.models.registry import (
    Capabilities,
    ModelInfo,
    control_model,
    create_model,
    list_models,
    model_info,
    model_param_names,
    register_model,
)

__all__ = [
    "Capabilities",
    "ModelInfo",
    "PatchMaps",
    "SlideModel",
    "check_bags",
    "control_model",
    "create_model",
    "list_models",
    "model_info",
    "model_param_names",
    "register_model",
]


def _import_model_files() -> None:
    for pkg in ("histoviz.models.slide", "histoviz.models.spot"):
        mod = importlib.import_module(pkg)
        for info in pkgutil.iter_modules(mod.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{pkg}.{info.name}")


_import_model_files()
