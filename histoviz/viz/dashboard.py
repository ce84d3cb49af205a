"""Computations behind the Streamlit dashboard (:mod:`histoviz.dashboard`), as plain functions.

Everything here returns DataFrames, numpy arrays, dicts or plotly figures, so the dashboard only
parses input, calls one of these (or another histoviz function) and renders the result. No
Streamlit import here; plotly is imported only by the ``*_figure`` functions.

- one slide: :func:`slide_overview` (metadata + tissue grid preview), :func:`map_spec`,
  :func:`legend_html`, :func:`napari_command`;
- a cohort: :func:`embed_summary`, :func:`omics_presence`, :func:`tiles_per_slide`;
- runs: :func:`mark_optimistic`.

Figures live in :mod:`histoviz.viz.figures` (``km_figure`` and ``pearson_bar_figure`` are
re-exported here); the results root, finding runs, cohorts, slides and prediction files, run
loading and the pages' tables in :mod:`histoviz.viz.results`.

Examples
--------
>>> map_spec("gene", "MKI67")
'gene:MKI67'
"""
from __future__ import annotations

import html
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from histoviz.errors import DataError, HistovizError
from histoviz.viz.figures import km_figure, pearson_bar_figure

if TYPE_CHECKING:
    from histoviz.io.slide import SlideReader
    from histoviz.tiling.grid import TilingConfig

__all__ = [
    "SlideOverview",
    "embed_summary",
    "km_figure",
    "legend_html",
    "map_spec",
    "mark_optimistic",
    "meta_table",
    "napari_command",
    "omics_presence",
    "pearson_bar_figure",
    "slide_overview",
    "tiles_per_slide",
]



# ------------------------------------------------------------------------------------------------
# one slide
# ------------------------------------------------------------------------------------------------
@dataclass
class SlideOverview:
    """Metadata and a tissue-grid preview of one slide (:func:`slide_overview`).

    Attributes
    ----------
    slide_id
        The slide's id.
    meta
        :meth:`histoviz.io.SlideMeta.to_dict`.
    preview
        ``(H, W, 3)`` uint8 thumbnail with the kept tiles outlined (no outlines when tiling
        failed).
    n_tiles
        Tiles kept (0 when tiling failed).
    mean_tissue
        Mean tissue fraction of the kept tiles (NaN without tiles).
    tile_size, mpp
        Tile side in pixels and target microns per pixel.
    tile_size_level0
        Tile side in level-0 pixels (0 when tiling failed).
    grid_error
        Why there is no grid (missing mpp, no tissue), or ``None``.
    """

    slide_id: str
    meta: dict[str, Any]
    preview: np.ndarray
    n_tiles: int = 0
    mean_tissue: float = float("nan")
    tile_size: int = 224
    mpp: float | None = 0.5
    tile_size_level0: int = 0
    grid_error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def caption(self) -> str:
        """One line describing the grid (or why there is none)."""
        if self.grid_error:
            return f"no tile grid: {self.grid_error}"
        at = f" at {self.mpp:g} um/px" if self.mpp else ""
        return (f"{self.n_tiles} tiles of {self.tile_size} px{at} ({self.tile_size_level0} px at "
                f"level 0), mean tissue {self.mean_tissue:.0%}")


def slide_overview(reader: SlideReader, config: TilingConfig | None = None, *,
                   max_size: int = 1024) -> SlideOverview:
    """Metadata, tissue grid and a thumbnail with the kept tiles outlined.

    Tiling errors that are about the input (no mpp, no tissue) do not raise: they are returned
    in :attr:`SlideOverview.grid_error` with the plain thumbnail, so a front end can still show
    the slide.
    """
    from histoviz.tiling.grid import TilingConfig, make_tile_grid
    from histoviz.viz.thumbnails import draw_grid

    cfg = config or TilingConfig()
    thumb = reader.get_thumbnail(max_size)
    ov = SlideOverview(slide_id=reader.slide_id, meta=reader.meta.to_dict(), preview=thumb,
                       tile_size=cfg.tile_size, mpp=cfg.mpp)
    try:
        grid = make_tile_grid(reader, cfg)
    except HistovizError as e:
        ov.grid_error = str(e)
        return ov
    scale = thumb.shape[1] / reader.dimensions[0]
    ov.preview = draw_grid(thumb, grid, scale)
    ov.n_tiles = len(grid)
    ov.mean_tissue = float(np.mean(grid.tissue_fraction)) if len(grid) else float("nan")
    ov.tile_size_level0 = int(grid.tile_size_level0)
    return ov


def meta_table(meta: dict[str, Any]) -> pd.DataFrame:
    """``SlideMeta.to_dict()`` as a two-column table of strings (``field``, ``value``)."""
    def one(x: Any) -> str:
        return f"{x:g}" if isinstance(x, float) else str(x)

    def fmt(v: Any) -> str:
        if v is None:
            return "—"
        if isinstance(v, (list, tuple)):
            if v and all(isinstance(d, (list, tuple)) for d in v):
                return ", ".join(" x ".join(one(x) for x in d) for d in v)
            if len(v) == 2 and all(isinstance(x, (int, np.integer)) for x in v):
                return f"{v[0]} x {v[1]}"
            return ", ".join(one(x) for x in v)
        return one(v)

    return pd.DataFrame({"field": list(meta), "value": [fmt(v) for v in meta.values()]})


def map_spec(kind: str, key: str | None = None) -> str:
    """The string form of a map (``"gene:MKI67"``, ``"risk"``), validated.

    Raises
    ------
    DataError
        Unknown kind, or a keyed kind without a key.
    """
    from histoviz.viz.maps import MapSpec

    return str(MapSpec(kind, key or None))


def legend_html(categories: dict[str, Sequence[int]]) -> str:
    """Colour swatches and names (from :func:`histoviz.viz.overlay.render_overlay` info)."""
    items = []
    for name, rgb in categories.items():
        r, g, b = (int(v) for v in list(rgb)[:3])
        items.append(
            f'<span style="display:inline-block;margin-right:1.2em;white-space:nowrap">'
            f'<span style="display:inline-block;width:0.9em;height:0.9em;vertical-align:middle;'
            f'margin-right:0.35em;border:1px solid #555;background:rgb({r},{g},{b})"></span>'
            f"{html.escape(str(name))}</span>"
        )
    return "".join(items)


def napari_command(slide: str | os.PathLike, predictions: str | os.PathLike, spec: str) -> tuple[str, str]:
    """The commands that open the same view in napari: a shell line (slide and its maps; the
    widget shows the first map) and a Python line that also selects map ``spec``.

    Paths are made absolute and quoted for a POSIX shell.
    """
    import json
    import shlex

    s, p = os.path.abspath(slide), os.path.abspath(predictions)
    q = json.dumps  # double-quoted literals (valid Python), so the shell quoting stays plain
    shell = f"napari --plugin histoviz {shlex.quote(p)}"
    code = ("import napari; v = napari.Viewer(); "
            '_, w = v.window.add_plugin_dock_widget("histoviz", "Prediction maps"); '
            f'v.open({q(s)}, plugin="histoviz"); w.load_predictions({q(p)}); w.show_map({q(str(spec))}); napari.run()')
    return shell, f"python -c {shlex.quote(code)}"


def omics_presence(patients: Sequence[str], omics: dict[str, str | os.PathLike]) -> pd.DataFrame:
    """Which patients each omics file (AnnData, obs = patients) has.

    Returns
    -------
    DataFrame indexed by patient with one boolean column per modality (a file that cannot be
    read raises, naming it).

    Raises
    ------
    DataError
        An unreadable file.
    """
    import anndata as ad

    out = pd.DataFrame(index=pd.Index([str(p) for p in patients], name="patient_id"))
    for mod, path in omics.items():
        try:
            a = ad.read_h5ad(path, backed="r")
            names = set(map(str, a.obs_names))
            a.file.close()
        except Exception as e:
            raise DataError(f"{path}: cannot read the {mod} table ({type(e).__name__}: {e})") from e
        out[mod] = out.index.isin(names)
    return out


def tiles_per_slide(slide_ids: Sequence[str], feature_dir: str | os.PathLike) -> pd.DataFrame:
    """Tiles in each slide's feature bag ``<feature_dir>/<slide_id>.h5`` (``NaN`` when the bag
    is missing or unreadable). Columns ``slide_id, n_tiles``."""
    import h5py

    d = Path(feature_dir)
    n = []
    for s in slide_ids:
        try:
            with h5py.File(d / f"{s}.h5", "r") as f:
                n.append(float(f["coords"].shape[0]))
        except (OSError, KeyError):
            n.append(np.nan)
    return pd.DataFrame({"slide_id": [str(s) for s in slide_ids], "n_tiles": n})


def embed_summary(path: str | os.PathLike) -> tuple[pd.DataFrame, dict[str, Any]]:
    """An ``embed_summary.csv`` (written by cohort embedding) and its totals.

    Returns
    -------
    ``(table, totals)`` where totals has ``slides``, per-status counts (``done``, ``skipped``,
    ``failed``), ``tiles`` and ``seconds``; plus ``encoder`` / ``embed_dim`` when an
    ``embed_config.json`` lies next to the summary, and ``warning`` when rows were cut short
    (a truncated file: those rows are left out and the warning names the file).
    """
    import json

    from histoviz.viz.results import read_csv_checked

    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: embedding summary not found")
    df, warning = read_csv_checked(p)
    totals: dict[str, Any] = {"slides": len(df)}
    if warning:
        totals["warning"] = warning
    if "status" in df.columns:
        vc = df["status"].astype(str).value_counts()
        for s in ("done", "skipped", "failed"):
            totals[s] = int(vc.get(s, 0))
    if "n_tiles" in df.columns:
        totals["tiles"] = int(pd.to_numeric(df["n_tiles"], errors="coerce").fillna(0).sum())
    if "seconds" in df.columns:
        totals["seconds"] = float(pd.to_numeric(df["seconds"], errors="coerce").fillna(0).sum())
    cfg = p.parent / "embed_config.json"
    if cfg.is_file():
        try:
            c = json.loads(cfg.read_text())
        except (OSError, ValueError):
            c = {}
        if isinstance(c, dict):
            for k in ("encoder", "embed_dim"):
                if k in c:
                    totals[k] = c[k]
    return df, totals


# ------------------------------------------------------------------------------------------------
# runs
# ------------------------------------------------------------------------------------------------
def mark_optimistic(table: pd.DataFrame) -> pd.DataFrame:
    """Add ``optimistic`` (bool) and ``view`` (text) columns to a :func:`compare_runs` table.

    Rows whose ``selection`` is :data:`histoviz.evaluation.metrics.OPTIMISTIC_LABEL` (targets
    chosen on the test correlations: the papers' "best predicted" view) are optimistic; every
    other row is honest (``view`` = ``"held-out"``).
    """
    from histoviz.evaluation.metrics import OPTIMISTIC_LABEL

    t = table.copy()
    sel = t["selection"].astype(str) if "selection" in t.columns else pd.Series("", index=t.index)
    opt = (sel == OPTIMISTIC_LABEL) | sel.str.contains("optimistic", case=False, regex=False)
    if "subset" in t.columns:
        opt |= t["subset"].astype(str).str.match(r"best\d+_predicted$")
    t.insert(0, "optimistic", opt.to_numpy(dtype=bool))
    t.insert(0, "view", np.where(opt, "⚠ OPTIMISTIC (selected on test)", "held-out"))
    return t
