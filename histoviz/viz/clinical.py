"""Predictions in the units a reader of the slide expects (no Qt, no Streamlit).

A model outputs omics in its own space (``log10(1 + CP10k)`` z-scored with training statistics,
say) and survival as ``S_k`` per training time bin. :func:`histoviz.predict.predict_bag` records
what turns them into clinical units in the prediction file, and this module reads it:

- ``uns["target_scale"][block]``: the training data's unit and, when targets were z-scored,
  the training ``mean`` / ``std`` -> :func:`rescale` puts a predicted omics map back on the
  training data's scale (``data``), or as a ``percentile`` of ``uns["cohort_reference"]``
  (quantiles of the training cohort's held-out predictions), or leaves it as the model's
  output (``model``);
- ``uns["survival"][block]``: bin edges, time unit, horizons and the cohort's held-out risks ->
  :func:`set_horizons` recomputes the survival-probability maps at other horizons from the
  patches' survival functions (``obsm["survival_function"]``).

Examples
--------
>>> import numpy as np
>>> from histoviz.io.predictions import make_prediction_adata
>>> a = make_prediction_adata(np.array([[0, 0], [224, 0]]), slide_id="S", tile_size_level0=224,
...                           expression=np.array([[-1.0], [2.0]]), genes=["MKI67"])
>>> a.uns["histoviz"]["modality"] = "gene"
>>> a.uns["target_scale"] = {"gene": {"unit": "log10(1 + CP10k)", "targets": np.array(["MKI67"]),
...                                   "mean": np.array([1.0]), "std": np.array([0.5])}}
>>> v, unit, _ = rescale(a, "gene", "MKI67", np.array([-1.0, 2.0]), "data")
>>> v.tolist(), unit
([0.5, 2.0], 'log10(1 + CP10k)')
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from histoviz.errors import DataError

if TYPE_CHECKING:
    import anndata as ad

__all__ = ["PERCENTILE_UNIT", "available_scales", "omics_block", "rescale", "set_horizons", "tasks_of"]

PERCENTILE_UNIT = "percentile of the training cohort's held-out predictions"


def tasks_of(adata: ad.AnnData) -> dict[str, str]:
    """``block -> task kind`` the model declared for a prediction file (``uns["histoviz"]["tasks"]``)."""
    raw = adata.uns.get("histoviz", {}).get("tasks")
    if not raw:
        return {}
    try:
        got = json.loads(raw) if isinstance(raw, str) else dict(raw)
    except (TypeError, ValueError):
        return {}
    return {str(k): str(v) for k, v in got.items()}


def omics_block(adata: ad.AnnData, store: str, key: str) -> tuple[str | None, str]:
    """Which regression block and target a predicted omics map shows: ``X`` holds the main
    modality (``uns["histoviz"]["modality"]``), ``obsm["pred_<block>"]`` the others
    (key ``"block/target"``)."""
    if store == "X":
        block = str(adata.uns.get("histoviz", {}).get("modality", "") or "")
        return (block or None), key
    block, _, target = key.partition("/")
    return block, target


def _entry(adata: ad.AnnData, what: str, block: str | None) -> Mapping[str, Any] | None:
    if block is None:
        return None
    d = adata.uns.get(what)
    e = d.get(block) if isinstance(d, Mapping) else None
    return e if isinstance(e, Mapping) else None


def _column(entry: Mapping[str, Any], target: str) -> int | None:
    targets = [str(t) for t in np.asarray(entry.get("targets", [])).reshape(-1)]
    return targets.index(target) if target in targets else None


def available_scales(adata: ad.AnnData, store: str, key: str) -> list[str]:
    """The :data:`~histoviz.viz.maps.SCALES` a predicted omics map can be shown on (``[]`` for
    other maps): ``data`` and ``model`` differ only when the run z-scored its targets;
    ``percentile`` needs the cohort reference."""
    if store not in ("X", "obsm_prefix"):
        return []
    block, target = omics_block(adata, store, key)
    out = ["data"]
    ts = _entry(adata, "target_scale", block)
    if ts is not None and ts.get("mean") is not None and _column(ts, target) is not None:
        out.append("model")
    ref = _entry(adata, "cohort_reference", block)
    if ref is not None and _column(ref, target) is not None:
        out.insert(1, "percentile")
    return out


def rescale(
    adata: ad.AnnData, block: str | None, target: str, values: np.ndarray, scale: str | None
) -> tuple[np.ndarray, str | None, tuple[float, float] | None]:
    """A predicted omics map on one scale: ``(values, unit, fixed limits)``.

    Parameters
    ----------
    adata
        The prediction file.
    block, target
        Which block and target (:func:`omics_block`).
    values
        The model's output for that target, one per patch.
    scale
        ``"data"`` (default when ``None``): the training data's scale (z-scores undone with the
        training mean and std); ``"percentile"``: 0-100 among the training cohort's held-out
        predictions; ``"model"``: unchanged.

    Returns
    -------
    The values, their unit (``None``: the file records none, keep the registry's) and fixed
    display limits (``(0, 100)`` for percentiles, else ``None``).

    Raises
    ------
    DataError
        A percentile was asked of a file without a cohort reference for that target.
    """
    from histoviz.evaluation.survival import percentile_of

    v = np.asarray(values, np.float64)
    ts = _entry(adata, "target_scale", block)
    j = _column(ts, target) if ts is not None else None
    if scale == "percentile":
        ref = _entry(adata, "cohort_reference", block)
        k = _column(ref, target) if ref is not None else None
        if k is None:
            raise DataError(f"this prediction file has no cohort reference for {target!r}; predict again "
                            "with a run that kept its held-out predictions (histoviz predict)")
        q = np.asarray(ref["quantiles"], np.float64)[:, k]
        return percentile_of(v, q).astype(np.float32), PERCENTILE_UNIT, (0.0, 100.0)
    if ts is None:
        return v.astype(np.float32), None, None
    if scale == "model":
        return v.astype(np.float32), str(ts.get("model_unit", ts.get("unit", ""))), None
    if j is not None and ts.get("mean") is not None and ts.get("std") is not None:
        v = v * float(np.asarray(ts["std"])[j]) + float(np.asarray(ts["mean"])[j])
    return v.astype(np.float32), str(ts.get("unit", "")), None


def set_horizons(
    adata: ad.AnnData, horizons: Sequence[float], *, labels: Sequence[str] | None = None,
    block: str = "survival",
) -> list[str]:
    """Read the survival maps of ``block`` at other horizons (in the training data's time unit).

    Replaces ``obsm["survival_probability"]`` (or the block's own key) with one column per
    horizon, computed from each patch's survival function (``obsm["survival_function"]``) and
    the bin edges in ``uns["survival"][block]`` by
    :func:`histoviz.evaluation.survival.survival_probability`; the horizons are remembered in
    ``uns["survival"]``. Returns the column names.

    Raises
    ------
    DataError
        The file has no survival function of that block, or a horizon is negative or lies beyond
        the last bin end (where the model says nothing).
    """
    import pandas as pd

    from histoviz.evaluation.survival import survival_probability
    from histoviz.tasks import _risk_names

    ref = _entry(adata, "survival", block)
    names = _risk_names(block)
    fn = adata.obsm.get(names["function"]) if names["function"] in adata.obsm else None
    if ref is None or fn is None:
        raise DataError(f"this prediction file has no survival function of {block!r} to read at other horizons")
    e = np.asarray(ref["edges"], np.float64)
    unit = str(ref.get("time_unit", ""))
    h = np.asarray(horizons, np.float64).reshape(-1)
    last = float(e[-2])
    if not h.size or np.any(~np.isfinite(h)) or np.any(h < 0) or np.any(h > last + 1e-9):
        raise DataError(f"horizons must lie between 0 and the last bin end, {last:.3g} {unit} (the last bin is "
                        f"open: the model says nothing later); got {h.tolist()}")
    cols = list(labels) if labels is not None else [f"{v:g} {unit}" for v in h]
    s = np.asarray(fn, np.float64)
    b = len(e) - 1
    full = np.concatenate([s, np.full((len(s), b - s.shape[1]), np.nan)], axis=1)  # S_{B-1} is never read
    p = survival_probability(full, e, h).astype(np.float32)
    adata.obsm[names["probability"]] = pd.DataFrame(p, index=adata.obs_names, columns=cols)
    new = dict(ref)
    new["horizons"], new["horizon_labels"] = h, np.asarray(cols, dtype=str)
    adata.uns["survival"] = {**dict(adata.uns["survival"]), block: new}
    return cols
