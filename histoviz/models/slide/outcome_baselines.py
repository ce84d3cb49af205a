"""Honest outcome baselines on mean-pooled features: PCA + logistic regression, PCA + Cox.

One class, :class:`PCAOutcomes`, registered as ``pca-logistic`` (grade), ``pca-cox``
(survival) and ``pca-outcomes`` (both):

- classification blocks: mean-pool the patch features, standardise, PCA, multinomial
  logistic regression (scikit-learn) with its inverse penalty ``C`` chosen by stratified
  cross-validation **on the training patients**;
- survival blocks: the same features, fewer components, lifelines' ``CoxPHFitter`` with a
  ridge penalty. Its survival function at the end of each training
  time bin, ``S_k = exp(-H0(t_k) exp((z - mean) beta))`` with lifelines' baseline cumulative
  hazard interpolated at ``t_k`` exactly as ``CoxPHFitter.predict_survival_function`` does,
  is the prediction, so risk ``-sum_k S_k`` ranks patients as the Cox linear predictor does.

Both are stored as plain arrays (projection, coefficients, baseline hazard): no scikit-learn
or lifelines object is ever serialised. Validation patients are used as training data
(no early stopping here). Per-patch maps apply the fitted maps to each patch's features.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from histoviz.errors import ConfigError, DataError
from histoviz.models.base import PatchMaps, SlideModel
from histoviz.models.registry import register_model
from histoviz.models.slide.baselines import _affine_projection, mean_pool
from histoviz.task_kinds import OUTCOME_KINDS, TaskKind

__all__ = ["PCAOutcomes"]


def _merge_val(bags: Sequence[np.ndarray], targets: Mapping[str, Any], val: Any) -> tuple[np.ndarray, dict[str, Any]]:
    x = mean_pool(bags)
    if val is None:
        return x, dict(targets)
    x = np.concatenate([x, mean_pool(val[0])])
    merged = {}
    for m, b in targets.items():
        vb = val[1][m]
        merged[m] = b.subset(np.arange(len(b))) if vb is None else _concat(b, vb)
    return x, merged


def _concat(a: Any, b: Any) -> Any:
    from histoviz.data.outcomes import ClassBlock, SurvivalBlock

    if isinstance(a, ClassBlock):
        return ClassBlock(a.name, a.classes, np.concatenate([a.codes, b.codes]), np.concatenate([a.present, b.present]))
    if isinstance(a, SurvivalBlock):
        return SurvivalBlock(a.name, np.concatenate([a.time, b.time]), np.concatenate([a.event, b.event]),
                             np.concatenate([a.present, b.present]), a.edges, np.concatenate([a.bins, b.bins]),
                             a.time_unit, a.n_bins)
    raise DataError(f"{type(a).__name__} is not an outcome block")


class _PooledOutcome(SlideModel):
    """Shared state handling: ``maps_[block]`` of named arrays, ``outcome_`` metadata."""

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        keys = {m: f"t{i}" for i, m in enumerate(self.maps_)}
        arrays = {f"{keys[m]}.{k}": v for m, a in self.maps_.items() for k, v in a.items()}
        return {"keys": keys, "outcome": self.outcome_, "fit_info": self.fit_info()}, arrays

    def _load_state(self, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
        self.maps_ = {}
        for m, key in meta["keys"].items():
            p = f"{key}."
            self.maps_[m] = {k[len(p):]: np.asarray(v) for k, v in arrays.items() if k.startswith(p)}
        self.outcome_ = dict(meta["outcome"])
        self.fit_info_ = dict(meta.get("fit_info", {}))

    def _apply(self, m: str, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _predict(self, bags: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        x = mean_pool(bags)
        return {m: self._apply(m, x) for m in self.maps_}

    def _predict_patches(self, bag: np.ndarray) -> PatchMaps:
        x = np.asarray(bag, np.float64)
        slide = self._predict([bag])
        names = {m: ([str(c) for c in o["classes"]] if "classes" in o else [f"S_{k}" for k in range(int(o["n_bins"]))])
                 for m, o in self.outcome_.items()}
        return PatchMaps(patch={m: self._apply(m, x) for m in self.maps_}, slide={m: v[0] for m, v in slide.items()},
                         targets=names, kinds=dict(self.kinds_))


@register_model("pca-logistic", tasks=(TaskKind.CLASSIFICATION,),
                description="mean-pool + PCA + logistic regression (grade baseline)")
@register_model("pca-cox", tasks=(TaskKind.SURVIVAL,),
                description="mean-pool + PCA + penalised Cox (lifelines CoxPHFitter), survival baseline")
@register_model("pca-outcomes", tasks=OUTCOME_KINDS,
                description="PCA + logistic regression for grade and PCA + penalised Cox for survival")
class PCAOutcomes(_PooledOutcome):
    """Mean-pooled features -> standardise -> PCA -> logistic regression (classification blocks)
    or penalised Cox proportional hazards (survival blocks).

    Parameters
    ----------
    tasks
        Task kinds to fit (classification and / or survival).
    n_components
        PCA components of the logistic model (capped at ``n_train - 1`` and the feature dimension).
    Cs
        Candidate inverse penalties of the logistic model (L2); chosen by ``cv``-fold stratified CV
        on the training patients, by log-loss.
    cv
        Folds of that inner cross-validation.
    cox_components
        PCA components of the Cox model (capped at ``n_events // 5``, at least 1, so the fit has
        about five events per covariate).
    penalizer
        lifelines ridge penalty of the Cox model.
    """

    def __init__(
        self,
        *,
        tasks: tuple[str, ...] = OUTCOME_KINDS,
        n_components: int = 32,
        Cs: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0),  # noqa: N803
        cv: int = 3,
        cox_components: int = 8,
        penalizer: float = 0.1,
    ) -> None:
        tasks = tuple(tasks)
        if not tasks or any(t not in OUTCOME_KINDS for t in tasks):
            raise ConfigError(f"tasks must be classification and/or survival, got {list(tasks)}")
        if n_components < 1 or cox_components < 1:
            raise ConfigError("n_components and cox_components must be >= 1")
        self.tasks = tasks
        self.n_components = n_components
        self.Cs = tuple(Cs)
        self.cv = cv
        self.cox_components = cox_components
        self.penalizer = penalizer

    def _fit(self, bags: Sequence[np.ndarray], targets: Mapping[str, Any], val: Any) -> None:
        x, targets = _merge_val(bags, targets, val)
        self.maps_, self.outcome_, self.fit_info_ = {}, {}, {}
        for m, b in targets.items():
            if b.kind == TaskKind.CLASSIFICATION:
                self._fit_logistic(m, b, x)
            else:
                self._fit_cox(m, b, x)

    def _fit_logistic(self, m: str, b: Any, x: np.ndarray) -> None:
        from sklearn.decomposition import PCA
        from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
        from sklearn.model_selection import StratifiedKFold
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler

        rows = np.flatnonzero(b.present)
        y = b.codes[rows]
        k = max(1, min(int(self.n_components), x.shape[1], len(rows) - 1))
        counts = np.bincount(y, minlength=len(b.classes))
        n_cv = int(min(self.cv, counts[counts > 0].min())) if (counts > 0).sum() > 1 else 0
        if n_cv >= 2:
            clf = LogisticRegressionCV(Cs=list(self.Cs), cv=StratifiedKFold(n_cv, shuffle=True, random_state=0),
                                       max_iter=2000, l1_ratios=(0.0,), scoring="neg_log_loss",
                                       use_legacy_attributes=False)
        else:
            clf = LogisticRegression(C=1.0, max_iter=2000)
        pipe = Pipeline([("scale", StandardScaler()), ("pca", PCA(n_components=k, random_state=0)), ("clf", clf)])
        pipe.fit(x[rows], y)
        p, c = _affine_projection(pipe)
        fitted = pipe.named_steps["clf"]
        coef, icpt, present = np.atleast_2d(fitted.coef_), np.atleast_1d(fitted.intercept_), fitted.classes_
        w = np.zeros((len(b.classes), coef.shape[1]))
        bias = np.full(len(b.classes), -30.0)  # classes absent from training get ~0 probability
        if len(present) == 2 and coef.shape[0] == 1:  # binary: sklearn's single coefficient row
            w[present[1]], bias[present[1]] = coef[0], icpt[0]
            w[present[0]], bias[present[0]] = 0.0, 0.0
        else:
            w[present], bias[present] = coef, icpt
        self.maps_[m] = {"P": p, "c": c, "W": w, "b": bias}
        self.outcome_[m] = {"classes": list(b.classes)}
        self.fit_info_[m] = {"n_components": k, "C": float(np.atleast_1d(getattr(fitted, "C_", [1.0]))[0])}

    def _fit_cox(self, m: str, b: Any, x: np.ndarray) -> None:
        import pandas as pd
        from lifelines import CoxPHFitter
        from sklearn.decomposition import PCA
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler

        if b.edges is None:
            raise DataError(f"{m}: survival targets need time bins")
        rows = np.flatnonzero(b.present)
        n_ev = int(b.event[rows].sum())
        k = max(1, min(int(self.cox_components), x.shape[1], len(rows) - 2, max(1, n_ev // 5)))
        proj = Pipeline([("scale", StandardScaler()), ("pca", PCA(n_components=k, random_state=0))]).fit(x[rows])
        p, c = _affine_projection(proj)
        cols = [f"pc{i}" for i in range(k)]
        df = pd.DataFrame(x[rows] @ p + c, columns=cols)
        df["T"], df["E"] = b.time[rows], b.event[rows]
        cph = CoxPHFitter(penalizer=float(self.penalizer)).fit(df, "T", "E")
        times = self.bin_end_times(b.edges, b.time[rows])
        base = cph.baseline_cumulative_hazard_
        h0 = np.interp(times, base.index.to_numpy(float), base.iloc[:, 0].to_numpy(float))
        self.maps_[m] = {"P": p, "c": c, "beta": cph.params_[cols].to_numpy(float),
                         "mean": np.asarray(cph._norm_mean[cols], float), "H0": h0, "times": times}
        self.outcome_[m] = {"edges": [float(e) if np.isfinite(e) else None for e in b.edges], "n_bins": b.n_bins}
        self.fit_info_[m] = {"n_components": k, "events": n_ev, "concordance_train": float(cph.concordance_index_)}

    @staticmethod
    def bin_end_times(edges: np.ndarray, time: np.ndarray) -> np.ndarray:
        """End of each time bin: the inner edges, then the largest training time for the open last bin."""
        e = np.asarray(edges, float)
        return np.concatenate([e[1:-1], [float(np.max(time))]])

    def linear_predictor(self, m: str, x: np.ndarray) -> np.ndarray:
        """``(z - mean) beta`` of mean-pooled features ``x`` (lifelines' log partial hazard)."""
        a = self.maps_[m]
        return ((x @ a["P"] + a["c"]) - a["mean"]) @ a["beta"]

    def _apply(self, m: str, x: np.ndarray) -> np.ndarray:
        a = self.maps_[m]
        if "W" in a:
            z = (x @ a["P"] + a["c"]) @ a["W"].T + a["b"]
            z = z - z.max(axis=1, keepdims=True)
            e = np.exp(z)
            return e / e.sum(axis=1, keepdims=True)
        return np.exp(-np.outer(np.exp(self.linear_predictor(m, x)), a["H0"]))
