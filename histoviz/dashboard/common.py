"""Shared pieces of the dashboard pages: the results root, cached loaders over histoviz, errors.

Every path a page reads is resolved under the results root (:func:`under`); anything else is
refused with one message. Loaders key their caches on absolute paths plus modification times,
so a rewritten file is read again; the big things (runs, prediction files) are
``st.cache_resource`` (one object shared by every session, never copied), derived tables are
``st.cache_data``. Errors about the input are shown with ``st.error`` (the message, no
traceback).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import streamlit as st

from histoviz.errors import HistovizError

T = TypeVar("T")

DEFAULT_SLIDE = "sample_data/real/CMU-1-Small-Region.svs"
NUMBER = st.column_config.NumberColumn(format="%.3f")
COUNT = st.column_config.NumberColumn(format="%d")

HOW_TO_MAKE_DATA = (
    "`make demo` (or `histoviz demo --out demo_out`) writes a synthetic cohort, trained runs and "
    "prediction maps under `demo_out/`; then `histoviz dashboard demo_out`. Or train one run: "
    "`histoviz synth --out data/synth --slides 48` and `histoviz train training/configs/multiomics.yaml "
    "--out runs/mtl`."
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


# ------------------------------------------------------------------------------------------------
# the results root
# ------------------------------------------------------------------------------------------------
def root() -> Path:
    """The results root (``$HISTOVIZ_RESULTS_ROOT`` or the working directory); stops the page
    with a message when the variable names no folder."""
    from histoviz.viz.results import results_root

    try:
        return results_root()
    except HistovizError as e:
        st.error(str(e))
        st.stop()
        raise


def under(typed: str | os.PathLike, *, where: Any = None) -> Path | None:
    """``typed`` resolved under the root, or ``None`` after showing why it is refused."""
    from histoviz.viz.results import resolve_under

    try:
        return resolve_under(root(), typed)
    except HistovizError as e:
        (where or st).error(str(e))
        return None


def inside(path: str | os.PathLike) -> Path | None:
    """``path`` resolved under the root, or ``None`` (quietly) when it lies elsewhere."""
    from histoviz.viz.results import resolve_under

    try:
        return resolve_under(root(), path)
    except HistovizError:
        return None


def locate(path: str | os.PathLike) -> Path | None:
    """A file named by a run or prediction file (``uns["histoviz"]["slide_path"]``): itself when
    it lies under the root, else the file under the root that is the same file (reached through
    a link placed in the root), else ``None``."""
    p = inside(path)
    if p is not None:
        return p if p.is_file() else None
    name = Path(str(path)).name
    for q in find_files((name,)):
        try:
            if Path(q).name == name and os.path.samefile(q, path):
                return Path(q)
        except OSError:
            continue
    return None


def rel(path: str | os.PathLike) -> str:
    """``path`` as shown: relative to the root."""
    from histoviz.viz.results import root_relative

    return root_relative(root(), path)


# ------------------------------------------------------------------------------------------------
# finding things under the root (re-listed every 30 s)
# ------------------------------------------------------------------------------------------------
@st.cache_data(ttl=30, show_spinner=False)
def _find_runs(where: str) -> list[str]:
    from histoviz.viz.results import find_runs

    return [str(p) for p in find_runs(where)]


def run_dirs() -> list[str]:
    """Run directories under the root (absolute)."""
    return _find_runs(str(root()))


@st.cache_data(ttl=30, show_spinner=False)
def _find_files(where: str, suffixes: tuple[str, ...], names: tuple[str, ...]) -> list[str]:
    from histoviz.viz.results import find_files

    return [str(p) for p in find_files(where, suffixes, names=names)]


def find_files(suffixes: Sequence[str], names: Sequence[str] = ()) -> list[str]:
    """Files under the root with one of ``suffixes`` (absolute)."""
    return _find_files(str(root()), tuple(suffixes), tuple(names))


def find_slides() -> list[str]:
    """Slide files under the root (absolute)."""
    from histoviz.io.open import SLIDE_SUFFIXES

    return [p for p in find_files(tuple(SLIDE_SUFFIXES)) if not Path(p).name.startswith(".")]


@st.cache_data(max_entries=512, show_spinner=False)
def _header(path: str, stamp: float) -> dict[str, Any]:
    from histoviz.viz.results import prediction_header

    return prediction_header(path)


def prediction_headers() -> list[tuple[str, dict[str, Any]]]:
    """``(path, uns["histoviz"] scalars)`` of every histoviz prediction file under the root."""
    out = []
    for p in find_files((".h5ad",)):
        h = _header(p, mtime(p))
        if h:
            out.append((p, h))
    return out


def predictions_for(slide: str | os.PathLike) -> list[tuple[Path, bool]]:
    """Prediction files of a slide file (:func:`histoviz.viz.results.predictions_for_slide`)."""
    from histoviz.viz.results import predictions_for_slide

    return predictions_for_slide(slide, prediction_headers(), root())


@st.cache_data(ttl=30, show_spinner="Reading cohort tables ...")
def _cohorts(where: str, stamps: tuple[tuple[str, float], ...]):
    from histoviz.viz.results import find_cohorts

    return find_cohorts(where, paths=[p for p, _ in stamps])


def cohorts() -> tuple[list[Any], list[str]]:
    """Cohort tables under the root (:func:`histoviz.viz.results.find_cohorts`, cached) and
    the errors of those that could not be read."""
    paths = find_files((".csv", ".tsv", ".parquet"), names=("cohort",))
    return _cohorts(str(root()), tuple((p, mtime(p)) for p in paths))


# ------------------------------------------------------------------------------------------------
# runs
# ------------------------------------------------------------------------------------------------
def _stamp(run_dir: str) -> tuple[float, float]:
    return mtime(Path(run_dir) / "run.json"), mtime(Path(run_dir) / "metrics.parquet")


@st.cache_resource(max_entries=256, show_spinner="Reading runs ...")
def _run(path: str, label: str, stamp: tuple[float, float]):
    from histoviz.viz.results import load_run

    return load_run(path, label=label, root=root())


def load_runs(paths: Sequence[str]) -> tuple[list[Any], list[str]]:
    """:class:`~histoviz.viz.results.RunData` of each run (cached); errors name the file."""
    runs, errors = [], []
    for p in paths:
        try:
            runs.append(_run(p, rel(p), _stamp(p)))
        except Exception as e:  # one unreadable run does not hide the others
            errors.append(message(e))
    return runs, errors


def _keys(runs: Sequence[Any]) -> tuple[tuple[str, str, tuple[float, float]], ...]:
    return tuple((str(r.path), r.label, _stamp(str(r.path))) for r in runs)


def all_runs() -> tuple[list[Any], list[str]]:
    """Every run under the root and the read errors."""
    return load_runs(run_dirs())


def groups() -> list[Any]:
    """Runs grouped by cohort and split (:func:`histoviz.viz.results.cohort_groups`)."""
    from histoviz.viz.results import cohort_groups

    return cohort_groups(all_runs()[0])


def current_group() -> Any | None:
    """The cohort and split picked in the sidebar (``None`` when there are no runs)."""
    gs = groups()
    if not gs:
        return None
    want = st.session_state.get("cohort_group")
    return next((g for g in gs if g.id == want), gs[0])


def selected_runs(*, kinds: Sequence[str] = ()) -> list[Any]:
    """The runs picked in the sidebar (all of one cohort and split; those with a block of one of
    ``kinds`` when given); read errors are shown, the readable runs returned."""
    _, errors = all_runs()
    for e in errors:
        st.error(e)
    g = current_group()
    if g is None:
        return []
    chosen = set(st.session_state.get("runs_selected") or [])
    runs = [r for r in g.runs if r.label in chosen]
    if kinds:
        runs = [r for r in runs if any(k in kinds for k in r.blocks.values())]
    return runs


def other_runs() -> list[Any]:
    """Runs of other cohorts or splits than the picked one (listed apart, never compared)."""
    g = current_group()
    mine = {str(r.path) for r in g.runs} if g is not None else set()
    return [r for r in all_runs()[0] if str(r.path) not in mine]


def sidebar() -> None:
    """Results root, the cohort-and-split picker and the run picker (rendered by the app on
    every page)."""
    r = root()
    st.caption(f"Results root: `{r}`")
    gs = groups()
    if not gs:
        st.caption("No run directories under the root yet.")
        st.session_state["runs_selected"] = []
        return
    ids = [g.id for g in gs]
    labels = {g.id: g.label for g in gs}
    if st.session_state.get("cohort_group") not in ids:
        linked = st.query_params.get("cohort_group")
        st.session_state["cohort_group"] = linked if linked in ids else ids[0]
    st.selectbox("Cohort and split", ids, key="cohort_group", format_func=lambda i: labels[i], bind="query-params",
                 help="Pages compare runs trained and evaluated on one cohort with one patient split; runs of "
                      "other cohorts or splits are listed apart.")
    g = current_group()
    found = [x.label for x in g.runs]
    if "runs_selected" not in st.session_state or not set(st.session_state["runs_selected"]) <= set(found) \
            or st.session_state.get("_runs_group") != g.id:
        st.session_state["runs_selected"] = found[:12]
    st.session_state["_runs_group"] = g.id
    st.multiselect("Runs", found, key="runs_selected",
                   help=f"{len(found)} run(s) of this cohort and split; the pages compare the runs picked here.")
    n_other = sum(len(x.runs) for x in gs) - len(found)
    if n_other:
        st.caption(f"{n_other} run(s) of {len(gs) - 1} other cohort/split group(s): pick them above.")


@st.cache_data(max_entries=16, show_spinner="Scoring targets ...")
def _scores(keys: tuple, metric: str):
    from histoviz.viz.results import per_target_scores

    return per_target_scores([_run(*k) for k in keys], metric)


def scores(runs: Sequence[Any], metric: str = "pearson"):
    """:func:`histoviz.viz.results.per_target_scores` (cached)."""
    return _scores(_keys(runs), metric)


def has_summary(run: Any, topk: tuple[int, ...]) -> bool:
    """Whether the run wrote its comparison table (``summary.csv``) with these top-k sizes."""
    ev = run.config.get("evaluation") or {}
    return ((run.path / "summary.csv").is_file()
            and tuple(sorted(int(k) for k in (ev.get("topk") or ()))) == tuple(topk)
            and tuple(ev.get("topk_criteria") or ("variance", "mean")) == ("variance", "mean"))


@st.cache_data(max_entries=16, show_spinner="Comparing runs ...")
def _summary(key: tuple, topk: tuple[int, ...]):
    import pandas as pd

    from histoviz.evaluation.compare import SUMMARY_COLUMNS, summarise_run

    run = _run(*key)
    stored = run.path / "summary.csv"
    if has_summary(run, topk):  # the table the run wrote with these settings: no re-read of its metrics
        try:
            t = pd.read_csv(stored)
            if set(SUMMARY_COLUMNS) <= set(t.columns):
                return t[list(SUMMARY_COLUMNS)]
        except (OSError, ValueError, pd.errors.ParserError):
            pass
    return summarise_run(key[0], topk=topk)


def default_topk(runs: Sequence[Any]) -> tuple[int, ...]:
    """The top-k sizes the runs were configured with (``evaluation.topk``; else 50, 500)."""
    for r in runs:
        k = (r.config.get("evaluation") or {}).get("topk")
        if k:
            return tuple(sorted(int(v) for v in k))
    return (50, 500)


def summaries(runs: Sequence[Any], topk: tuple[int, ...]) -> tuple[Any, list[str]]:
    """:func:`histoviz.evaluation.compare.summarise_run` of each run stacked (a ``run`` column;
    the run's own ``summary.csv`` when it was written with these top-k sizes), and the errors of
    those that failed."""
    import pandas as pd

    parts, errors = [], []
    for k in _keys(runs):
        try:
            parts.append(_summary(k, tuple(topk)).assign(run=k[1]))
        except Exception as e:
            errors.append(message(e))
    return (pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()), errors


@st.cache_data(max_entries=32, show_spinner="Bootstrapping the paired difference ...")
def _paired(ka: tuple, kb: tuple, metric: str | None, task: str, n_boot: int, seed: int):
    from histoviz.evaluation.paired import compare_paired

    return compare_paired(_run(*ka).run_dir, _run(*kb).run_dir, metric=metric, task=task, n_boot=n_boot,
                          seed=seed, labels=(ka[1], kb[1]))[0]


def paired(a: Any, b: Any, *, metric: str | None, task: str, n_boot: int = 1000, seed: int = 0):
    """:func:`histoviz.evaluation.paired.compare_paired` of one task (cached)."""
    return _paired(_keys([a])[0], _keys([b])[0], metric, task, int(n_boot), int(seed))


@st.cache_data(max_entries=256, show_spinner=False)
def _heldout_target(key: tuple, block: str, target: str):
    return _run(*key).heldout_target(block, target)


def heldout_target(run: Any, block: str, target: str):
    """Held-out rows of one target of a run (cached; ``None`` when the run has none)."""
    return _heldout_target(_keys([run])[0], block, target)


@st.cache_data(max_entries=64, show_spinner="Reading held-out predictions ...")
def _heldout(key: tuple, block: str):
    return _run(*key).heldout(block)


def heldout(run: Any, block: str):
    """A block's held-out table (cached)."""
    return _heldout(_keys([run])[0], block)


@st.cache_data(max_entries=8, show_spinner="Reading held-out predictions ...")
def _explorer_matrix(key: tuple, block: str, n_folds: int | None, patients: tuple[str, ...]):
    from histoviz.viz.results.explorer import patient_matrix

    return patient_matrix(_run(*key).heldout(block), value="y_pred", n_folds=n_folds, patients=list(patients))


def explorer_matrix(run: Any, block: str, n_folds: int | None, patients: tuple[str, ...]):
    """Patients x every target of a block's held-out predictions (cached)."""
    return _explorer_matrix(_keys([run])[0], block, n_folds, tuple(patients))


# ------------------------------------------------------------------------------------------------
# slides, predictions, cohorts
# ------------------------------------------------------------------------------------------------
def slide_overview(path: Path, tile_size: int, mpp: float, min_tissue: float):
    """:func:`histoviz.viz.dashboard.slide_overview` of a slide file (cached)."""
    return _slide_overview(str(path), mtime(path), int(tile_size), float(mpp), float(min_tissue))


@st.cache_data(max_entries=16, show_spinner="Reading the slide and its tissue grid ...")
def _slide_overview(path: str, stamp: float, tile_size: int, mpp: float, min_tissue: float):
    from histoviz.io import open_slide
    from histoviz.tiling import TilingConfig
    from histoviz.viz.dashboard import slide_overview as _overview

    cfg = TilingConfig(tile_size=tile_size, mpp=mpp, min_tissue_fraction=min_tissue)
    with open_slide(path) as reader:
        return _overview(reader, cfg)


@st.cache_data(max_entries=256, show_spinner=False)
def thumbnail(path: str, stamp: float, size: int = 192):
    """A slide thumbnail (cached)."""
    from histoviz.io import open_slide

    with open_slide(path) as reader:
        return reader.get_thumbnail(size)


def predictions(path: Path):
    """:func:`histoviz.io.predictions.read_predictions` (one AnnData shared by sessions)."""
    return _predictions(str(path), mtime(path))


@st.cache_resource(max_entries=4, show_spinner="Reading predictions ...")
def _predictions(path: str, stamp: float):
    from histoviz.io.predictions import read_predictions

    return read_predictions(path)


def prediction_info(path: Path) -> tuple[dict[str, list[str]], dict[str, Any], int]:
    """``(available_maps, uns["histoviz"], n_patches)`` of a prediction file (cached)."""
    return _prediction_info(str(path), mtime(path))


@st.cache_data(max_entries=16, show_spinner=False)
def _prediction_info(path: str, stamp: float) -> tuple[dict[str, list[str]], dict[str, Any], int]:
    from histoviz.viz.maps import available_maps

    adata = _predictions(path, stamp)
    info = {str(k): (v.tolist() if hasattr(v, "tolist") else v)
            for k, v in dict(adata.uns.get("histoviz", {})).items()}
    return available_maps(adata), info, int(adata.n_obs)


def slide_level(pred: Path) -> list[dict[str, Any]]:
    """:func:`histoviz.viz.summary.slide_predictions` of a prediction file (cached)."""
    return _slide_level(str(pred), mtime(pred))


@st.cache_data(max_entries=32, show_spinner=False)
def _slide_level(path: str, stamp: float) -> list[dict[str, Any]]:
    from histoviz.viz.summary import slide_predictions

    return slide_predictions(_predictions(path, stamp))


def synthetic_warning(pred: Path, slide: Path) -> str | None:
    """:func:`histoviz.provenance.prediction_warning` of a prediction file on this slide."""
    from histoviz.provenance import prediction_warning

    return prediction_warning(predictions(pred), slide_path=str(slide))


def seen_by_run(info: dict[str, Any], slide: Path) -> str:
    """One sentence: whether the model that made a prediction file trained on this slide, from
    the run's cohort table (this file or a byte-identical copy of one of its slides) and split
    table; ``""`` when the run is not under the root."""
    from histoviz.viz.results import read_cohort_table, slide_row

    run_dir = inside(str(info.get("run_dir") or ""))
    if run_dir is None or not (run_dir / "run.json").is_file():
        return ""
    try:
        run = _run(str(run_dir), rel(run_dir), _stamp(str(run_dir)))
    except Exception:  # an unreadable run: say nothing rather than guess
        return ""
    ident = run.identity
    table_path = inside((ident.cohort_table if ident is not None and ident.cohort_table else "")
                        or str((run.config.get("data") or {}).get("cohort") or ""))
    who = f"Predicted by {run.label} (trained on the cohort {ident.cohort_name if ident else '?'}): "
    if table_path is None or not table_path.is_file():
        return who + "its cohort table is not under the results root, so whether it saw this slide is unknown."
    try:
        row = slide_row(read_cohort_table(table_path)[0], slide)
    except Exception:  # an unreadable table: unknown
        return who + "its cohort table cannot be read, so whether it saw this slide is unknown."
    if row is None:
        return who + "this slide file is not in that cohort (nor a copy of one of its slides): an unseen slide."
    return who + run.seen(str(row["patient_id"]), str(info.get("checkpoint") or "final"))[1] + "."


def check_match(pred: Path, slide_id: str, dimensions: tuple[int, int]) -> None:
    """:func:`histoviz.viz.maps.check_predictions_match_slide` (raises ``DataError``)."""
    from histoviz.viz.maps import check_predictions_match_slide

    check_predictions_match_slide(predictions(pred), slide_id=slide_id, dimensions=dimensions)


def hover_map(slide: Path | None, pred: Path, spec: str, opacity: float, colormap: str | None):
    """:func:`histoviz.viz.figures.hover_map_figure` of one map over the slide (``None``: no
    slide image under the map) (cached). Returns ``(figure, info)``."""
    return _hover_map(str(slide or ""), mtime(slide) if slide else 0.0, str(pred), mtime(pred), spec,
                      float(opacity), colormap)


@st.cache_data(max_entries=32, show_spinner="Drawing the map ...")
def _hover_map(slide: str, slide_stamp: float, pred: str, pred_stamp: float, spec: str, opacity: float,
               colormap: str | None):
    from histoviz.viz.figures import hover_map_figure
    from histoviz.viz.maps import PatchLayout, map_values

    adata = _predictions(pred, pred_stamp)
    mv = map_values(adata, spec)
    layout = PatchLayout.from_adata(adata)
    if slide:
        from histoviz.io import open_slide

        thumb = thumbnail(slide, slide_stamp, 1024)
        with open_slide(slide) as reader:
            dims = reader.dimensions
    else:
        thumb = None
        dims = tuple(adata.uns["histoviz"].get("slide_dimensions") or
                     (layout.extent_level0[2], layout.extent_level0[3]))
    info = {"label": mv.label, "unit": mv.unit, "categorical": mv.categorical,
            "contrast_limits": tuple(float(v) for v in mv.contrast_limits), "colormap": colormap or mv.colormap}
    return hover_map_figure(thumb, layout, mv, dims, opacity=opacity, colormap=colormap), info


def cohort(path: Path):
    """The cohort table (:func:`histoviz.viz.results.read_cohort_table`: rows a truncated CSV
    cut short left out) and the warning naming the file (cached)."""
    return _cohort(str(path), mtime(path))


@st.cache_data(max_entries=8, show_spinner=False)
def _cohort(path: str, stamp: float):
    from histoviz.viz.results import read_cohort_table

    return read_cohort_table(path)


@st.cache_data(max_entries=16, show_spinner="Reading omics tables ...")
def omics_presence(patients: tuple[str, ...], omics: tuple[tuple[str, str, float], ...]):
    """:func:`histoviz.viz.dashboard.omics_presence` (cached on the files' mtimes)."""
    from histoviz.viz.dashboard import omics_presence as _presence

    return _presence(list(patients), {m: p for m, p, _ in omics})


@st.cache_data(max_entries=16, show_spinner="Counting tiles ...")
def tiles_per_slide(slide_ids: tuple[str, ...], feature_dir: str, stamp: float):
    """:func:`histoviz.viz.dashboard.tiles_per_slide` (cached)."""
    from histoviz.viz.dashboard import tiles_per_slide as _tiles

    return _tiles(list(slide_ids), feature_dir)
