"""``SpotModel``: the estimator base of spot-level models (one expression vector per spot).

A spot has one image patch (one feature vector) and one measured expression vector. Spot models
keep the slide-level estimator API (:class:`~histoviz.models.base.SlideModel`) so the registry,
checkpoints, the contract test and :func:`histoviz.predict.predict_bag` work unchanged:

- ``fit(bags, targets)`` / ``predict(bags)``: each bag is one unit; a bag of several patches is
  mean-pooled into one feature vector (a spot bag has one patch, so pooling is the identity);
- ``predict_patches(bag)``: every patch is predicted as a spot of its own (the per-spot, or
  per-tile, map); the slide value is the prediction for the pooled bag;
- ``fit_spots(X, block)`` / ``predict_spots(X)``: the fast path on a ``(n_spots, D)`` matrix that
  the spot experiment runner uses (no list of 100k one-row bags).

Subclasses implement ``_fit_spots(x, y, val)`` and ``_predict_spots(x)``; they predict one
regression block (the expression of the spots).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from histoviz.errors import DataError
from histoviz.models.base import PatchMaps, SlideModel, check_bags
from histoviz.task_kinds import TaskKind

__all__ = ["SpotModel", "pool"]


def pool(bags: Sequence[np.ndarray]) -> np.ndarray:
    """``(n_bags, D)`` float32: each bag's mean feature (the feature itself for one-patch bags)."""
    return np.stack([np.asarray(b, np.float32).mean(axis=0) for b in bags]).astype(np.float32)


class SpotModel(SlideModel):
    """Base of spot-level regressors (see the module docstring)."""

    tasks = (TaskKind.REGRESSION,)
    level = "spot"
    #: one expression block per spot
    regression_blocks = 1

    # -- the fast path ----------------------------------------------------------------------------
    def fit_spots(self, x: np.ndarray, block: Any, *, val: tuple[np.ndarray, Any] | None = None) -> SpotModel:
        """Fit on ``(n_spots, D)`` features and a regression block with one row per spot.

        Parameters
        ----------
        x
            Spot features.
        block
            :class:`~histoviz.data.targets.TargetBlock` (rows = spots).
        val
            ``(features, block)`` of validation spots from the **training** samples.

        Returns
        -------
        self
        """
        x = _check_matrix(x, "training spot features")
        if len(block.values) != len(x):
            raise DataError(f"{block.modality}: {len(block.values)} target rows for {len(x)} spots")
        if not block.present.any():
            raise DataError(f"{block.modality}: no training spot has expression")
        self.embed_dim_ = int(x.shape[1])
        self.modalities_ = [block.modality]
        self.targets_ = {block.modality: list(block.targets)}
        self.kinds_ = {block.modality: TaskKind.REGRESSION}
        vx = vy = None
        if val is not None and len(val[0]):
            vx = _check_matrix(val[0], "validation spot features", dim=self.embed_dim_)
            vpres = val[1].present
            vx, vy = vx[vpres], np.asarray(val[1].values, np.float32)[vpres]
        pres = block.present
        with self._compute_context([x]):
            self._fit_spots(x[pres], np.asarray(block.values, np.float32)[pres],
                            None if vx is None or not len(vx) else (vx, vy))
        return self

    def predict_spots(self, x: np.ndarray) -> np.ndarray:
        """``(n_spots, n_targets)`` predictions for ``(n_spots, D)`` features."""
        self._check_fitted()
        x = _check_matrix(x, "spot features", dim=self.embed_dim_)
        with self._compute_context([x]):
            return np.asarray(self._predict_spots(x), np.float64)

    # -- SlideModel hooks ---------------------------------------------------------------------------
    def _fit(self, bags: Sequence[np.ndarray], targets: Mapping[str, Any], val: Any) -> None:
        if len(targets) != 1:
            raise DataError(f"{type(self).__name__} predicts one expression block per spot; got {list(targets)}")
        (mod, blk), = targets.items()
        pres = blk.present
        v = None
        if val is not None:
            vb = val[1][mod]
            v = (pool(val[0])[vb.present], np.asarray(vb.values, np.float32)[vb.present])
            if not len(v[0]):
                v = None
        self._fit_spots(pool(bags)[pres], np.asarray(blk.values, np.float32)[pres], v)

    def _predict(self, bags: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        return {self.modalities_[0]: np.asarray(self._predict_spots(pool(bags)), np.float64)}

    def _predict_patches(self, bag: np.ndarray) -> PatchMaps:
        mod = self.modalities_[0]
        x = np.asarray(bag, np.float32)
        pm = PatchMaps(patch={mod: np.asarray(self._predict_spots(x), np.float64)},
                       slide={mod: np.asarray(self._predict_spots(x.mean(axis=0, keepdims=True)), np.float64)[0]},
                       targets={mod: list(self.targets_[mod])}, kinds={mod: TaskKind.REGRESSION})
        pm.extra.update(self._spot_extra(x))
        return pm

    # -- subclass hooks ---------------------------------------------------------------------------
    def _fit_spots(self, x: np.ndarray, y: np.ndarray, val: tuple[np.ndarray, np.ndarray] | None) -> None:
        raise NotImplementedError

    def _predict_spots(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _spot_extra(self, x: np.ndarray) -> dict[str, Any]:
        """Extra per-spot outputs (registry names), e.g. ``cell_type`` weights."""
        return {}


def _check_matrix(x: Any, where: str, dim: int | None = None) -> np.ndarray:
    x = np.asarray(x, np.float32)
    if x.ndim != 2:
        raise DataError(f"{where}: expected (n_spots, n_features), got shape {x.shape}")
    check_bags([x], embed_dim=dim, where=where)
    if not np.isfinite(x).all():
        raise DataError(f"{where}: NaN or infinite features")
    return x
