"""Spots on the slide: circles of the true spot diameter, measured beside predicted.

Used by the napari plugin (:mod:`napari_plugin._spots`) and the dashboard's spatial page; no Qt
or Streamlit here.

- :class:`SpotView`: the spots of one spot file or per-spot prediction file: centres and
  diameter in level-0 pixels, the slide, measured and (when present) predicted expression;
- :func:`spots_to_world`: centres and diameter in a viewer's world coordinates (the slide
  layer's scale and translate, :func:`histoviz.viz.maps.level0_to_world` convention);
- :func:`spot_raster`: a raster in which every pixel inside a spot's circle holds the spot's
  value (NaN elsewhere), for static figures and pixel checks;
- :class:`SpotRunView`: what the dashboard shows of a spot-level run directory (the model x
  gene-set table, paired differences, held-out measured and predicted values of one sample).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from histoviz.errors import DataError

__all__ = ["SpotRunView", "SpotView", "is_spot_file", "spot_figure", "spot_raster", "spots_to_world"]


def is_spot_file(path: str | os.PathLike) -> bool:
    """Whether an ``.h5ad`` holds spots: a per-spot prediction (``uns["histoviz"]`` with a spot
    diameter) or a HEST-style spot file (``obsm["spatial"]`` plus ``uns["spatial_meta"]`` or
    scanpy's ``uns["spatial"]``)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if "uns" not in f:
                return False
            u = f["uns"]
            if "histoviz" in u:
                return "spot_diameter_px" in u["histoviz"]
            return "obsm" in f and "spatial" in f["obsm"] and ("spatial_meta" in u or "spatial" in u)
    except (OSError, ValueError):
        return False


@dataclass
class SpotView:
    """Spots of one sample with measured and predicted expression.

    Attributes
    ----------
    sample_id
        Sample (or slide) id.
    centres
        ``(n, 2)`` spot centres ``(x, y)``, level-0 pixels.
    diameter
        Spot diameter in level-0 pixels.
    slide_path
        The slide (``None`` when unknown or missing).
    measured, predicted
        ``spots x genes`` frames (``predicted`` is ``None`` for a plain spot file).
    source
        Where the view was read from; ``model`` names the run for predictions.
    """

    sample_id: str
    centres: np.ndarray
    diameter: float
    slide_path: str | None
    measured: pd.DataFrame | None
    predicted: pd.DataFrame | None
    source: str = ""
    model: str = ""

    @property
    def genes(self) -> list[str]:
        """Genes with a value to show (predicted first, else measured)."""
        f = self.predicted if self.predicted is not None else self.measured
        return [] if f is None else [str(c) for c in f.columns]

    def default_gene(self) -> str:
        """The gene shown first: the most variable measured one (among the predicted genes when
        there are predictions); ``""`` when there is none."""
        f = self.measured if self.measured is not None else self.predicted
        if f is not None and self.measured is not None and self.predicted is not None:
            f = f[[c for c in f.columns if c in set(self.predicted.columns)]]
        return str(f.var(axis=0).idxmax()) if f is not None and f.shape[1] else ""

    def values(self, gene: str, which: str = "predicted") -> np.ndarray | None:
        """Per-spot values of ``gene`` (``which``: ``predicted`` or ``measured``); ``None`` when absent."""
        f = self.predicted if which == "predicted" else self.measured
        if f is None or gene not in f.columns:
            return None
        return f[gene].to_numpy(np.float64)

    def on_full_resolution(self, slide: str | os.PathLike) -> SpotView:
        """The same spots on the full-resolution image of the section.

        A Space Ranger folder imported without ``--slide`` places the spots on its small tissue
        image; given the full-resolution image of the same section, the spots scale up by the
        ratio of the image widths (the tissue image is the full one downscaled, so the heights
        must agree in ratio too).

        Raises
        ------
        DataError
            No current image to compare with, or images whose aspect ratios differ (not the
            same section).
        """
        from histoviz.io import open_slide

        if not self.slide_path:
            raise DataError(f"{self.source}: its own image is not here; re-import with --slide instead")
        with open_slide(self.slide_path) as small, open_slide(slide) as full:
            (w0, h0), (w1, h1) = small.dimensions, full.dimensions
        sx, sy = w1 / w0, h1 / h0
        if abs(sx - sy) / max(sx, sy) > 0.02:
            raise DataError(f"{slide}: {w1} x {h1} px does not have the aspect ratio of {self.slide_path} "
                            f"({w0} x {h0} px); is it the full-resolution image of the same section?")
        k = (sx + sy) / 2.0
        return SpotView(self.sample_id, self.centres * k, self.diameter * k, str(Path(slide).resolve()),
                        self.measured, self.predicted, self.source, self.model)

    def pearson(self, gene: str) -> float:
        """Pearson between measured and predicted ``gene`` across the spots (NaN when undefined)."""
        a, b = self.values(gene, "measured"), self.values(gene, "predicted")
        if a is None or b is None or a.std() < 1e-12 or b.std() < 1e-12:
            return float("nan")
        return float(np.corrcoef(a, b)[0, 1])

    @classmethod
    def read(cls, path: str | os.PathLike, *, target_sum: float = 1e4) -> SpotView:
        """Read a per-spot prediction file or a HEST-style spot file (measured ``log1p`` of counts
        normalised to ``target_sum`` per spot).

        Raises
        ------
        DataError
            Not a spot file (names the file).
        """
        import anndata as ad

        p = Path(path)
        if not is_spot_file(p):
            raise DataError(f"{p}: not a spot file (no spot positions with a spot diameter)")
        a = ad.read_h5ad(p)
        info = a.uns.get("histoviz")
        if isinstance(info, dict):
            pred = pd.DataFrame(np.asarray(a.X, np.float64), columns=[str(g) for g in a.var_names])
            meas = a.obsm.get("measured_expression")
            meas = None if meas is None else pd.DataFrame(np.asarray(meas, np.float64), columns=[str(c) for c in meas.columns])
            sp = str(info.get("slide_path") or "") or None
            return cls(str(info.get("slide_id", p.stem)), np.asarray(a.obsm["spatial"], np.float64),
                       float(info["spot_diameter_px"]), sp if sp and Path(sp).exists() else None, meas, pred,
                       str(p), str(info.get("model", "")))
        from histoviz.data.spatial import load_spot_sample, normalize_log1p

        s = load_spot_sample(p)
        meas = pd.DataFrame(normalize_log1p(s.counts, target_sum=target_sum), columns=s.genes)
        return cls(s.sample_id, s.centres, s.spot_diameter_px, s.slide_path, meas, None, str(p))


def spots_to_world(centres: np.ndarray, diameter: float, scale: Sequence[float] = (1.0, 1.0),
                   translate: Sequence[float] = (0.0, 0.0)) -> tuple[np.ndarray, float]:
    """World ``(y, x)`` of spot centres and the spot diameter in world units (isotropic scale)."""
    c = np.asarray(centres, np.float64)
    sy, sx = (float(v) for v in scale[-2:])
    ty, tx = (float(v) for v in translate[-2:])
    world = np.stack([ty + sy * (c[:, 1] - 0.5), tx + sx * (c[:, 0] - 0.5)], axis=1)
    return world, float(diameter) * (sy + sx) / 2.0


def spot_raster(centres: np.ndarray, diameter: float, values: np.ndarray, shape: tuple[int, int], *,
                downsample: float = 1.0) -> np.ndarray:
    """``(H, W)`` float32 raster (level-0 / ``downsample``): the value of a spot inside its circle,
    NaN outside every spot. Pixel ``(r, c)`` covers level-0 ``[c*ds, (c+1)*ds) x [r*ds, (r+1)*ds)``
    and belongs to a spot when its centre lies within the spot's radius."""
    h, w = int(shape[0]), int(shape[1])
    out = np.full((h, w), np.nan, np.float32)
    ds = float(downsample)
    r = float(diameter) / 2.0
    v = np.asarray(values, np.float64)
    for (cx, cy), val in zip(np.asarray(centres, np.float64), v):
        c0, c1 = max(int((cx - r) / ds) - 1, 0), min(int((cx + r) / ds) + 2, w)
        r0, r1 = max(int((cy - r) / ds) - 1, 0), min(int((cy + r) / ds) + 2, h)
        if c0 >= c1 or r0 >= r1:
            continue
        yy, xx = np.mgrid[r0:r1, c0:c1]
        inside = ((xx + 0.5) * ds - cx) ** 2 + ((yy + 0.5) * ds - cy) ** 2 <= r * r
        out[r0:r1, c0:c1][inside] = val
    return out


def spot_figure(view: SpotView | None, gene: str, *, centres: np.ndarray | None = None, diameter: float | None = None,
                measured: np.ndarray | None = None, predicted: np.ndarray | None = None,
                slide_path: str | None = None, max_size: int = 700, title: str = "") -> Any:
    """Plotly figure: the slide thumbnail with spot circles coloured by measured (left) and
    predicted (right) ``gene`` (each panel its own robust colour range; circles at the true
    diameter). Either a :class:`SpotView` or the arrays."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if view is not None:
        centres, diameter, slide_path = view.centres, view.diameter, view.slide_path
        measured, predicted = view.values(gene, "measured"), view.values(gene, "predicted")
    assert centres is not None and diameter is not None
    c = np.asarray(centres, np.float64)
    r = float(diameter) / 2.0
    x0, y0 = max(c[:, 0].min() - 3 * r, 0.0), max(c[:, 1].min() - 3 * r, 0.0)
    x1, y1 = c[:, 0].max() + 3 * r, c[:, 1].max() + 3 * r
    ds = max((x1 - x0) / max_size, (y1 - y0) / max_size, 1e-9)
    hw = (int(np.ceil((y1 - y0) / ds)), int(np.ceil((x1 - x0) / ds)))
    thumb = None
    if slide_path and Path(slide_path).exists():
        from histoviz.io import open_slide

        with open_slide(slide_path) as rd:
            thumb = rd.read_region_downsample((int(x0), int(y0)), (hw[1], hw[0]), ds)
    panels = [("measured", measured), ("predicted", predicted)]
    panels = [(n, v) for n, v in panels if v is not None]
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[f"{n} {gene}" for n, _ in panels],
                        horizontal_spacing=0.04)
    for k, (name, vals) in enumerate(panels, start=1):
        if thumb is not None:
            fig.add_trace(go.Image(z=thumb, x0=x0 + ds / 2, dx=ds, y0=y0 + ds / 2, dy=ds, hoverinfo="skip"), row=1, col=k)
        ras = spot_raster(c - [x0, y0], diameter, vals, hw, downsample=ds)
        f = vals[np.isfinite(vals)]
        lo, hi = (np.percentile(f, [1, 99]) if f.size else (0.0, 1.0))
        if not hi > lo:
            lo, hi = float(lo) - 0.5, float(lo) + 0.5
        fig.add_trace(go.Heatmap(z=ras, x0=x0 + ds / 2, dx=ds, y0=y0 + ds / 2, dy=ds, colorscale="Inferno",
                                 zmin=float(lo), zmax=float(hi), showscale=True, hoverongaps=False,
                                 colorbar={"x": k / len(panels) - 0.02, "len": 0.8, "thickness": 10},
                                 name=name), row=1, col=k)
        fig.update_yaxes(autorange="reversed", scaleanchor=f"x{'' if k == 1 else k}", row=1, col=k,
                         showticklabels=False)
        fig.update_xaxes(showticklabels=False, row=1, col=k)
    fig.update_layout(title=title, height=max_size // len(panels) + 120, margin={"l": 10, "r": 10, "t": 60, "b": 10})
    return fig


class SpotRunView:
    """A spot-level run directory as the dashboard reads it.

    Raises
    ------
    DataError
        Not a finished run, or not a spot-level one.
    """

    def __init__(self, run_dir: str | os.PathLike) -> None:
        from histoviz.io.rundir import RunDir

        self.run = RunDir(run_dir)
        if self.run.info.get("level") != "spot":
            raise DataError(f"{self.run.path}: not a spot-level run (train one with a data.spots config)")
        self._held: pd.DataFrame | None = None

    @property
    def labels(self) -> list[str]:
        """Row labels of the run's table (main model first)."""
        return [str(x) for x in self.run.info.get("labels") or pd.unique(self.run.metrics()["model"].astype(str))]

    @property
    def main_labels(self) -> list[str]:
        """Labels of the main model (the held-out table's models)."""
        return [str(x) for x in self.run.info.get("main_labels") or self.labels[:1]]

    def table(self, metric: str = "pearson") -> pd.DataFrame:
        """Model x gene set: ``mean ± std`` over held-out samples (strings) plus ``samples``."""
        from histoviz.evaluation.spots import spot_table

        m = self.run.metrics()
        src = m[m["axis"] == "gene-gene"] if metric == "gene_corr_preservation" else m
        t = spot_table(src, metric=metric, models=self.labels)
        t["value"] = [f"{a:.3f} ± {b:.3f}" if np.isfinite(b) else (f"{a:.3f}" if np.isfinite(a) else "n/a")
                      for a, b in zip(t["mean"], t["std"])]
        wide = t.pivot_table(index="model", columns="subset", values="value", aggfunc="first", sort=False)
        wide.insert(0, "samples", t.groupby("model", sort=False)["n_samples"].max().reindex(wide.index).to_numpy())
        return wide.reindex([m for m in self.labels if m in wide.index])

    def paired(self, reference: str | None = None, metric: str = "pearson") -> pd.DataFrame:
        """Paired differences against ``reference`` (default: the first main label)."""
        from histoviz.evaluation.spots import paired_differences

        return paired_differences(self.run.metrics(), reference=reference or self.main_labels[0], metric=metric)

    def samples(self) -> pd.DataFrame:
        """``samples.parquet`` (sample_id, patient_id, slide_path, spot_diameter_px, fold, ...)."""
        p = self.run.path / "samples.parquet"
        if not p.exists():
            raise DataError(f"{p}: missing; the run is incomplete (retrain it)")
        return pd.read_parquet(p)

    def heldout(self) -> pd.DataFrame:
        """The held-out per-spot table (model, sample_id, spot, x, y, target, y_true, y_pred)."""
        if self._held is None:
            h = self.run.heldout("gene")
            if h is None:
                raise DataError(f"{self.run.path}: no held-out spot table (heldout/gene.parquet)")
            for c in ("model", "sample_id", "target", "spot"):
                h[c] = h[c].astype(str)
            self._held = h
        return self._held

    def genes(self) -> list[str]:
        """Genes in the held-out table."""
        return sorted(self.heldout()["target"].unique())

    def view(self, sample_id: str, gene: str, model: str | None = None) -> SpotView:
        """Held-out measured and predicted ``gene`` at the spots of ``sample_id``."""
        h = self.heldout()
        model = model or self.main_labels[0]
        d = h[(h["sample_id"] == str(sample_id)) & (h["target"] == gene) & (h["model"] == model)]
        if d.empty:
            raise DataError(f"{self.run.path}: no held-out values of {gene!r} for sample {sample_id!r} ({model})")
        s = self.samples().set_index("sample_id").loc[str(sample_id)]
        sp = str(s["slide_path"])
        return SpotView(str(sample_id), d[["x", "y"]].to_numpy(np.float64), float(s["spot_diameter_px"]),
                        sp if Path(sp).exists() else None, pd.DataFrame({gene: d["y_true"].to_numpy()}),
                        pd.DataFrame({gene: d["y_pred"].to_numpy()}), str(self.run.path), model)
