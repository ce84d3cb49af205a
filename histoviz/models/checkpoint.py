"""Checkpoints: ``model.safetensors`` (arrays) + ``model.json`` (everything else). No pickle.

A checkpoint folder holds one fitted pipeline: the model's learned state, the fold-fitted
target preprocessors of every modality and what the features were made with (encoder,
tiling), so :func:`load_checkpoint` can rebuild a working predictor from the folder alone.

``model.json``::

    {"format": 1, "histoviz_version": ..., "model": <registry name>, "params": {...},
     "state": <model metadata>, "preprocessors": {modality: <metadata>},
     "features": {"encoder": ..., "embed_dim": ..., "tile_size": ..., "mpp": ...},
     "info": {...}}
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from histoviz._atomic import atomic_path, atomic_write_text
from histoviz._version import __version__
from histoviz.errors import DataError

__all__ = ["CHECKPOINT_FORMAT", "FittedPipeline", "load_checkpoint", "save_checkpoint"]

CHECKPOINT_FORMAT = 1


@dataclass
class FittedPipeline:
    """A fitted model with its target preprocessors and feature provenance."""

    model: Any
    preprocessors: dict[str, Any] = field(default_factory=dict)
    features: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


def _jsonable(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x


def save_checkpoint(pipeline: FittedPipeline, folder: str | os.PathLike) -> Path:
    """Write ``folder/model.safetensors`` and ``folder/model.json`` atomically."""
    from safetensors.numpy import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = pipeline.model
    meta, arrays = model.state()
    tensors: dict[str, np.ndarray] = {f"model.{k}": np.ascontiguousarray(v) for k, v in arrays.items()}
    prep_meta = {}
    for mod, prep in pipeline.preprocessors.items():
        pm, pa = prep.to_state()
        prep_meta[mod] = pm
        tensors.update({f"prep.{mod}.{k}": np.ascontiguousarray(v) for k, v in pa.items()})
    for k, v in list(tensors.items()):
        if v.dtype == bool:
            tensors[k] = v.astype(np.uint8)
    doc = {
        "format": CHECKPOINT_FORMAT,
        "histoviz_version": __version__,
        "model": model.name,
        "params": model.get_params(),
        "state": meta,
        "preprocessors": prep_meta,
        "features": pipeline.features,
        "info": pipeline.info,
    }
    with atomic_path(folder / "model.safetensors") as tmp:
        save_file(tensors, str(tmp))
    atomic_write_text(folder / "model.json", json.dumps(_jsonable(doc), indent=1))
    return folder


def load_checkpoint(folder: str | os.PathLike) -> FittedPipeline:
    """Rebuild a :class:`FittedPipeline` from a checkpoint folder (no pickle involved).

    Raises
    ------
    DataError
        Missing files, unknown format or model.
    """
    from safetensors.numpy import load_file

    from histoviz.models import create_model

    folder = Path(folder)
    jpath, tpath = folder / "model.json", folder / "model.safetensors"
    if not jpath.exists() or not tpath.exists():
        raise DataError(f"{folder}: not a histoviz checkpoint (needs model.json and model.safetensors)")
    try:
        doc = json.loads(jpath.read_text())
    except ValueError as e:
        raise DataError(f"{jpath}: unreadable ({e}); the checkpoint is damaged: copy the run again or retrain") from e
    if doc.get("format") != CHECKPOINT_FORMAT:
        raise DataError(f"{jpath}: checkpoint format {doc.get('format')} (this histoviz reads {CHECKPOINT_FORMAT})")
    try:
        tensors = load_file(str(tpath))
    except Exception as e:  # safetensors raises SafetensorError / OSError on foreign files
        raise DataError(f"{tpath}: not a readable safetensors file ({type(e).__name__}: {e}); "
                        "the checkpoint is damaged: copy the run again or retrain (histoviz never unpickles)") from e
    params = dict(doc["params"])
    for k, v in params.items():  # JSON turns tuples into lists
        if isinstance(v, list):
            params[k] = tuple(v)
    model = create_model(doc["model"], **params)
    marrays = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state(doc["state"], marrays)
    except (KeyError, RuntimeError, ValueError) as e:
        raise DataError(f"{tpath}: the stored state does not fit model {doc['model']!r} "
                        f"({type(e).__name__}: {str(e).splitlines()[0][:200]}); retrain or use the matching histoviz") from e
    preps = {}
    for mod, pm in doc.get("preprocessors", {}).items():
        pre = f"prep.{mod}."
        pa = {k[len(pre):]: v for k, v in tensors.items() if k.startswith(pre)}
        preps[mod] = _preprocessor_from_state(pm, pa)
    return FittedPipeline(model, preps, dict(doc.get("features", {})), dict(doc.get("info", {})))


def _preprocessor_from_state(meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> Any:
    """The target preprocessor a checkpoint stored (omics, classes or survival bins)."""
    from histoviz.data.omics import TargetPreprocessor
    from histoviz.data.outcomes import GradeEncoder, SurvivalBins

    kind = meta.get("type")
    if kind == "classes":
        return GradeEncoder.from_state(meta, arrays)
    if kind == "survival_bins":
        return SurvivalBins.from_state(meta, arrays)
    return TargetPreprocessor.from_state(meta, arrays)
