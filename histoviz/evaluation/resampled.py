"""The corrected resampled t interval: an interval for a cross-validated difference that
includes the variance of training.

The per-fold differences ``d_1..d_J`` of two models evaluated on the same ``r`` repeats of
``k``-fold cross-validation (``J = r k``) are not independent: every two folds share most of
their training patients, so their plain standard error ``s / sqrt(J)`` is too small and a t
interval built on it is anti-conservative (and a patient bootstrap of the held-out predictions
with the fitted models held fixed leaves the training variance out altogether). Nadeau and
Bengio (2003, *Machine Learning* 52:239) correct the variance of the mean by the ratio of test
to training set sizes; Bouckaert and Frank (2004, PAKDD) apply it to repeated k-fold:

    var = (1 / J + n_test / n_train) * s^2,    s^2 = sample variance of d_j (ddof 1)

    CI = mean(d) -+ t_{J-1, 1 - (1 - confidence)/2} * sqrt(var),    t = mean(d) / sqrt(var)

``n_test / n_train`` is the mean over folds of each fold's held-out patients over the patients
the fold's models were trained on (the rest of the cross-validated cohort: for ``k`` folds about
``1 / (k - 1)``; calibration and validation splits are carved out of those training patients
and do not change the overlap the correction accounts for).

>>> r = corrected_resampled_t([0.02, 0.01, 0.03, -0.01, 0.02], n_test=[12] * 5, n_train=[48] * 5)
>>> round(r.low, 4), round(r.high, 4), r.df
(-0.0142, 0.0422, 4)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from histoviz.errors import DataError

__all__ = ["CORRECTED_METHOD", "CorrectedInterval", "corrected_resampled_t"]

CORRECTED_METHOD = "Nadeau-Bengio corrected resampled t"


@dataclass(frozen=True)
class CorrectedInterval:
    """A corrected resampled t interval (see the module docstring).

    Attributes
    ----------
    mean, low, high, confidence
        Mean per-fold difference and its interval.
    se
        Corrected standard error ``sqrt((1/J + n_test/n_train) s^2)``.
    sd
        Standard deviation of the per-fold differences (ddof 1).
    t, p, df
        Corrected t statistic, its two-sided p-value and degrees of freedom ``J - 1``.
    n_units, ratio
        ``J`` and ``n_test / n_train``.
    """

    mean: float
    low: float
    high: float
    confidence: float
    se: float
    sd: float
    t: float
    p: float
    df: int
    n_units: int
    ratio: float

    @property
    def method(self) -> str:
        """One phrase naming the interval."""
        return (f"{CORRECTED_METHOD} over {self.n_units} folds (df {self.df}, n_test/n_train {self.ratio:.3f}; "
                "includes training variance)")


def corrected_resampled_t(
    differences: Sequence[float] | np.ndarray,
    *,
    n_test: Sequence[float] | np.ndarray | float,
    n_train: Sequence[float] | np.ndarray | float,
    confidence: float = 0.95,
) -> CorrectedInterval:
    """Corrected resampled t interval of per-fold differences.

    Parameters
    ----------
    differences
        One paired difference per fold (repeat x fold); NaN folds are left out.
    n_test, n_train
        Held-out and training patients per fold (scalars or one per fold).
    confidence
        Interval level.

    Returns
    -------
    :class:`CorrectedInterval` (NaN bounds with fewer than two folds).

    Raises
    ------
    DataError
        ``confidence`` outside (0, 1) or non-positive sizes.
    """
    from scipy import stats

    if not 0.0 < confidence < 1.0:
        raise DataError(f"confidence must be in (0, 1), got {confidence}")
    d = np.asarray(differences, np.float64)
    nt = np.broadcast_to(np.asarray(n_test, np.float64), d.shape)
    nr = np.broadcast_to(np.asarray(n_train, np.float64), d.shape)
    ok = np.isfinite(d)
    d, nt, nr = d[ok], nt[ok], nr[ok]
    if (nt <= 0).any() or (nr <= 0).any():
        raise DataError("corrected resampled t: test and training sizes must be > 0")
    j = len(d)
    nan = float("nan")
    if j < 2:
        return CorrectedInterval(float(d.mean()) if j else nan, nan, nan, confidence, nan, nan, nan, nan, 0, j,
                                 float(np.mean(nt / nr)) if j else nan)
    ratio = float(np.mean(nt / nr))
    mean = float(d.mean())
    sd = float(d.std(ddof=1))
    se = float(np.sqrt((1.0 / j + ratio) * sd * sd))
    df = j - 1
    crit = float(stats.t.ppf(0.5 + confidence / 2.0, df))
    if se > 0:
        t = mean / se
        p = float(2.0 * stats.t.sf(abs(t), df))
    else:
        t, p = (0.0, 1.0) if mean == 0 else (float(np.sign(mean) * np.inf), 0.0)
    return CorrectedInterval(mean, mean - crit * se, mean + crit * se, confidence, se, sd, float(t), p, df, j, ratio)
