"""Baselines on mean-pooled patch features (scikit-learn).

- :class:`RidgeBaseline`: the HEST-benchmark protocol: mean-pool the patch features,
  standardise, PCA (256 components, fewer when there are fewer training slides), ridge
  regression. HEST fixes the ridge penalty; here ``alpha=None`` picks it from ``alphas`` by
  efficient leave-one-out CV **on the training slides** (``RidgeCV``), never on test data.
- :class:`KNNBaseline`: the same features, k-nearest-neighbour regression.

The mean-pool MLP baseline is :class:`~histoviz.models.slide.multiomics.MultiOmicsRegressor` with
``pooling="mean"`` (registered as ``meanpool-mlp``).

Each modality gets its own regressor, fitted on the training patients that have it.
Per-patch maps apply the fitted pipeline to each patch's features: for the ridge model the
pipeline is affine, so the mean of the patch maps equals the slide prediction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from histoviz.errors import ConfigError
from histoviz.models.base import PatchMaps, SlideModel
from histoviz.models.registry import register_model

if TYPE_CHECKING:
    from histoviz.data.targets import TargetBlock

__all__ = ["KNNBaseline", "RidgeBaseline", "mean_pool"]


def mean_pool(bags: Sequence[np.ndarray]) -> np.ndarray:
    """``(n_bags, D)`` mean of each bag's patch features (float64)."""
    return np.stack([np.asarray(b, dtype=np.float64).mean(axis=0) for b in bags])


class _PooledSklearn(SlideModel):
    """Shared logic: one sklearn pipeline per modality on mean-pooled features.

    After fitting, each pipeline is reduced to plain arrays (an affine map, plus the
    training points for kNN), which are what the checkpoint stores and what prediction
    uses: no sklearn object is ever serialised.
    """

    def _make(self, n_train: int, n_features: int) -> Any:
        raise NotImplementedError

    def _export(self, pipe: Any) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _apply(self, arrays: Mapping[str, np.ndarray], x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _fit(self, bags: Sequence[np.ndarray], targets: Mapping[str, TargetBlock], val: Any) -> None:
        x = mean_pool(bags)
        if val is not None:  # no early stopping here: validation patients are training data too
            x = np.concatenate([x, mean_pool(val[0])])
            targets = {m: _concat(b, val[1][m]) for m, b in targets.items()}
        self.maps_: dict[str, dict[str, np.ndarray]] = {}
        info: dict[str, Any] = {"n_train": {}}
        for m, blk in targets.items():
            rows = np.flatnonzero(blk.present)
            pipe = self._make(len(rows), x.shape[1])
            pipe.fit(x[rows], np.asarray(blk.values[rows], np.float64))
            self.maps_[m] = self._export(pipe)
            info["n_train"][m] = len(rows)
            alpha = getattr(pipe.steps[-1][1], "alpha_", None)
            if alpha is not None:
                info.setdefault("ridge_alpha", {})[m] = float(alpha)
        self.fit_info_ = info

    def _predict(self, bags: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        x = mean_pool(bags)
        return {m: self._apply(a, x) for m, a in self.maps_.items()}

    def _predict_patches(self, bag: np.ndarray) -> PatchMaps:
        x = np.asarray(bag, np.float64)
        slide = self._predict([bag])
        return PatchMaps(
            patch={m: self._apply(a, x) for m, a in self.maps_.items()},
            targets={m: self.targets_[m] for m in self.maps_},
            slide={m: v[0] for m, v in slide.items()},
        )

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        keys = {m: f"m{i}" for i, m in enumerate(self.maps_)}
        arrays = {f"{keys[m]}.{k}": v for m, a in self.maps_.items() for k, v in a.items()}
        return {"keys": keys, "fit_info": self.fit_info()}, arrays

    def _load_state(self, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
        self.maps_ = {}
        for m, key in meta["keys"].items():
            p = f"{key}."
            self.maps_[m] = {k[len(p):]: np.asarray(v) for k, v in arrays.items() if k.startswith(p)}
        self.fit_info_ = dict(meta.get("fit_info", {}))


def _concat(a: TargetBlock, b: TargetBlock) -> TargetBlock:
    from histoviz.data.targets import TargetBlock

    return TargetBlock(a.modality, a.targets, np.concatenate([a.values, b.values]),
                       np.concatenate([a.present, b.present]))


def _affine_projection(pipe: Any) -> tuple[np.ndarray, np.ndarray]:
    """``x -> (x - mean)/scale -> PCA`` as ``x @ P + c``."""
    sc, pca = pipe.named_steps["scale"], pipe.named_steps["pca"]
    p = (pca.components_ / sc.scale_[None, :]).T  # (D, k)
    c = -(sc.mean_ / sc.scale_ + pca.mean_) @ pca.components_.T
    return p, c


@register_model("ridge", additive=True, description="mean-pool + PCA + ridge (HEST protocol)")
class RidgeBaseline(_PooledSklearn):
    """Mean-pooled features -> standardise -> PCA -> ridge (HEST protocol).

    The fitted pipeline is affine, so it is stored as ``y = x @ W + b``.

    Parameters
    ----------
    n_components
        PCA components (HEST: 256), capped at ``n_train - 1`` and the feature dimension.
    alpha
        Fixed ridge penalty; ``None`` selects one of ``alphas`` by leave-one-out CV on the
        training slides.
    alphas
        Candidate penalties for ``alpha=None``.
    """

    def __init__(
        self,
        *,
        n_components: int = 256,
        alpha: float | None = None,
        alphas: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0),
    ) -> None:
        if n_components < 1:
            raise ConfigError(f"n_components must be >= 1, got {n_components}")
        self.n_components = n_components
        self.alpha = alpha
        self.alphas = tuple(alphas)

    def _make(self, n_train: int, n_features: int) -> Any:
        from sklearn.decomposition import PCA
        from sklearn.linear_model import Ridge, RidgeCV
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler

        k = max(1, min(int(self.n_components), n_features, max(n_train - 1, 1)))
        reg = Ridge(alpha=float(self.alpha)) if self.alpha is not None else RidgeCV(alphas=self.alphas)
        return Pipeline([("scale", StandardScaler()), ("pca", PCA(n_components=k, random_state=0)), ("ridge", reg)])

    def _export(self, pipe: Any) -> dict[str, np.ndarray]:
        p, c = _affine_projection(pipe)
        r = pipe.named_steps["ridge"]
        coef = np.atleast_2d(r.coef_)  # (m, k)
        return {"W": p @ coef.T, "b": c @ coef.T + np.atleast_1d(r.intercept_)}

    def _apply(self, a: Mapping[str, np.ndarray], x: np.ndarray) -> np.ndarray:
        return x @ a["W"] + a["b"]


@register_model("knn", description="mean-pool + PCA + k-nearest neighbours")
class KNNBaseline(_PooledSklearn):
    """Mean-pooled features -> standardise -> PCA -> k-nearest-neighbour regression.

    Stored as the projection and the projected training points with their targets.

    Parameters
    ----------
    n_neighbors
        ``k`` (capped at the number of training slides).
    n_components
        PCA components before the neighbour search.
    weights
        ``"uniform"`` or ``"distance"``.
    """

    def __init__(self, *, n_neighbors: int = 5, n_components: int = 32, weights: str = "uniform") -> None:
        if weights not in ("uniform", "distance"):
            raise ConfigError(f"weights must be 'uniform' or 'distance', got {weights!r}")
        self.n_neighbors = n_neighbors
        self.n_components = n_components
        self.weights = weights

    def _make(self, n_train: int, n_features: int) -> Any:
        from sklearn.decomposition import PCA
        from sklearn.neighbors import KNeighborsRegressor
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler

        k = max(1, min(int(self.n_components), n_features, max(n_train - 1, 1)))
        return Pipeline([
            ("scale", StandardScaler()),
            ("pca", PCA(n_components=k, random_state=0)),
            ("knn", KNeighborsRegressor(n_neighbors=max(1, min(int(self.n_neighbors), n_train)), weights=self.weights)),
        ])

    def _export(self, pipe: Any) -> dict[str, np.ndarray]:
        p, c = _affine_projection(pipe)
        knn = pipe.named_steps["knn"]
        return {"P": p, "c": c, "X": np.asarray(knn._fit_X, np.float64), "Y": np.asarray(knn._y, np.float64),
                "k": np.array([knn.n_neighbors])}

    def _apply(self, a: Mapping[str, np.ndarray], x: np.ndarray) -> np.ndarray:
        z = x @ a["P"] + a["c"]
        d = np.sqrt(np.maximum(((z[:, None, :] - a["X"][None, :, :]) ** 2).sum(-1), 0.0))
        k = int(a["k"][0])
        nn_idx = np.argsort(d, axis=1, kind="stable")[:, :k]
        y = a["Y"] if a["Y"].ndim == 2 else a["Y"][:, None]
        if self.weights == "uniform":
            return y[nn_idx].mean(axis=1)
        dd = np.take_along_axis(d, nn_idx, axis=1)
        w = 1.0 / np.maximum(dd, 1e-12)
        exact = dd <= 1e-12
        w = np.where(exact.any(axis=1, keepdims=True), exact.astype(float), w)
        return (y[nn_idx] * w[:, :, None]).sum(1) / w.sum(1, keepdims=True)
