"""Calibration of outcome predictions: survival at a horizon from the discrete-time survival
function, reliability diagram and ECE of grade probabilities, predicted survival vs
Kaplan-Meier by risk decile; each equals an independent computation (closed form,
scikit-learn's ``calibration_curve``, lifelines' ``KaplanMeierFitter``)."""

from __future__ import annotations

import numpy as np
import pytest

from histoviz.errors import DataError
from histoviz.evaluation.survival import survival_probability


def test_survival_probability_equals_the_piecewise_exponential_truth():
    rng = np.random.default_rng(0)
    n, edges = 50, np.array([0.0, 6.0, 15.0, 30.0, np.inf])
    lam = rng.uniform(0.01, 0.2, size=(n, 4))  # constant hazard per bin, per patient

    def truth(t: np.ndarray) -> np.ndarray:  # S(t) = exp(-integral of the hazard)
        widths = np.clip(t[:, None] - edges[None, :-1], 0, np.diff(edges)[None, :])
        return np.exp(-(lam * widths).sum(axis=1))

    ends = np.array([6.0, 15.0, 30.0, 45.0])
    surv = np.stack([truth(np.full(n, e)) for e in ends], axis=1)
    for h in (0.0, 3.0, 6.0, 10.5, 29.9):
        np.testing.assert_allclose(survival_probability(surv, edges, h), truth(np.full(n, h)), rtol=1e-12)
    # the open last bin: unknown past the last inner edge unless its end is given
    assert np.isnan(survival_probability(surv, edges, 31.0)).all()
    np.testing.assert_allclose(survival_probability(surv, edges, 40.0, last_end=45.0), truth(np.full(n, 40.0)),
                               rtol=1e-12)
    assert np.isnan(survival_probability(surv, edges, 46.0, last_end=45.0)).all()
    # per-row horizons and per-row edges (each fold has its own bins)
    h = rng.uniform(0, 30, n)
    np.testing.assert_allclose(survival_probability(surv, np.broadcast_to(edges, (n, 5)), h), truth(h), rtol=1e-12)
    assert np.isnan(survival_probability(surv, edges, -1.0)).all()


def test_survival_probability_edge_cases():
    edges = np.array([0.0, 1.0, 2.0, np.inf])
    s = np.array([[0.5, 0.0, 0.0], [1.0, 1.0, 1.0], [np.nan, 0.5, 0.4]])
    np.testing.assert_allclose(survival_probability(s, edges, 1.5), [0.0, 1.0, np.nan])
    np.testing.assert_allclose(survival_probability(s, edges, 1.0), [0.5, 1.0, np.nan])
    np.testing.assert_allclose(survival_probability(s, edges, 2.0), [0.0, 1.0, np.nan])
    with pytest.raises(DataError, match="3 bins need 4 edges"):
        survival_probability(s, edges[:-1], 1.0)
