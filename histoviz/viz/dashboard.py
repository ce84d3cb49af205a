"""Computations behind the Streamlit dashboard (``app.py``), as plain functions.

Everything here returns DataFrames, numpy arrays, dicts or plotly figures, so the dashboard only
parses input, calls one of these (or another histoviz function) and renders the result. No
Streamlit import here; plotly is imported only by the ``*_figure`` functions.

- finding things on disk: :func:`find_slides`, :func:`find_predictions`, :func:`find_run_dirs`,
  :func:`find_embed_summaries`, :func:`parse_path_list`;
- one slide: :func:`slide_overview` (metadata + tissue grid preview), :func:`map_spec`,
  :func:`legend_html`;
  :func:`napari_command`;
- a cohort: :func:`embed_summary`, :func:`omics_presence`, :func:`tiles_per_slide`;
- runs: :func:`mark_optimistic`, :func:`read_run_metrics`, :func:`filter_targets`,
  :func:`per_target_summary`.

Figures live in :mod:`histoviz.viz.figures` (``km_figure`` and ``pearson_bar_figure`` are
re-exported here); the results root, run loading and the pages' tables in
:mod:`histoviz.viz.results`.

Examples
--------
>>> parse_path_list("runs/a\n\nruns/b")
[PosixPath('runs/a'), PosixPath('runs/b')]
"""

from __future__ import annotations

import html
import os
from collections.abc import Iterable, Sequence
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
    "PER_TARGET_COLUMNS",
    "SlideOverview",
    "embed_summary",
    "find_embed_summaries",
    "find_predictions",
    "find_run_dirs",
    "filter_targets",
    "find_slides",
    "km_figure",
    "legend_html",
    "map_spec",
    "mark_optimistic",
    "meta_table",
    "napari_command",
    "omics_presence",
    "parse_path_list",
    "pearson_bar_figure",
    "per_target_summary",
    "read_run_metrics",
    "slide_overview",
    "tiles_per_slide",
]

#: Columns of :func:`per_target_summary`.
PER_TARGET_COLUMNS = (
    "run", "model", "modality", "target", "pearson_mean", "pearson_std", "spearman_mean",
    "spearman_std", "n_folds", "n_patients",
)
#: Most files a folder search returns (a data root pointing at ``/`` must not hang the app).
MAX_FOUND = 2000


# ------------------------------------------------------------------------------------------------
# finding things on disk
# ------------------------------------------------------------------------------------------------
def _is_slide(p: Path) -> bool:
    from histoviz.io.open import SLIDE_SUFFIXES

    name = p.name.lower()
    if name.startswith("."):
        return False
    return any(name.endswith(s) for s in SLIDE_SUFFIXES)


def find_slides(root: str | os.PathLike, *, recursive: bool = True, limit: int = MAX_FOUND) -> list[Path]:
    """Slide files (any suffix :func:`histoviz.io.open_slide` reads) under ``root``, sorted.

    A missing or empty ``root`` gives an empty list; at most ``limit`` files are returned.
    """
    if not str(root).strip():
        return []
    r = Path(root)
    if not r.is_dir():
        return []
    it = r.rglob("*") if recursive else r.iterdir()
    out: list[Path] = []
    for p in it:
        if _is_slide(p) and p.is_file():
            out.append(p)
            if len(out) >= limit:
                break
    return sorted(out)


def find_predictions(slide_id: str, roots: Iterable[str | os.PathLike]) -> list[Path]:
    """Prediction ``.h5ad`` files that name ``slide_id``, under each of ``roots``.

    Looks at ``<root>/maps/<slide_id>*.h5ad`` (``histoviz predict`` outputs),
    ``<root>/*<slide_id>*.h5ad`` (e.g. the demo's ``pred_<model>_<slide_id>.h5ad``) and
    ``<root>/maps/*<slide_id>*.h5ad``. Whether a file really belongs to the slide is checked
    when it is loaded (:func:`histoviz.viz.maps.check_predictions_match_slide`).
    """
    found: dict[str, Path] = {}
    for root in roots:
        if not str(root).strip():
            continue
        r = Path(root)
        if not r.is_dir():
            continue
        for pattern in (f"maps/{slide_id}*.h5ad", f"*{slide_id}*.h5ad", f"maps/*{slide_id}*.h5ad"):
            for p in sorted(r.glob(pattern)):
                if p.is_file() and _names_slide(p.name, slide_id):
                    found.setdefault(str(p), p)
    return list(found.values())


def _names_slide(name: str, slide_id: str) -> bool:
    """``name`` contains ``slide_id`` not as part of a longer id (``S1`` is not in ``S10``)."""
    stem = name[: -len(".h5ad")] if name.endswith(".h5ad") else name
    start = 0
    while (i := stem.find(slide_id, start)) >= 0:
        before = stem[i - 1] if i > 0 else ""
        after = stem[i + len(slide_id)] if i + len(slide_id) < len(stem) else ""
        if not (before.isalnum() or after.isalnum()):
            return True
        start = i + 1
    return False


def find_run_dirs(root: str | os.PathLike) -> list[Path]:
    """Published run directories (:func:`~histoviz.io.rundir.is_run_dir`) directly under
    ``root``, sorted; ``root`` itself counts when it is one. Interrupted runs (``.partial``) are
    not listed."""
    from histoviz.io.rundir import is_run_dir

    if not str(root).strip():
        return []
    r = Path(root)
    if not r.is_dir():
        return []
    if is_run_dir(r):
        return [r]
    return sorted(p for p in r.iterdir() if p.is_dir() and is_run_dir(p))


def find_embed_summaries(cohort_table: str | os.PathLike) -> list[Path]:
    """``embed_summary.csv`` files of feature folders next to a cohort table.

    Looks at ``<table dir>/features/*/embed_summary.csv`` and ``<table dir>/features/embed_summary.csv``.
    """
    base = Path(cohort_table).parent / "features"
    if not base.is_dir():
        return []
    out = sorted(base.glob("*/embed_summary.csv"))
    if (base / "embed_summary.csv").is_file():
        out.insert(0, base / "embed_summary.csv")
    return out


def parse_path_list(text: str) -> list[Path]:
    """One path per line (or separated by commas); blank lines and ``#`` comments skipped."""
    out: list[Path] = []
    for line in str(text).splitlines():
        line = line.split("#", 1)[0]
        for part in line.split(","):
            part = part.strip()
            if part:
                out.append(Path(part))
    return out


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


def read_run_metrics(run_dirs: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """Every run's long metric table (:class:`~histoviz.io.rundir.RunDir`) stacked, with a
    ``run`` column (the folder name).

    Raises
    ------
    DataError
        A folder that is not a finished run (names it), or no folder.
    """
    from histoviz.io.rundir import RunDir

    frames = [RunDir(d).metrics().assign(run=Path(d).name) for d in run_dirs]
    if not frames:
        raise DataError("no run directories given")
    out = pd.concat(frames, ignore_index=True)
    for c in ("model", "task", "kind", "metric", "axis", "subset", "target", "run"):
        out[c] = out[c].astype(str)
    return out


def filter_targets(metrics: pd.DataFrame, query: str = "") -> pd.DataFrame:
    """Rows whose ``target`` contains any comma-separated term of ``query`` (case-insensitive).

    An empty query keeps every row.
    """
    terms = [t.strip().lower() for t in str(query).split(",") if t.strip()]
    if not terms:
        return metrics
    low = metrics["target"].astype(str).str.lower()
    keep = np.zeros(len(metrics), bool)
    for t in terms:
        keep |= low.str.contains(t, regex=False).to_numpy()
    return metrics[keep]


def per_target_summary(metrics: pd.DataFrame, query: str = "", *, limit: int | None = None) -> pd.DataFrame:
    """Per-target Pearson / Spearman over folds, optionally filtered by a target search.

    Parameters
    ----------
    metrics
        :func:`read_run_metrics` output (or one ``metrics.parquet``; ``run`` defaults to the model).
    query
        Case-insensitive substring of the target name; ``"a, b"`` matches either; empty: all.
    limit
        Keep at most this many rows (after sorting by ``pearson_mean`` descending).

    Returns
    -------
    DataFrame with :data:`PER_TARGET_COLUMNS`; means and standard deviations are over folds
    (the std is NaN with one fold), ``n_patients`` is the mean held-out ``n`` per fold.
    """
    m = metrics if "run" in metrics.columns else metrics.assign(run=metrics["model"].astype(str))
    m = m[(m["axis"].astype(str) == "per-target") & (m["subset"].astype(str) == "all")
          & m["metric"].astype(str).isin(["pearson", "spearman"])]
    m = filter_targets(m, query)
    if m.empty:
        return pd.DataFrame(columns=list(PER_TARGET_COLUMNS))
    w = m.pivot_table(index=["run", "model", "task", "target", "fold"], columns="metric", values="value",
                      observed=True, sort=False).reset_index()
    n = m[m["metric"].astype(str) == "pearson"].set_index(["run", "model", "task", "target", "fold"])["n"]
    w["_n"] = n.reindex(pd.MultiIndex.from_frame(w[["run", "model", "task", "target", "fold"]])).to_numpy()
    if "spearman" not in w.columns:
        w["spearman"] = np.nan
    g = w.rename(columns={"task": "modality"}).groupby(["run", "model", "modality", "target"], observed=True,
                                                        sort=False)
    out = g.agg(
        pearson_mean=("pearson", "mean"), pearson_std=("pearson", "std"),
        spearman_mean=("spearman", "mean"), spearman_std=("spearman", "std"),
        n_folds=("fold", "nunique"), n_patients=("_n", "mean"),
    ).reset_index()
    out = out.sort_values(["pearson_mean", "target"], ascending=[False, True], kind="mergesort",
                          na_position="last").reset_index(drop=True)
    if limit is not None:
        out = out.head(int(limit))
    return out[list(PER_TARGET_COLUMNS)]
