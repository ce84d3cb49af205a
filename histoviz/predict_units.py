"""What a run knows that turns its predictions into clinical units, written into each prediction
file by :func:`histoviz.predict.predict_bag` (and read by :mod:`histoviz.viz.clinical`):

- survival blocks: the training time bins' edges and time unit, the horizons to read the
  survival function at (1, 3, 5 years or the bin ends) and the training cohort's cross-validated
  held-out risks (``heldout/<block>.parquet``), for percentiles -> ``uns["survival"]``;
- regression blocks: the training data's unit (``log10(1 + CP10k)``...) with the training mean
  and standard deviation when targets were z-scored -> ``uns["target_scale"]``, and quantiles of
  the cohort's held-out predictions per target -> ``uns["cohort_reference"]``;
- ``uns["units"]``: units that depend on the run (the median survival's time unit).

Functions take the run as :func:`histoviz.predict.load_run` returns it (its first pipeline's
fold-fitted preprocessors and its folder).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from histoviz.errors import DataError
from histoviz.task_kinds import TaskKind

if TYPE_CHECKING:
    import anndata as ad

__all__ = ["clinical_uns", "cohort_quantiles_of", "heldout_of", "survival_reference_of", "target_scale_of"]

log = logging.getLogger(__name__)


def heldout_of(rm: Any, block: str) -> pd.DataFrame | None:
    """The run's cross-validated held-out predictions of ``block`` (``None``: not recorded);
    read once per run object."""
    cache = rm.__dict__.setdefault("_heldout_tables", {})
    if block not in cache:
        from histoviz.io.rundir import RunDir, is_run_dir

        h = None
        if is_run_dir(rm.run_dir):
            try:
                h = RunDir(rm.run_dir).heldout(block)
            except (DataError, OSError, ValueError) as e:
                log.info("%s: no held-out table of %s (%s)", rm.run_dir, block, e)
        cache[block] = h
    return cache[block]


def survival_reference_of(rm: Any, block: str) -> dict[str, Any] | None:
    """Bin edges, time unit, default horizons and the training cohort's held-out risks of a
    survival block (:func:`histoviz.tasks.survival_reference`); ``None`` for other blocks."""
    from histoviz.tasks import survival_reference

    p = rm.pipelines[0].preprocessors.get(block)
    if p is None or not hasattr(p, "edges_"):
        return None
    h = heldout_of(rm, block)
    risk = h["risk"].to_numpy(np.float64) if h is not None and "risk" in h else None
    return survival_reference(p.edges_, p.time_unit, cohort_risk=risk)


def target_scale_of(rm: Any, block: str) -> dict[str, Any] | None:
    """How a regression block's predictions map back to the training data's scale: ``unit``
    (e.g. ``log10(1 + CP10k)``), ``model_unit`` (what the model outputs), the training ``mean``
    and ``std`` when targets were z-scored, and ``targets``."""
    from histoviz.data.targets import scale_label

    p = rm.pipelines[0].preprocessors.get(block)
    s = getattr(p, "spec", None)
    if s is None:
        return None
    unit = scale_label(s.normalize, s.target_sum, s.transform)
    out: dict[str, Any] = {"unit": unit, "model_unit": unit, "targets": np.asarray(p.targets_, dtype=str)}
    if getattr(p, "mean_", None) is not None:
        out.update(model_unit=f"z-score of {unit}", mean=np.asarray(p.mean_, np.float64),
                   std=np.asarray(p.std_, np.float64))
    return out


def cohort_quantiles_of(rm: Any, block: str, targets: list[str], n: int = 101) -> np.ndarray | None:
    """``(n, len(targets))`` quantiles (0..100 %) of the training cohort's held-out predictions
    per target, in the model's output space (NaN for targets it did not hold out)."""
    h = heldout_of(rm, block)
    if h is None or not {"target", "y_pred"} <= set(h.columns):
        return None
    levels = np.linspace(0.0, 1.0, n)
    q = h.groupby("target", sort=False)["y_pred"].quantile(levels).unstack()
    return q.reindex([str(t) for t in targets]).to_numpy(np.float64).T


def clinical_uns(a: ad.AnnData, rm: Any, pm: Any, refs: dict[str, Any]) -> None:
    """Write ``uns["survival"]``, ``uns["target_scale"]``, ``uns["cohort_reference"]`` and
    ``uns["units"]`` of a prediction (see the module docstring); ``refs`` are the survival
    blocks' :func:`survival_reference_of`."""
    from histoviz.tasks import _risk_names

    units: dict[str, str] = {}
    surv = {}
    for b, ref in refs.items():
        if ref is None:
            continue
        surv[b] = {k: v for k, v in ref.items() if v is not None}
        units[_risk_names(b)["median"]] = str(ref["time_unit"])
    scales, cohort = {}, {}
    for b, kind in pm.kinds.items():
        if kind != TaskKind.REGRESSION or b not in pm.patch:
            continue
        sc = target_scale_of(rm, b)
        if sc is not None:
            scales[b] = sc
        q = cohort_quantiles_of(rm, b, list(pm.targets[b]))
        if q is not None:
            cohort[b] = {"targets": np.asarray(pm.targets[b], dtype=str), "quantiles": q,
                         "what": "held-out predictions of the training cohort (cross-validation)"}
    for key, val in (("survival", surv), ("target_scale", scales), ("cohort_reference", cohort), ("units", units)):
        if val:
            a.uns[key] = val
