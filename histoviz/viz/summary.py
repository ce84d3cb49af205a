"""What was predicted for one patch, and for the whole slide, as plain values (no Qt).

Both are built from the output registry (:mod:`histoviz.outputs`) and the tasks' slide
summaries (``uns["slide_prediction"]``), so an inspector panel that shows them needs no field
names of its own:

- :func:`patch_summary`: position of a patch, every single-valued output (``rows``: label,
  value, unit, kind) and every multi-valued one (``frames``: cell-type weights, grade
  probabilities, co-attention, other modalities... with their columns), top genes of ``X``;
- :func:`slide_predictions`: one row per predicted block (grade with its conformal set, risk
  with its conformal interval, omics blocks), with a ready-made line of text.

Examples
--------
>>> import numpy as np, pandas as pd
>>> from histoviz.io.predictions import make_prediction_adata
>>> a = make_prediction_adata(np.array([[0, 0], [224, 0]]), slide_id="S", tile_size_level0=224,
...                           obs={"risk": np.array([0.5, -1.0])})
>>> [(r["label"], r["value"]) for r in patch_summary(a, 1)["rows"]]
[('Risk', -1.0)]
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from histoviz.errors import DataError
from histoviz.task_kinds import TaskKind
from histoviz.viz.maps import PredictionMaps, _as_maps

if TYPE_CHECKING:
    import anndata as ad

__all__ = ["describe_predictions", "patch_summary", "slide_prediction_sentence", "slide_predictions", "top_genes"]


def top_genes(adata: ad.AnnData, index: int, n: int = 10) -> list[tuple[str, float]]:
    """The ``n`` genes with the highest predicted expression in patch ``index``."""
    if not adata.n_vars:
        return []
    row = adata.X[index]
    v = np.asarray(row.toarray() if hasattr(row, "toarray") else row, dtype=np.float64).ravel()
    finite = np.where(np.isfinite(v), v, -np.inf)
    order = np.argsort(-finite, kind="stable")[: max(0, int(n))]
    return [(str(adata.var_names[j]), float(v[j])) for j in order if np.isfinite(v[j])]


def _scalar(v: Any) -> Any:
    if isinstance(v, (np.floating, float)):
        f = float(v)
        return None if not math.isfinite(f) else f
    if isinstance(v, np.integer):
        return int(v)
    if v is None:
        return None
    try:
        import pandas as pd

        if pd.isna(v):
            return None
    except (TypeError, ValueError):
        pass
    return v if isinstance(v, (int, str, bool)) else str(v)


def patch_summary(
    adata: ad.AnnData | PredictionMaps, index: int, *, n_genes: int = 10, mpp: float | None = None
) -> dict[str, Any]:
    """Everything predicted for one patch, as plain Python values (for inspector panels).

    Parameters
    ----------
    adata
        Predictions for one slide (or a :class:`~histoviz.viz.maps.PredictionMaps` of them).
    index
        Patch (row of ``adata``).
    n_genes
        How many top genes of ``X`` to list.
    mpp
        Slide microns per pixel (default ``uns["histoviz"]["mpp"]``), for the centre in um.

    Returns
    -------
    dict with

    - ``index``, ``name``, ``x``, ``y`` (level-0 top-left), ``size`` (level-0 px), ``centre``
      (level-0), ``centre_um`` (or None);
    - ``rows``: ``[{"name", "label", "value", "unit", "kind"}]``, one per single-valued
      registered output present (obs columns, category columns, arg-max categories such as the
      dominant cell type), in registry order;
    - ``outputs``: ``{label: value}`` of the same rows;
    - ``frames``: ``[{"name", "label", "kind", "unit", "values": {column: value}}]``, one per
      multi-valued output present (one frame per modality for ``obsm_prefix`` outputs);
    - ``top_genes``: ``[(gene, value)]`` of ``X`` (the main modality), highest first;
    - ``simulated``: whether the file holds simulated values.
    """
    from histoviz.outputs import list_outputs
    from histoviz.viz.maps import map_values

    pm = _as_maps(adata)
    adata = pm.adata
    n = adata.n_obs
    if not 0 <= int(index) < n:
        raise DataError(f"patch index {index} out of range 0..{n - 1}")
    i = int(index)
    info = adata.uns.get("histoviz", {})
    ts = float(info.get("tile_size_level0", 0))
    obs = adata.obs.iloc[i]
    if "x" in adata.obs and "y" in adata.obs:
        x, y = float(obs["x"]), float(obs["y"])
        cx, cy = x + ts / 2.0, y + ts / 2.0
    else:
        cx, cy = (float(v) for v in np.asarray(adata.obsm["spatial"])[i])
        x, y = cx - ts / 2.0, cy - ts / 2.0
    if mpp is None and info.get("mpp") is not None:
        try:
            mpp = float(info["mpp"])
        except (TypeError, ValueError):
            mpp = None
    if mpp is not None and not mpp > 0:
        mpp = None
    avail = pm.available
    units = adata.uns.get("units")
    units = dict(units) if isinstance(units, Mapping) else {}
    rows: list[dict[str, Any]] = []
    frames: list[dict[str, Any]] = []
    for spec in list_outputs():
        if spec.name not in avail:
            continue
        key = spec.anndata_key
        if spec.store in ("obs", "obs_category") and key in adata.obs:
            rows.append({"name": spec.name, "label": spec.label, "value": _scalar(obs[key]),
                         "unit": str(units.get(spec.name, spec.unit)), "kind": spec.kind})
        elif spec.store in ("argmax", "obs_category"):
            mv = map_values(pm, spec.name)
            code = int(mv.values[i])
            rows.append({"name": spec.name, "label": spec.label,
                         "value": mv.categories[code] if code >= 0 else None, "unit": "", "kind": spec.kind})
        elif spec.store == "obsm":
            fr = pm.frame(key)
            if fr is not None:
                frames.append({"name": spec.name, "label": spec.label, "kind": spec.kind, "unit": spec.unit,
                               "values": {str(c): float(v) for c, v in fr.iloc[i].items()}})
        elif spec.store == "obsm_prefix":
            for k in sorted(str(k) for k in adata.obsm.keys() if str(k).startswith(key)):
                fr = pm.frame(k)
                if fr is not None:
                    frames.append({"name": spec.name, "label": f"{spec.label}: {k[len(key):]}",
                                   "kind": spec.kind, "unit": spec.unit,
                                   "values": {str(c): float(v) for c, v in fr.iloc[i].items()}})
    return {
        "index": i,
        "name": str(adata.obs_names[i]),
        "x": int(round(x)),
        "y": int(round(y)),
        "size": int(round(ts)),
        "centre": (cx, cy),
        "centre_um": (cx * mpp, cy * mpp) if mpp else None,
        "rows": rows,
        "outputs": {r["label"]: r["value"] for r in rows},
        "frames": frames,
        "top_genes": top_genes(adata, i, n_genes),
        "top_genes_unit": _x_unit(adata),
        "simulated": pm.simulated,
    }


def _x_unit(adata: ad.AnnData) -> str:
    """Unit of ``X`` as the model outputs it (``z-score of log10(1 + CP10k)``...)."""
    from histoviz.outputs import get_output
    from histoviz.viz.clinical import omics_block

    block, _ = omics_block(adata, "X", "")
    ts = (adata.uns.get("target_scale") or {}).get(block) if block else None
    if isinstance(ts, Mapping):
        return str(ts.get("model_unit", ts.get("unit", "")))
    return get_output("gene").unit


def _str_list(v: Any) -> list[str]:
    if v is None:
        return []
    if isinstance(v, str):
        return [v]
    return [str(x) for x in np.asarray(v).reshape(-1).tolist()]


def slide_prediction_sentence(block: str, sp: Mapping[str, Any]) -> str:
    """The one line that states a block's slide-level prediction (the CLI, napari's inspector
    and the dashboard's Slide page all print this): grade with its probability and conformal
    set; survival in the training data's time unit when the file records it (probability of
    being alive at the horizons, median, cohort percentile, the conformal interval as event
    times), else risk with its interval; or how many targets a regression block predicts.

    ``sp`` is one entry of ``uns["slide_prediction"]`` (:meth:`histoviz.tasks.Task.slide_summary`).
    """
    kind = str(sp.get("kind", TaskKind.REGRESSION))
    alpha = sp.get("alpha")
    cov = f" (alpha {float(alpha):g}: covers the truth {1 - float(alpha):.0%} of the time)" if alpha is not None else ""
    if kind == TaskKind.CLASSIFICATION:
        targets = _str_list(sp.get("targets"))
        values = np.asarray(sp.get("values", []), dtype=np.float64).reshape(-1)
        pred = str(sp.get("predicted"))
        p = float(values[targets.index(pred)]) if pred in targets and len(values) == len(targets) else math.nan
        line = f"{block}: {pred}" + (f" (p = {p:.2f})" if math.isfinite(p) else "")
        if "set" in sp:
            line += f"; conformal set {{{', '.join(_str_list(sp['set']))}}}{cov}"
        return line
    if kind == TaskKind.SURVIVAL:
        if "survival_at" in sp:
            return _survival_line(block, sp, cov)
        line = f"{block}: risk {float(sp['risk']):.3f} (-sum S over {len(_str_list(sp.get('targets')))} time bins)"
        if "lo" in sp and "hi" in sp and str(sp.get("interval", "")) == "time":
            unit = str(sp.get("time_unit", ""))
            line += (f"; survives at least {float(sp['lo']):.3g} {unit} (conformal lower bound, survival up to "
                     f"{float(sp['hi']):.3g} {unit}){cov}")
        elif "lo" in sp and "hi" in sp:
            line += f"; conformal interval [{float(sp['lo']):.3f}, {float(sp['hi']):.3f}]{cov}"
        return line
    n = len(_str_list(sp.get("targets")))
    return f"{block}: {n} targets predicted for the slide" + (" with conformal intervals" if "lo" in sp else "")


def _ordinal(p: float) -> str:
    n = int(round(p))
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _survival_line(block: str, sp: Mapping[str, Any], cov: str) -> str:
    """Survival in clinical units: P(alive) at the horizons, the median, the cohort percentile
    and the conformal interval as a range of event times."""
    unit = str(sp.get("time_unit", ""))
    labels = _str_list(sp.get("horizon_labels"))
    probs = np.asarray(sp.get("survival_at", []), np.float64).reshape(-1)
    parts = [f"{lab} {p:.0%}" for lab, p in zip(labels, probs) if math.isfinite(p)]
    line = f"{block}: predicted survival " + (", ".join(parts) if parts else "beyond the model's range")
    med = sp.get("median")
    ends = np.asarray(sp.get("edges", []), np.float64)
    last = ends[-2] if ends.size >= 2 else math.nan
    if med is not None and math.isfinite(float(med)):
        line += f"; median {float(med):.3g} {unit}"
    elif math.isfinite(last):
        line += f"; median beyond {last:.3g} {unit}"
    if "percentile" in sp and math.isfinite(float(sp["percentile"])):
        n = f", n = {int(sp['n_cohort'])}" if "n_cohort" in sp else ""
        line += (f"; risk at the {_ordinal(float(sp['percentile']))} percentile of the training cohort "
                 f"(held-out{n})")
    if "time_lo" in sp and "time_hi" in sp:
        lo, hi = float(sp["time_lo"]), float(sp["time_hi"])
        if lo <= 0 and not math.isfinite(hi):
            span = "at any time (the interval spans every time bin: not informative for this slide)"
        elif lo <= 0:
            span = f"before {hi:.3g} {unit}"
        elif not math.isfinite(hi):
            span = f"after {lo:.3g} {unit}"
        else:
            span = f"between {lo:.3g} and {hi:.3g} {unit}"
        line += f"; conformal: event {span}{cov}"
    return line


def describe_predictions(adata: ad.AnnData | PredictionMaps) -> str:
    """One line saying what a prediction file holds, from the tasks the model declared:
    ``"129 patches; survival (4 time bins, months), grade (4 classes), gene (200 targets,
    log10(1 + CP10k)), cell-type weights"``."""
    from histoviz.outputs import get_output
    from histoviz.viz.clinical import tasks_of

    pm = _as_maps(adata)
    a = pm.adata
    parts: list[str] = []
    sp = a.uns.get("slide_prediction", {}) or {}
    scales = a.uns.get("target_scale") or {}
    for block, kind in tasks_of(a).items():
        s = sp.get(block, {}) if isinstance(sp, Mapping) else {}
        n = len(_str_list(s.get("targets"))) if isinstance(s, Mapping) else 0
        if kind == TaskKind.SURVIVAL:
            unit = str(s.get("time_unit", "")) if isinstance(s, Mapping) else ""
            parts.append(f"{block} ({n} time bins" + (f", {unit})" if unit else ")"))
        elif kind == TaskKind.CLASSIFICATION:
            parts.append(f"{block} ({n} classes)")
        else:
            main = str(a.uns.get("histoviz", {}).get("modality", "") or "")
            fr = pm.frame(f"pred_{block}")
            n = a.n_vars if block == main else (fr.shape[1] if fr is not None else n)
            ts = scales.get(block) if isinstance(scales, Mapping) else None
            unit = f", {ts['unit']}" if isinstance(ts, Mapping) and ts.get("unit") else ""
            parts.append(f"{block} ({n} targets{unit})")
    if not parts:  # a file that declares no tasks: name what it has
        if a.n_vars:
            parts.append(f"{a.n_vars} genes")
        parts += [get_output(k).label.lower() for k in pm.available if k not in ("gene", "obs")]
    else:
        declared = {"cell_type": "cell-type weights", "attention": "attention", "coattention": "co-attention"}
        parts += [v for k, v in declared.items() if k in pm.available]
    what = "simulated values: " if pm.simulated else ""
    return f"{a.n_obs} patches; {what}" + ", ".join(parts)


def slide_predictions(adata: ad.AnnData | PredictionMaps) -> list[dict[str, Any]]:
    """The slide-level predictions of a prediction file (``uns["slide_prediction"]``).

    Returns
    -------
    One dict per block, in file order: ``block``, ``kind`` (regression / classification /
    survival), ``line`` (one line of text), and what the task wrote: ``predicted`` and ``set``
    (classification), ``risk``, ``lo``, ``hi`` (survival), ``targets``, ``values``, ``alpha``,
    ``uncertainty`` when present. Empty when the file has none (simulated maps, old files).
    """
    pm = _as_maps(adata)
    sp_all = pm.adata.uns.get("slide_prediction", {}) or {}
    out = []
    for block, sp in sp_all.items():
        if not isinstance(sp, Mapping):
            continue
        row: dict[str, Any] = {"block": str(block), "kind": str(sp.get("kind", TaskKind.REGRESSION)),
                               "line": slide_prediction_sentence(str(block), sp)}
        for k in ("predicted", "risk", "lo", "hi", "alpha", "uncertainty", "median", "percentile", "time_unit"):
            if k in sp:
                v = sp[k]
                row[k] = _scalar(v) if np.ndim(v) == 0 else np.asarray(v, dtype=np.float64).tolist()
        if "set" in sp:
            row["set"] = _str_list(sp["set"])
        row["targets"] = _str_list(sp.get("targets"))
        row["values"] = np.asarray(sp.get("values", []), dtype=np.float64).reshape(-1).tolist()
        out.append(row)
    return out
