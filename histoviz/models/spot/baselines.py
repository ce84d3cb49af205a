"""Spot baselines and controls: kNN in feature space and the training-mean predictor.

- ``knn-spot``: standardise the frozen features, PCA (fitted on training spots), then the mean
  expression of the ``k`` nearest training spots (cosine or euclidean), found by the same
  chunked top-k search as CMRCNet's retrieval (so it scales to 100k training spots, unlike the
  slide-level ``knn`` that forms all pairwise distances at once);
- :class:`SpotMean`: every spot gets the mean training expression (the control every model must
  beat in squared error; its per-gene Pearson across spots is undefined, a constant). A control,
  not a registered model; the spot runner adds it with ``evaluation.spots.controls: [mean]``.

The HEST-benchmark ridge on PCA-256 of frozen features is the registered ``ridge`` model
(:mod:`histoviz.models.slide.baselines`): on one-patch bags mean pooling is the identity, so
the same estimator serves spots.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from histoviz.errors import ConfigError
from histoviz.models.registry import register_model
from histoviz.models.spot._base import SpotModel

__all__ = ["SpotKNN", "SpotMean"]


@register_model("knn-spot", description="standardised features + PCA + k nearest training spots (spots)")
class SpotKNN(SpotModel):
    """k-nearest-neighbour regression over training spots.

    Parameters
    ----------
    n_neighbors
        ``k`` (capped at the number of training spots).
    n_components
        PCA components fitted on the training spots (0: no PCA).
    metric
        ``"cosine"`` or ``"euclidean"``.
    """

    def __init__(self, *, n_neighbors: int = 50, n_components: int = 64, metric: str = "cosine") -> None:
        if metric not in ("cosine", "euclidean"):
            raise ConfigError(f"metric must be 'cosine' or 'euclidean', got {metric!r}")
        if int(n_neighbors) < 1 or int(n_components) < 0:
            raise ConfigError("n_neighbors must be >= 1 and n_components >= 0")
        self.n_neighbors = n_neighbors
        self.n_components = n_components
        self.metric = metric

    def _fit_spots(self, x: np.ndarray, y: np.ndarray, val: tuple[np.ndarray, np.ndarray] | None) -> None:
        if val is not None:  # no early stopping: validation spots are training data too
            x, y = np.concatenate([x, val[0]]), np.concatenate([y, val[1]])
        x = np.asarray(x, np.float64)
        mean = x.mean(axis=0)
        std = x.std(axis=0)
        std = np.where(std > 1e-8, std, 1.0)
        z = (x - mean) / std
        k = min(int(self.n_components), z.shape[1], max(len(z) - 1, 1))
        if k > 0:
            _, _, vt = np.linalg.svd(z - z.mean(axis=0), full_matrices=False)
            proj = (vt[:k].T / std[:, None])
            offset = -(mean / std + z.mean(axis=0)) @ vt[:k].T
        else:
            proj, offset = np.diag(1.0 / std), -mean / std
        self.proj_, self.offset_ = proj.astype(np.float32), offset.astype(np.float32)
        self.keys_ = (x @ proj + offset).astype(np.float32)
        self.values_ = np.asarray(y, np.float32)
        self.fit_info_ = {"n_train": len(x), "n_components": int(k)}

    def _predict_spots(self, x: np.ndarray) -> np.ndarray:
        from histoviz.models.spot._retrieval import topk_mean

        q = np.asarray(x, np.float32) @ self.proj_ + self.offset_
        return topk_mean(q, self.keys_, self.values_, int(self.n_neighbors), metric=self.metric)

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"fit_info": self.fit_info()}, {"proj": self.proj_, "offset": self.offset_, "keys": self.keys_,
                                               "values": self.values_}

    def _load_state(self, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
        self.proj_, self.offset_ = np.asarray(arrays["proj"]), np.asarray(arrays["offset"])
        self.keys_, self.values_ = np.asarray(arrays["keys"]), np.asarray(arrays["values"])
        self.fit_info_ = dict(meta.get("fit_info", {}))


@register_model("spot-mean", control="mean", description="the training spots' mean expression everywhere (control)")
class SpotMean(SpotModel):
    """Predicts the mean expression of the training spots everywhere (a control).

    Registered as the spot-level ``mean`` control (no model to choose: ``list_models`` leaves it
    out unless asked for controls); the spot runner fits it for ``evaluation.spots.controls:
    [mean]``.
    """

    def __init__(self) -> None:
        pass

    def _fit_spots(self, x: np.ndarray, y: np.ndarray, val: tuple[np.ndarray, np.ndarray] | None) -> None:
        if val is not None:
            y = np.concatenate([y, val[1]])
        self.mean_ = np.asarray(y, np.float64).mean(axis=0)
        self.fit_info_ = {"n_train": len(y)}

    def _predict_spots(self, x: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.mean_, (len(x), len(self.mean_))).copy()

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"fit_info": self.fit_info()}, {"mean": self.mean_}

    def _load_state(self, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
        self.mean_ = np.asarray(arrays["mean"], np.float64)
        self.fit_info_ = dict(meta.get("fit_info", {}))
