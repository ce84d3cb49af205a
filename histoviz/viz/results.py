"""The dashboard's view of a results folder: one root, runs read once, tables for the pages.

No Streamlit here (the app caches these with ``st.cache_data`` / ``st.cache_resource``).

- **The results root.** Every path a page reads (typed, from a URL parameter, found by a
  search) is resolved under one folder: ``histoviz dashboard ROOT`` sets it
  (``$HISTOVIZ_RESULTS_ROOT``), else the working directory. :func:`resolve_under` refuses
  anything else with one message that does not say whether the file exists. Relative paths
  are relative to the root; ``..`` cannot leave it. Links placed *inside* the root are
  followed (the root's owner put them there).
- **Runs** (:class:`RunData`): a run directory read through :class:`~histoviz.io.rundir.RunDir`
  once (metrics, config, conformal thresholds), held-out tables on demand.
  :func:`load_runs` keeps going when one run is unreadable and returns its error naming the
  file, so one corrupt ``metrics.parquet`` hides nothing else.
- **Tables**: :func:`per_target_scores` (per-target metric averaged over folds, per run),
  :func:`targets_table` (one row per target, one column per run), :func:`fold_table` (fold
  sizes), outcome tables (:func:`fold_values`, :func:`auc_per_class`, :func:`coverage_table`).
- **Gene panels**: :func:`gene_panel` (PAM50 ships in ``sample_data/gene_panels``),
  :func:`parse_gene_list`, :func:`match_panel` (which genes a run has, which are unknown).
- **Checked CSV reading**: :func:`check_csv` finds a truncated or short last row, which
  pandas would fill with NaN silently.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from histoviz.errors import DataError
from histoviz.task_kinds import TaskKind

__all__ = [
    "RESULTS_ROOT_ENV",
    "OutsideRootError",
    "RunData",
    "auc_per_class",
    "check_csv",
    "coverage_table",
    "find_files",
    "find_runs",
    "fold_summary",
    "fold_table",
    "fold_values",
    "gene_panel",
    "list_panels",
    "load_run",
    "load_runs",
    "match_panel",
    "parse_gene_list",
    "per_target_scores",
    "pooled_by_run",
    "read_csv_checked",
    "resolve_under",
    "results_root",
    "risk_group_sizes",
    "root_relative",
    "targets_table",
    "trained_on_synthetic",
    "is_synthetic_slide",
]

#: Environment variable naming the results root (set by ``histoviz dashboard ROOT``).
RESULTS_ROOT_ENV = "HISTOVIZ_RESULTS_ROOT"
#: Folders never searched (inside runs, or never holding what the pages list).
_SKIP_DIRS = {"checkpoints", "heldout", "__pycache__", "node_modules"}
#: Folders of a cohort that hold no runs (skipped when looking for runs).
_NO_RUNS = {"slides", "truth", "spatial", "omics", "features", "maps"}


class OutsideRootError(DataError):
    """A path outside the results root (the message never says whether it exists)."""


# ------------------------------------------------------------------------------------------------
# the root
# ------------------------------------------------------------------------------------------------
def results_root(environ: Mapping[str, str] | None = None) -> Path:
    """``$HISTOVIZ_RESULTS_ROOT`` (made absolute) or the working directory.

    Raises
    ------
    DataError
        The variable names something that is not a folder.
    """
    env = (os.environ if environ is None else environ).get(RESULTS_ROOT_ENV, "").strip()
    root = Path(os.path.abspath(env or os.getcwd()))
    if not root.is_dir():
        raise DataError(f"{RESULTS_ROOT_ENV}={env}: not a folder; point it at the results folder "
                        "(histoviz dashboard ROOT)")
    return root


def resolve_under(root: str | os.PathLike, path: str | os.PathLike) -> Path:
    """``path`` (relative to ``root``, or absolute) as an absolute path inside ``root``.

    Raises
    ------
    OutsideRootError
        ``path`` leaves ``root`` (absolute elsewhere, ``..``, ``~``, a NUL byte): one message
        for every such path, whether or not it exists.
    """
    r = os.path.normpath(os.path.abspath(root))
    text = str(path).strip()
    if "\x00" in text:
        raise OutsideRootError(_outside(text, r))
    p = text if os.path.isabs(text) else os.path.join(r, text)
    a = os.path.normpath(os.path.abspath(p))
    if a != r and not a.startswith(r.rstrip(os.sep) + os.sep):
        raise OutsideRootError(_outside(text, r))
    return Path(a)


def _outside(text: str, root: str) -> str:
    shown = text if len(text) <= 80 else text[:77] + "..."
    return (f"{shown}: outside the results root {root}; the dashboard reads only files under it "
            "(start it with `histoviz dashboard ROOT` to choose another root)")


def root_relative(root: str | os.PathLike, path: str | os.PathLike) -> str:
    """``path`` relative to ``root`` (``"."`` for the root itself), for display."""
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
    return "." if rel == "." else rel


def _walk(root: Path, max_depth: int, skip: frozenset[str] | set[str] = frozenset()
          ) -> Iterable[tuple[Path, list[str], list[str]]]:
    base = len(root.parts)
    for d, dirs, files in os.walk(root, followlinks=True):
        p = Path(d)
        depth = len(p.parts) - base
        dirs[:] = sorted(x for x in dirs if not x.startswith(".") and x not in _SKIP_DIRS and x not in skip
                         and not x.endswith(".partial"))
        if depth >= max_depth:
            dirs[:] = []
        yield p, dirs, files


def find_runs(root: str | os.PathLike, *, max_depth: int = 4, limit: int = 500) -> list[Path]:
    """Published run directories under ``root`` (``root`` included), sorted; interrupted runs
    (``.partial``) and anything inside a run are not listed."""
    from histoviz.io.rundir import is_run_dir

    r = Path(root)
    if not r.is_dir():
        return []
    out: list[Path] = []
    for d, dirs, _ in _walk(r, max_depth, _NO_RUNS):
        if is_run_dir(d):
            out.append(d)
            dirs[:] = []
            if len(out) >= limit:
                break
    return sorted(out)


def find_files(root: str | os.PathLike, suffixes: Sequence[str], *, names: Sequence[str] = (),
               max_depth: int = 4, limit: int = 2000) -> list[Path]:
    """Files under ``root`` whose name ends with one of ``suffixes`` (and, when ``names`` is
    given, whose stem starts with one of them), sorted; run folders are not entered."""
    from histoviz.io.rundir import is_run_dir

    r = Path(root)
    if not r.is_dir():
        return []
    out: list[Path] = []
    low = tuple(s.lower() for s in suffixes)
    for d, dirs, files in _walk(r, max_depth):
        if d != r and is_run_dir(d):
            dirs[:] = []
            continue
        for f in sorted(files):
            fl = f.lower()
            if fl.startswith(".") or not fl.endswith(low):
                continue
            if names and not any(fl.startswith(n.lower()) for n in names):
                continue
            out.append(d / f)
            if len(out) >= limit:
                return sorted(out)
    return sorted(out)


# ------------------------------------------------------------------------------------------------
# runs
# ------------------------------------------------------------------------------------------------
@dataclass
class RunData:
    """One run directory, read once (see the module docstring).

    Attributes
    ----------
    label
        How pages name the run: its path relative to the results root.
    path
        The run directory.
    name
        The run's own name (``model`` column of its tables).
    blocks
        ``block -> task kind``.
    metrics
        The long metric table, with a ``run`` column (= ``label``).
    config, conformal, info
        ``config.yaml``, ``conformal.json``, ``run.json``.
    """

    label: str
    path: Path
    name: str
    blocks: dict[str, str]
    metrics: pd.DataFrame
    config: dict[str, Any] = field(default_factory=dict)
    conformal: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    _heldout: dict[str, pd.DataFrame | None] = field(default_factory=dict, repr=False)

    @property
    def run_dir(self) -> Any:
        """The :class:`~histoviz.io.rundir.RunDir`."""
        from histoviz.io.rundir import RunDir

        return RunDir(self.path)

    def heldout(self, block: str) -> pd.DataFrame | None:
        """Held-out predictions of ``block`` (read on first use; ``None`` when the run has none).

        Raises
        ------
        DataError
            The file is unreadable (names it).
        """
        if block not in self._heldout:
            self._heldout[block] = self.run_dir.heldout(block)
        return self._heldout[block]

    def heldout_target(self, block: str, target: str) -> pd.DataFrame | None:
        """Held-out rows of one regression target (:meth:`RunDir.heldout_target`)."""
        if block in self._heldout and self._heldout[block] is not None:
            h = self._heldout[block]
            return h[h["target"].astype(str) == str(target)].reset_index(drop=True)
        return self.run_dir.heldout_target(block, target)

    @property
    def alpha(self) -> float:
        """The conformal miscoverage of the run (NaN when not calibrated)."""
        conf = ((self.config.get("evaluation") or {}).get("conformal") or {})
        if "alpha" in conf:
            return float(conf["alpha"])
        for fold in self.conformal.values():
            for entry in (fold or {}).values():
                if isinstance(entry, dict) and "alpha" in entry:
                    return float(entry["alpha"])
        return float("nan")

    @property
    def conformal_group(self) -> str | None:
        """The Mondrian subgroup column, if the run was calibrated per group."""
        g = ((self.config.get("evaluation") or {}).get("conformal") or {}).get("group")
        return str(g) if g else None


def load_run(path: str | os.PathLike, *, label: str | None = None) -> RunData:
    """Read a run directory's metrics, config and conformal thresholds.

    Raises
    ------
    DataError
        Not a finished run, or an unreadable file (the message names it).
    """
    from histoviz.io.rundir import RunDir

    r = RunDir(path)
    lab = label or r.path.name
    m = r.metrics().copy()
    for c in ("model", "task", "kind", "metric", "axis", "subset", "target"):
        if c in m.columns:
            m[c] = m[c].astype(str)
    m["run"] = lab
    blocks = r.blocks or dict(zip(m["task"], m.get("kind", pd.Series(TaskKind.REGRESSION.value, index=m.index))))
    return RunData(lab, r.path, r.name, {str(k): str(v) for k, v in blocks.items()}, m, r.config,
                   r.json("conformal.json"), dict(r.info))


def load_runs(paths: Sequence[str | os.PathLike], *, root: str | os.PathLike | None = None
              ) -> tuple[list[RunData], list[str]]:
    """:func:`load_run` of each path; a run that fails is reported, the others are returned.

    Returns
    -------
    ``(runs, errors)``: errors are one-line messages naming the file.
    """
    runs, errors = [], []
    for p in paths:
        label = root_relative(root, p) if root is not None else Path(p).name
        try:
            runs.append(load_run(p, label=label))
        except DataError as e:
            errors.append(str(e))
        except Exception as e:  # a reader bug must not hide the other runs either
            errors.append(f"{p}: unreadable ({type(e).__name__}: {e})")
    return runs, errors


def fold_table(runs: Sequence[RunData]) -> pd.DataFrame:
    """One row per run: model, blocks, folds and held-out patients per fold (``8, 8, 8``)."""
    rows = []
    for r in runs:
        m = r.metrics
        sizes = ""
        if "n" in m.columns and not m.empty:
            units = ["repeat", "fold"] if "repeat" in m.columns else ["fold"]
            n = m[m["axis"] == "per-target"].groupby(units, sort=True)["n"].max()
            sizes = ", ".join(str(int(v)) for v in n.to_numpy())
        rows.append({"run": r.label, "model": str(r.info.get("model") or r.config.get("model", {}).get("name", "")),
                     "blocks": ", ".join(f"{b} ({k})" for b, k in r.blocks.items()),
                     "folds": int(m["fold"].nunique()) if "fold" in m.columns else 0,
                     "held-out patients per fold": sizes,
                     "patients": r.info.get("n_patients")})
    return pd.DataFrame(rows, columns=["run", "model", "blocks", "folds", "held-out patients per fold", "patients"])


def per_target_scores(runs: Sequence[RunData], metric: str = "pearson") -> pd.DataFrame:
    """Per-target ``metric`` of every regression block of every run, averaged over folds.

    Returns
    -------
    DataFrame ``run, task, target, mean, std, n_folds, n`` (``std`` over folds, ``n`` = mean
    held-out patients per fold).
    """
    parts = []
    for r in runs:
        m = r.metrics
        sel = m[(m["metric"] == metric) & (m["axis"] == "per-target") & (m["subset"] == "all")]
        if "kind" in sel.columns:
            sel = sel[sel["kind"] == TaskKind.REGRESSION]
        if sel.empty:
            continue
        g = sel.groupby(["task", "target"], sort=False, observed=True)
        d = g["value"].agg(["mean", "std", "count"]).reset_index()
        d["n"] = g["n"].mean().to_numpy() if "n" in sel.columns else np.nan
        d.insert(0, "run", r.label)
        parts.append(d.rename(columns={"count": "n_folds"}))
    cols = ["run", "task", "target", "mean", "std", "n_folds", "n"]
    if not parts:
        return pd.DataFrame(columns=cols)
    return pd.concat(parts, ignore_index=True)[cols]


def targets_table(scores: pd.DataFrame, *, query: str = "", targets: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per ``(task, target)``, one column per run (its fold-averaged score).

    Parameters
    ----------
    scores
        :func:`per_target_scores`.
    query
        Case-insensitive substring(s) of the target name (commas for several).
    targets
        Keep only these targets (a gene panel), in any order.
    """
    s = scores
    if targets is not None:
        keep = {str(t).upper() for t in targets}
        s = s[s["target"].astype(str).str.upper().isin(keep)]
    terms = [t.strip().lower() for t in str(query).split(",") if t.strip()]
    if terms:
        low = s["target"].astype(str).str.lower()
        hit = np.zeros(len(s), bool)
        for t in terms:
            hit |= low.str.contains(t, regex=False).to_numpy()
        s = s[hit]
    if s.empty:
        return pd.DataFrame(columns=["task", "target"])
    runs = list(dict.fromkeys(s["run"]))
    w = s.set_index(["task", "target", "run"])["mean"].unstack("run")
    w = w.reindex(columns=runs).reset_index()
    w.columns.name = None
    vals = w[runs].to_numpy(np.float64)
    if len(runs) > 1:
        with np.errstate(invalid="ignore"):
            best = np.where(np.isfinite(vals).any(axis=1), np.nanargmax(np.where(np.isfinite(vals), vals, -np.inf),
                                                                        axis=1), -1)
        w["best"] = [runs[i] if i >= 0 else "" for i in best]
    order = np.argsort(-np.nan_to_num(np.nanmax(np.where(np.isfinite(vals), vals, -np.inf), axis=1), neginf=-9),
                       kind="stable")
    return w.iloc[order].reset_index(drop=True)


# ------------------------------------------------------------------------------------------------
# outcomes
# ------------------------------------------------------------------------------------------------
def fold_values(runs: Sequence[RunData], metric: str, *, kind: str | None = None) -> pd.DataFrame:
    """Per-fold value of a single-valued outcome metric (``c_index``, ``auc_macro``, ...).

    Returns
    -------
    DataFrame ``run, task, fold, value, n``.
    """
    parts = []
    for r in runs:
        m = r.metrics
        sel = m[(m["metric"] == metric) & (m["axis"] == "per-target") & (m["subset"] == "all")
                & m["target"].isin(["all", "risk"])]
        if kind is not None and "kind" in sel.columns:
            sel = sel[sel["kind"] == kind]
        if not sel.empty:
            parts.append(sel.assign(run=r.label)[["run", "task", "fold", "value", "n"]])
    if not parts:
        return pd.DataFrame(columns=["run", "task", "fold", "value", "n"])
    return pd.concat(parts, ignore_index=True)


def fold_summary(values: pd.DataFrame, name: str) -> pd.DataFrame:
    """Mean and std over folds of :func:`fold_values` per run and task.

    Returns
    -------
    DataFrame ``run, task, <name>_mean, <name>_std, folds`` (std ddof=1; NaN with one fold).
    """
    out = values.groupby(["run", "task"], sort=False)["value"].agg(["mean", "std", "count"]).reset_index()
    return out.rename(columns={"mean": f"{name}_mean", "std": f"{name}_std", "count": "folds"})


def pooled_by_run(points: pd.DataFrame) -> pd.DataFrame:
    """Pooled Pearson of held-out ``y_true`` vs ``y_pred`` per run (all folds together).

    Returns
    -------
    DataFrame ``run, pooled_pearson, n, folds, per_fold`` (``n`` finite pairs; ``per_fold``
    held-out patients per fold; ``pooled_pearson`` NaN below 3 pairs).
    """
    rows = []
    for run, g in points.groupby("run", sort=False):
        ok = np.isfinite(g["y_true"].to_numpy(float)) & np.isfinite(g["y_pred"].to_numpy(float))
        yt, yp = g["y_true"].to_numpy(float)[ok], g["y_pred"].to_numpy(float)[ok]
        r = float(np.corrcoef(yt, yp)[0, 1]) if ok.sum() > 2 and yt.std() > 0 and yp.std() > 0 else np.nan
        folds = int(g["fold"].nunique())
        rows.append({"run": run, "pooled_pearson": r, "n": int(ok.sum()), "folds": folds,
                     "per_fold": len(g) / max(folds, 1)})
    return pd.DataFrame(rows, columns=["run", "pooled_pearson", "n", "folds", "per_fold"])


def risk_group_sizes(curves: pd.DataFrame) -> pd.DataFrame:
    """Patients, censored and events per predicted-risk group of a Kaplan-Meier table
    (:func:`histoviz.evaluation.report.km_by_risk`)."""
    sizes = curves.groupby("group", sort=False).agg(patients=("n", "first"), censored=("censored", "sum")).reset_index()
    sizes["events"] = sizes["patients"] - sizes["censored"]
    return sizes.astype({"censored": int, "events": int})


def auc_per_class(run: RunData, block: str) -> pd.DataFrame:
    """One-vs-rest AUC per class of a classification block: mean and std over folds, held-out
    patients of the class per fold. Columns ``class, auc_mean, auc_std, n_folds, n_per_fold``."""
    m = run.metrics
    sel = m[(m["task"] == block) & (m["metric"] == "auc") & (m["axis"] == "per-target") & (m["subset"] == "all")]
    if sel.empty:
        return pd.DataFrame(columns=["class", "auc_mean", "auc_std", "n_folds", "n_per_fold"])
    g = sel.groupby("target", sort=False)
    out = pd.DataFrame({"class": list(g.groups), "auc_mean": g["value"].mean().to_numpy(),
                        "auc_std": g["value"].std().to_numpy(), "n_folds": g["value"].count().to_numpy(),
                        "n_per_fold": g["n"].mean().to_numpy()})
    return out


def coverage_table(run: RunData, block: str) -> pd.DataFrame:
    """Conformal coverage and set size / interval width, overall and per subgroup.

    Returns
    -------
    DataFrame ``subset, coverage, coverage_std, size, size_metric, target_coverage, n_folds,
    n_patients`` (``subset`` is ``all`` or ``<column>=<value>``; means and std over folds;
    ``n_patients`` summed over folds; ``target_coverage`` = 1 - alpha).
    """
    m = run.metrics
    sel = m[(m["task"] == block) & (m["axis"] == "per-target")
            & m["metric"].isin(["coverage", "set_size", "interval_width"])]
    cols = ["subset", "coverage", "coverage_std", "size", "size_metric", "target_coverage", "n_folds", "n_patients"]
    if sel.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for subset, g in sel.groupby("subset", sort=False):
        cov = g[g["metric"] == "coverage"].groupby("fold")
        size_metric = "set_size" if (g["metric"] == "set_size").any() else "interval_width"
        size = g[g["metric"] == size_metric].groupby("fold")["value"].mean()
        per_fold = cov["value"].mean()
        rows.append({"subset": str(subset), "coverage": float(per_fold.mean()) if len(per_fold) else np.nan,
                     "coverage_std": float(per_fold.std()) if len(per_fold) > 1 else np.nan,
                     "size": float(size.mean()) if len(size) else np.nan, "size_metric": size_metric,
                     "target_coverage": 1.0 - run.alpha, "n_folds": int(len(per_fold)),
                     "n_patients": int(cov["n"].max().sum()) if len(per_fold) else 0})
    out = pd.DataFrame(rows, columns=cols)
    out["_o"] = (out["subset"] != "all").astype(int)
    return out.sort_values(["_o", "subset"], kind="mergesort").drop(columns="_o").reset_index(drop=True)


# ------------------------------------------------------------------------------------------------
# gene panels
# ------------------------------------------------------------------------------------------------
def list_panels() -> list[str]:
    """Names of the gene panels shipped in ``sample_data/gene_panels`` (``pam50``)."""
    from histoviz.datasets import resource_dir

    d = resource_dir()
    if d is None or not (d / "gene_panels").is_dir():
        return []
    return sorted(p.stem for p in (d / "gene_panels").glob("*.csv"))


def gene_panel(name: str) -> pd.DataFrame:
    """A shipped gene panel: ``symbol, aliases`` (aliases: previous symbols, ``;``-separated).

    Raises
    ------
    DataError
        No such panel (lists those shipped).
    """
    from histoviz.datasets import resource_dir

    d = resource_dir()
    p = d / "gene_panels" / f"{name}.csv" if d is not None else None
    if p is None or not p.is_file():
        raise DataError(f"no gene panel {name!r}; shipped: {list_panels() or 'none (sample_data/ is not here)'}")
    df = pd.read_csv(p, comment="#", dtype=str, keep_default_na=False)
    return df[["symbol", "aliases"]]


def parse_gene_list(text: str) -> list[str]:
    """Gene symbols from pasted text (commas, semicolons, spaces or new lines), in order, once."""
    import re

    return list(dict.fromkeys(t for t in re.split(r"[\s,;]+", str(text)) if t))


def match_panel(panel: Sequence[str] | pd.DataFrame, targets: Iterable[str]) -> tuple[list[str], list[str]]:
    """Which panel genes the targets have (case-insensitive; a previous symbol counts).

    Returns
    -------
    ``(found, unknown)``: ``found`` are the targets' own names, ``unknown`` the panel symbols
    no target matches.
    """
    have = {str(t).upper(): str(t) for t in targets}
    if isinstance(panel, pd.DataFrame):
        items = [(str(s), [a for a in str(al).split(";") if a]) for s, al in zip(panel["symbol"], panel["aliases"])]
    else:
        items = [(str(s), []) for s in panel]
    found, unknown = [], []
    for sym, aliases in items:
        hit = next((have[n.upper()] for n in (sym, *aliases) if n.upper() in have), None)
        (found.append(hit) if hit is not None else unknown.append(sym))
    return list(dict.fromkeys(found)), unknown


# ------------------------------------------------------------------------------------------------
# files
# ------------------------------------------------------------------------------------------------
def _short_rows(path: Path, max_bytes: int) -> tuple[list[int], int, bool, int]:
    """Row indices (0-based, as pandas numbers data rows) with fewer fields than the header,
    the header's field count, whether the file ends without a newline, and the row count
    (-1 when only the last line was checked)."""
    sep = "\t" if path.suffix.lower() in (".tsv", ".txt") else ","
    size = path.stat().st_size
    with path.open("r", newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.reader(f, delimiter=sep)
        header = next(reader, [])
        n = len(header)
        if size > max_bytes:
            f.seek(max(0, size - 65536))
            tail = [r for r in csv.reader(f.read().splitlines()[-1:], delimiter=sep) if r]
            short = [-1] if tail and len(tail[-1]) < n else []
            count = -1
        else:
            rows = [r for r in reader if r]
            short = [i for i, r in enumerate(rows) if len(r) < n]
            count = len(rows)
    no_newline = False
    if size:
        with path.open("rb") as fb:
            fb.seek(size - 1)
            no_newline = fb.read(1) not in (b"\n", b"\r")
    return short, n, no_newline, count


def check_csv(path: str | os.PathLike, *, max_bytes: int = 64 << 20) -> str | None:
    """A warning when a CSV / TSV has rows with fewer fields than its header (a truncated
    file's half row, which pandas fills with NaN silently), else ``None``.

    Files larger than ``max_bytes`` are checked only at their last line.
    """
    p = Path(path)
    try:
        short, n, no_newline, count = _short_rows(p, max_bytes)
    except OSError as e:
        return f"{p}: unreadable ({e})"
    if not short:
        return None
    where = ", ".join("the last row" if i < 0 or i == count - 1 else f"row {i + 1}" for i in short[:5])
    cut = " and the file ends without a newline: it looks truncated" if no_newline else ""
    return (f"{p}: {len(short)} row(s) have fewer fields than the header's {n} ({where}){cut}; "
            "they are left out (rewrite the file to show them)")


def read_csv_checked(path: str | os.PathLike, **kwargs: Any) -> tuple[pd.DataFrame, str | None]:
    """``pd.read_csv`` without the rows :func:`check_csv` finds short, and its warning.

    Raises
    ------
    DataError
        The file cannot be read at all (names it).
    """
    p = Path(path)
    sep = "\t" if p.suffix.lower() in (".tsv", ".txt") else ","
    try:
        df = pd.read_csv(p, sep=sep, **kwargs)
        short = _short_rows(p, 64 << 20)[0]
    except Exception as e:
        raise DataError(f"{p}: cannot read the table ({type(e).__name__}: {e})") from e
    if not short:
        return df, None
    drop = [len(df) - 1 if i < 0 else i for i in short]
    return df.drop(index=df.index[[i for i in drop if 0 <= i < len(df)]]).reset_index(drop=True), check_csv(p)


def trained_on_synthetic(info: Mapping[str, Any]) -> bool | None:
    """Whether a prediction's model was trained on a histoviz synthetic cohort.

    Reads ``uns["histoviz"]``: a ``provenance`` / ``trained_on`` entry when present, else the
    run config's ``data.cohort`` (a cohort folder with a synthetic ``manifest.json``).
    ``None`` when it cannot tell.
    """
    for key in ("provenance", "trained_on"):
        v = info.get(key)
        if isinstance(v, Mapping) and "synthetic" in v:
            return bool(v["synthetic"])
    cfg = info.get("config")
    if isinstance(cfg, str):
        import json

        try:
            cfg = json.loads(cfg)
        except ValueError:
            cfg = None
    cohort = ((cfg or {}).get("data") or {}).get("cohort") if isinstance(cfg, Mapping) else None
    if not cohort:
        return None
    return _synthetic_folder(Path(str(cohort)).parent)


def is_synthetic_slide(path: str | os.PathLike) -> bool | None:
    """Whether a slide file belongs to a histoviz synthetic cohort (``<cohort>/slides/x.tif``
    next to the cohort's ``manifest.json``); ``None`` when it cannot tell."""
    p = Path(path)
    return _synthetic_folder(p.parent.parent) if p.parent.name == "slides" else False


def _synthetic_folder(d: Path) -> bool | None:
    import json

    m = d / "manifest.json"
    if not m.is_file():
        return None if not d.is_dir() else False
    try:
        data = json.loads(m.read_text())
    except (OSError, ValueError):
        return None
    return isinstance(data, dict) and data.get("generator") == "histoviz.data.synthetic"
