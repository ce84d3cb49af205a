"""Shared pieces of the dashboard pages: cached loaders over histoviz, error display.

Every loader takes the file's modification time as an argument so a rewritten file is read
again; errors about the input are shown with ``st.error`` (the message only, no traceback).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import streamlit as st

from histoviz.errors import HistovizError

T = TypeVar("T")

DEFAULT_SLIDE = "sample_data/real/CMU-1-Small-Region.svs"
DEFAULT_OUT = "demo_out"
DEFAULT_SLIDE_ROOT = "demo_out/synth/slides"
DEFAULT_COHORT = "demo_out/synth/cohort.csv"
DEFAULT_RUNS = "demo_out/runs"

HOW_TO_MAKE_DATA = (
    "`make demo` (or `histoviz demo --out demo_out`) writes a synthetic cohort, trained runs and "
    "prediction maps under `demo_out/`; or run `histoviz synth --out data/synth --slides 48` and "
    "`histoviz train training/configs/multiomics.yaml --out runs/mtl`."
)


def mtime(path: str | os.PathLike) -> float:
    """Modification time (0.0 when the file does not exist): part of every cache key."""
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0


def message(e: BaseException) -> str:
    """The text shown for an error: histoviz errors say what to do; others get their type."""
    if isinstance(e, HistovizError):
        return str(e)
    return f"{type(e).__name__}: {e}"


def attempt(fn: Callable[..., T], *args: Any, where: Any = None, **kwargs: Any) -> T | None:
    """Call ``fn``; on an error show ``st.error`` with its message and return ``None``."""
    try:
        return fn(*args, **kwargs)
    except Exception as e:  # a dashboard shows the problem and keeps running
        (where or st).error(message(e))
        return None


def rel(path: str | os.PathLike) -> str:
    """``path`` relative to the working directory when it lies below it."""
    a, cwd = os.path.abspath(os.path.expanduser(path)), os.getcwd()
    return os.path.relpath(a, cwd) if a.startswith(cwd + os.sep) else a


def existing_or_empty(path: str) -> str:
    """``path`` when it exists (a default shown in a text box), else ``""``."""
    return path if Path(path).exists() else ""


# ------------------------------------------------------------------------------------------------
# cached loaders: each calls one histoviz function. The public wrappers resolve paths first, so
# cache keys are absolute paths plus modification times (a file rewritten or a different working
# directory never hits a stale entry); the path as typed is what error messages show.
# ------------------------------------------------------------------------------------------------
def _abs(path: str | os.PathLike) -> str:
    return os.path.abspath(os.path.expanduser(path)) if str(path).strip() else ""


def find_slides(root: str) -> list[str]:
    """Slides under ``root`` (re-listed every 30 s), as paths relative to the working directory."""
    return [rel(p) for p in _find_slides(_abs(root))]


@st.cache_data(ttl=30, show_spinner=False)
def _find_slides(root: str) -> list[str]:
    from histoviz.viz.dashboard import find_slides as _find

    return [str(p) for p in _find(root)]


def find_predictions(slide_id: str, roots: tuple[str, ...]) -> list[str]:
    """Prediction files that name ``slide_id`` under ``roots`` (re-listed every 30 s)."""
    return [rel(p) for p in _find_predictions(slide_id, tuple(_abs(r) for r in roots))]


@st.cache_data(ttl=30, show_spinner=False)
def _find_predictions(slide_id: str, roots: tuple[str, ...]) -> list[str]:
    from histoviz.viz.dashboard import find_predictions as _find

    return [str(p) for p in _find(slide_id, roots)]


def slide_overview(path: str, tile_size: int, mpp: float, min_tissue: float):
    """:func:`histoviz.viz.dashboard.slide_overview` of a slide file (cached)."""
    return _slide_overview(path, _abs(path), mtime(path), int(tile_size), float(mpp), float(min_tissue))


@st.cache_data(max_entries=16, show_spinner="Reading the slide and its tissue grid ...")
def _slide_overview(path: str, where: str, stamp: float, tile_size: int, mpp: float,
                    min_tissue: float):
    from histoviz.io import open_slide
    from histoviz.tiling import TilingConfig
    from histoviz.viz.dashboard import slide_overview as _overview

    cfg = TilingConfig(tile_size=tile_size, mpp=mpp, min_tissue_fraction=min_tissue)
    with open_slide(path) as reader:
        return _overview(reader, cfg)


def predictions(path: str):
    """:func:`histoviz.io.predictions.read_predictions` (one AnnData shared by sessions)."""
    return _predictions(path, _abs(path), mtime(path))


@st.cache_resource(max_entries=4, show_spinner="Reading predictions ...")
def _predictions(path: str, where: str, stamp: float):
    from histoviz.io.predictions import read_predictions

    return read_predictions(path)


def prediction_info(path: str) -> tuple[dict[str, list[str]], dict[str, Any], int]:
    """``(available_maps, uns["histoviz"], n_patches)`` of a prediction file (cached)."""
    return _prediction_info(path, _abs(path), mtime(path))


@st.cache_data(max_entries=16, show_spinner=False)
def _prediction_info(path: str, where: str, stamp: float) -> tuple[dict[str, list[str]], dict[str, Any], int]:
    from histoviz.viz.maps import available_maps

    adata = _predictions(path, where, stamp)
    info = {str(k): (v.tolist() if hasattr(v, "tolist") else v)
            for k, v in dict(adata.uns.get("histoviz", {})).items()}
    return available_maps(adata), info, int(adata.n_obs)


def check_match(pred: str, slide_id: str, dimensions: tuple[int, int]) -> None:
    """:func:`histoviz.viz.maps.check_predictions_match_slide` (raises ``DataError``)."""
    from histoviz.viz.maps import check_predictions_match_slide

    check_predictions_match_slide(predictions(pred), slide_id=slide_id, dimensions=dimensions)


def overlay(slide: str, pred: str, spec: str, opacity: float, colormap: str | None,
            max_size: int = 1024):
    """:func:`histoviz.viz.overlay.render_overlay` of one map over the slide thumbnail (cached)."""
    return _overlay(slide, _abs(slide), mtime(slide), pred, _abs(pred), mtime(pred), spec,
                    float(opacity), colormap, int(max_size))


@st.cache_data(max_entries=64, show_spinner="Drawing the map ...")
def _overlay(slide: str, slide_where: str, slide_stamp: float, pred: str, pred_where: str,
             pred_stamp: float, spec: str, opacity: float, colormap: str | None, max_size: int):
    from histoviz.io import open_slide
    from histoviz.viz.overlay import render_overlay

    adata = _predictions(pred, pred_where, pred_stamp)
    with open_slide(slide) as reader:
        return render_overlay(reader, adata, spec, max_size=max_size, opacity=opacity,
                              colormap=colormap)


def cohort(path: str):
    """:func:`histoviz.data.cohort.read_cohort` (cached)."""
    return _cohort(path, _abs(path), mtime(path))


@st.cache_data(max_entries=8, show_spinner=False)
def _cohort(path: str, where: str, stamp: float):
    from histoviz.data.cohort import read_cohort

    return read_cohort(path)


def _run_stamps(run_dirs: list[str]) -> tuple[float, ...]:
    return tuple(mtime(Path(d) / "metrics.parquet") for d in run_dirs)


def compare(run_dirs: list[str], topk: tuple[int, ...]):
    """:func:`histoviz.evaluation.compare.compare_runs` of the run directories (cached)."""
    return _compare(tuple(_abs(d) for d in run_dirs), _run_stamps(run_dirs), tuple(topk))


@st.cache_data(max_entries=8, show_spinner="Comparing runs ...")
def _compare(run_dirs: tuple[str, ...], stamps: tuple[float, ...], topk: tuple[int, ...]):
    from histoviz.evaluation.compare import compare_runs

    return compare_runs(list(run_dirs), topk=topk)


def run_metrics(run_dirs: list[str]):
    """:func:`histoviz.viz.dashboard.read_run_metrics` of the run directories (cached)."""
    return _run_metrics(tuple(_abs(d) for d in run_dirs), _run_stamps(run_dirs))


@st.cache_data(max_entries=8, show_spinner=False)
def _run_metrics(run_dirs: tuple[str, ...], stamps: tuple[float, ...]):
    from histoviz.viz.dashboard import read_run_metrics

    return read_run_metrics(list(run_dirs))
