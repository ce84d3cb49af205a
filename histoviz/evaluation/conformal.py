"""Split conformal prediction: grade sets, risk intervals and regression intervals.

Split conformal (Angelopoulos & Bates; the recipe PathGen follows): nonconformity scores
``s_i`` of ``n`` calibration patients, never used for fitting, give the threshold

    q_hat = the ceil((n + 1)(1 - alpha))-th smallest score

(MAPIE's order statistic; PathGen's ``np.quantile(..., method="higher")`` at the same level is
one order statistic more conservative) and a test prediction set ``{y : s(x, y) <= q_hat}`` covers the true label with probability
at least ``1 - alpha`` when calibration and test patients are exchangeable. The quantile level
exceeds 1 when ``n < (1 - alpha) / alpha``; then no finite threshold exists and
:func:`conformal_quantile` raises with the minimum size (9 patients for ``alpha = 0.1``).

Scores:

- classification ``"lac"`` (PathGen, MAPIE's ``lac``): ``1 - p_true``; set ``{j : p_j >= 1 - q_hat}``;
- classification ``"aps"`` (adaptive sets, not randomised): the probability mass of the classes
  ranked at or above the true one; set = the classes whose own score is ``<= q_hat`` (the top
  classes while their cumulative mass stays within ``q_hat``);
- regression / risk: ``|y - y_hat|``; interval ``y_hat +- q_hat`` (per target).

Group-conditional (Mondrian) calibration computes one ``q_hat`` per subgroup from that
subgroup's calibration patients (PathGen's subgroup tables); test patients use their group's
threshold.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from histoviz.errors import DataError

__all__ = [
    "class_scores",
    "class_sets",
    "conformal_quantile",
    "grade_uncertainty",
    "min_calibration_size",
    "mondrian_quantiles",
    "risk_uncertainty",
]


def min_calibration_size(alpha: float) -> int:
    """Smallest calibration set with a finite split-conformal threshold for ``alpha``."""
    if not 0.0 < alpha < 1.0:
        raise DataError(f"alpha must be in (0, 1), got {alpha}")
    return int(math.ceil((1.0 - alpha) / alpha - 1e-12))


def conformal_quantile(scores: np.ndarray, alpha: float, *, where: str = "calibration split") -> np.ndarray:
    """``q_hat`` of calibration ``scores`` (``(n,)`` or ``(n, m)`` for ``m`` targets).

    NaN scores (patients without a label for a target) are left out per column.

    Raises
    ------
    DataError
        Fewer calibration values than :func:`min_calibration_size` (the message states it).
    """
    s = np.asarray(scores, dtype=np.float64)
    one = s.ndim == 1
    s2 = s[:, None] if one else s
    need = min_calibration_size(alpha)
    out = np.empty(s2.shape[1])
    for j in range(s2.shape[1]):
        col = s2[:, j]
        col = col[np.isfinite(col)]
        n = len(col)
        if n < need:
            raise DataError(
                f"{where}: {n} calibration patient(s); alpha={alpha:g} needs at least {need} "
                "(raise evaluation.calibration_fraction, use fewer folds or more patients, or a larger alpha)"
            )
        k = min(math.ceil((n + 1) * (1.0 - alpha) - 1e-9), n)
        out[j] = float(np.sort(col)[k - 1])
    return out[0] if one else out


def class_scores(proba: np.ndarray, labels: np.ndarray, *, method: str = "lac") -> np.ndarray:
    """Nonconformity score of the true class (``labels`` = class codes, ``-1`` -> NaN)."""
    p = np.asarray(proba, np.float64)
    y = np.asarray(labels, np.int64)
    out = np.full(len(y), np.nan)
    ok = y >= 0
    if method == "lac":
        out[ok] = 1.0 - p[np.flatnonzero(ok), y[ok]]
    elif method == "aps":
        for i in np.flatnonzero(ok):
            pt = p[i, y[i]]
            out[i] = float(p[i][p[i] >= pt].sum())  # mass of the classes ranked at or above the true one
    else:
        raise DataError(f"unknown conformal score {method!r}; use lac or aps")
    return out


def class_sets(proba: np.ndarray, qhat: float | np.ndarray, *, method: str = "lac",
               empty: str = "keep") -> np.ndarray:
    """``(n, K)`` bool prediction sets for threshold(s) ``qhat`` (scalar or one per row).

    Parameters
    ----------
    proba
        ``(n, K)`` class probabilities.
    qhat
        Threshold from :func:`conformal_quantile` (or per-row thresholds, Mondrian).
    method
        ``"lac"`` or ``"aps"`` (the score the threshold was computed with).
    empty
        ``"keep"`` (an empty set stays empty, as MAPIE) or ``"all"`` (PathGen: an empty set
        becomes every class) or ``"argmax"`` (the most probable class).
    """
    p = np.asarray(proba, np.float64)
    q = np.broadcast_to(np.asarray(qhat, np.float64), (len(p),))
    if method == "lac":
        sets = p >= (1.0 - q)[:, None]
    elif method == "aps":
        # score of class j = mass of the classes with p >= p_j (ties share their mass)
        score = (p[:, None, :] * (p[:, None, :] >= p[:, :, None])).sum(axis=2)
        sets = score <= q[:, None] + 1e-12
    else:
        raise DataError(f"unknown conformal score {method!r}; use lac or aps")
    none = ~sets.any(axis=1)
    if none.any() and empty == "all":
        sets[none] = True
    elif none.any() and empty == "argmax":
        sets[np.flatnonzero(none), np.argmax(p[none], axis=1)] = True
    elif empty not in ("keep", "all", "argmax"):
        raise DataError(f"empty must be keep, all or argmax, got {empty!r}")
    return sets


def mondrian_quantiles(
    scores: np.ndarray, groups: Sequence, alpha: float, *, where: str = "calibration split"
) -> dict[object, float | np.ndarray]:
    """One ``q_hat`` per subgroup of the calibration patients (group-conditional coverage).

    Raises
    ------
    DataError
        A subgroup smaller than :func:`min_calibration_size` (names it).
    """
    s = np.asarray(scores, np.float64)
    g = np.asarray(groups, dtype=object)
    out: dict[object, float | np.ndarray] = {}
    for v in dict.fromkeys(g.tolist()):
        out[v] = conformal_quantile(s[g == v], alpha, where=f"{where}, subgroup {v!r}")
    return out


def grade_uncertainty(sets: np.ndarray) -> np.ndarray:
    """PathGen Eq. 10: ``|C| / K * (max(C) - min(C)) / (K - 1)`` (0 for a singleton, 1 for all)."""
    s = np.asarray(sets, bool)
    k = s.shape[1]
    size = s.sum(axis=1)
    idx = np.arange(k)
    hi = np.where(s, idx, -1).max(axis=1)
    lo = np.where(s, idx, k).min(axis=1)
    spread = np.where(size > 0, (hi - lo) / max(k - 1, 1), 0.0)
    return size / k * spread


def risk_uncertainty(lo: np.ndarray, hi: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """PathGen Eq. 12 on histoviz's risk scale ``[-n_bins, 0]``.

    The time-bin set of an interval ``[lo, hi]`` holds bin ``b`` when ``-b`` (the risk of a
    patient with an event in bin ``b``) lies in the interval.

    Returns
    -------
    ``(uncertainty, n_bins_in_set)``: ``|C| / K * (hi - lo) / K``.
    """
    lo = np.asarray(lo, np.float64)
    hi = np.asarray(hi, np.float64)
    b = -np.arange(n_bins, dtype=np.float64)  # risk of an event in bin 0, 1, ...
    inside = (b[None, :] >= lo[:, None] - 1e-12) & (b[None, :] <= hi[:, None] + 1e-12)
    size = inside.sum(axis=1)
    return size / n_bins * (hi - lo) / n_bins, size
