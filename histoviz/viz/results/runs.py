"""Runs as the dashboard sees them: read once, metrics scanned lazily, grouped by what they
were trained and evaluated on.

- :class:`MetricsTable`: a run's long ``metrics.parquet`` as a pyarrow dataset; pages ask for
  filtered, projected columns or group-by aggregates, so a 2-million-row table is never held
  as Python objects (a few tens of MB of Arrow buffers instead of gigabytes).
- :class:`RunData`: one run directory read through :class:`~histoviz.io.rundir.RunDir` once
  (config, conformal thresholds, ``run.json``, identity); held-out tables on demand.
  :func:`load_runs` keeps going when one run is unreadable and returns its error naming the
  file.
- :class:`RunIdentity`: the cohort, omics and split fingerprints a run recorded
  (:mod:`histoviz.data.identity`); for runs that recorded none they are derived from the
  config's cohort table (when it lies under the results root) and ``splits.parquet``, and say
  so. :func:`cohort_groups` groups runs by cohort and split; :func:`runs_table` is the table a
  scientist reads first (cohort, model, encoder, folds x repeats, date).
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from histoviz.errors import DataError
from histoviz.task_kinds import TaskKind
from histoviz.viz.results.root import is_inside, root_relative

__all__ = [
    "CohortGroup",
    "MetricsTable",
    "RunData",
    "RunIdentity",
    "cohort_groups",
    "load_run",
    "load_runs",
    "runs_table",
    "shared_omics",
]


# ------------------------------------------------------------------------------------------------
# the metric table, lazily
# ------------------------------------------------------------------------------------------------
def _filter(eq: Mapping[str, Any]) -> Any:
    import pyarrow.compute as pc

    expr = None
    for col, want in eq.items():
        if want is None:
            continue
        e = (pc.field(col).isin([str(v) for v in want]) if isinstance(want, (list, tuple, set, frozenset))
             else pc.field(col) == (str(want) if isinstance(want, str) else want))
        expr = e if expr is None else expr & e
    return expr


class MetricsTable:
    """A run's long metric table (``model, fold, task, kind, target, metric, value, n, axis,
    subset``), scanned with pushed-down filters and column projection.

    Parameters
    ----------
    source
        ``metrics.parquet`` (read lazily) or a DataFrame (legacy runs, tests).

    Raises
    ------
    DataError
        The file is not a readable parquet table (names it).
    """

    def __init__(self, source: str | os.PathLike | pd.DataFrame) -> None:
        import pyarrow as pa
        import pyarrow.dataset as ds

        if isinstance(source, pd.DataFrame):
            self.path = None
            self._ds = ds.dataset(pa.Table.from_pandas(source, preserve_index=False))
        else:
            self.path = Path(source)
            try:
                self._ds = ds.dataset(str(self.path), format="parquet")
                self.num_rows = int(self._ds.count_rows())
            except Exception as e:  # pyarrow raises several types on corrupt files
                raise DataError(f"{self.path}: unreadable ({type(e).__name__}: {e}); retrain this run") from e
        self.columns = list(self._ds.schema.names)
        if self.path is None:
            self.num_rows = int(self._ds.count_rows())

    def __len__(self) -> int:
        return self.num_rows

    def arrow(self, columns: Sequence[str] | None = None, **eq: Any) -> Any:
        """A ``pyarrow.Table`` of ``columns`` (those present) of the rows where each keyword
        column equals its value (or is in it, for a list); dictionary columns decoded to
        strings, NaN values as nulls."""

        cols = [c for c in (columns or self.columns) if c in self.columns]
        eq = {k: v for k, v in eq.items() if k in self.columns}
        try:  # one batch read ahead, no pre-buffered column chunks: the scan holds little beyond its result
            import pyarrow.dataset as ds

            t = self._ds.scanner(columns=cols, filter=_filter(eq), batch_size=1 << 16, batch_readahead=1,
                                 fragment_readahead=1, use_threads=False,
                                 fragment_scan_options=ds.ParquetFragmentScanOptions(pre_buffer=False)
                                 if self.path is not None else None).to_table()
        except Exception as e:
            raise DataError(f"{self.path or 'metrics'}: unreadable ({type(e).__name__}: {e}); retrain this run") from e
        t = self._clean(t)
        return t

    def frame(self, columns: Sequence[str] | None = None, **eq: Any) -> pd.DataFrame:
        """:meth:`arrow` as a DataFrame (strings as ``str``, null values as NaN)."""
        t = self.arrow(columns, **eq)
        df = t.to_pandas()
        for c in ("model", "task", "kind", "metric", "axis", "subset", "target"):
            if c in df.columns:
                df[c] = df[c].astype(str)
        return df

    def aggregate(self, keys: Sequence[str], aggs: Sequence[tuple[str, str]], **eq: Any) -> pd.DataFrame:
        """Group the filtered rows by ``keys`` (first-appearance order) and aggregate in Arrow:
        ``aggs`` are ``(column, function)`` with functions ``mean, std (ddof 1), count (non-null),
        size, max, min, sum``; result columns ``<column>_<function>``. Only the projected,
        filtered columns are read; only the groups become Python objects."""
        import pyarrow.compute as pc

        out_cols = [*keys, *[f"{c}_{f}" for c, f in aggs]]
        t = self.arrow(sorted({a[0] for a in aggs} | set(keys)), **eq)
        if t.num_rows == 0 or any(k not in t.column_names for k in keys):
            return pd.DataFrame(columns=out_cols)
        spec = []
        for col, fn in aggs:
            if fn == "std":
                spec.append((col, "stddev", pc.VarianceOptions(ddof=1)))
            elif fn == "size":
                spec.append((col, "count", pc.CountOptions(mode="all")))
            else:
                spec.append((col, fn))
        g = t.group_by(list(keys), use_threads=False).aggregate(spec)
        del t
        names = [f"{c}_{s[1]}" for (c, _), s in zip(aggs, spec)]
        return g.select([*keys, *names]).rename_columns(out_cols).to_pandas()

    def _clean(self, t: Any) -> Any:
        """Dictionary columns decoded to strings, NaN values as nulls."""
        import pyarrow as pa
        import pyarrow.compute as pc

        for i, f in enumerate(t.schema):
            if pa.types.is_dictionary(f.type):
                t = t.set_column(i, f.name, t.column(i).cast(f.type.value_type))
            elif f.name == "value" and pa.types.is_floating(f.type):
                v = t.column(i)
                t = t.set_column(i, f.name, pc.if_else(pc.is_nan(v), pa.scalar(None, f.type), v))
        return t



# ------------------------------------------------------------------------------------------------
# identity
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunIdentity:
    """What a run was trained and evaluated on (see :mod:`histoviz.data.identity`).

    Attributes
    ----------
    cohort_id, cohort_name, cohort_table
        The cohort's fingerprint, its name for people and the table it came from.
    split_id, n_folds, repeats
        The split's fingerprint, folds and repeats.
    omics
        ``modality -> fingerprint``.
    recorded
        ``False`` when the run recorded none and this one is derived (older runs).
    """

    cohort_id: str
    cohort_name: str
    cohort_table: str = ""
    split_id: str = ""
    n_folds: int = 0
    repeats: int = 1
    omics: dict[str, str] = field(default_factory=dict)
    recorded: bool = True

    @property
    def key(self) -> tuple[str, str]:
        """``(cohort_id, split_id)``: runs with the same key are compared with each other."""
        return self.cohort_id, self.split_id

    @property
    def split_label(self) -> str:
        """``5-fold`` or ``5-fold x 3 repeats``."""
        base = f"{self.n_folds}-fold" if self.n_folds else "folds not recorded"
        return base + (f" x {self.repeats} repeats" if self.repeats > 1 else "")


def _derived_identity(path: Path, cfg: Mapping[str, Any], info: Mapping[str, Any], root: Path | None) -> RunIdentity:
    from histoviz.data.identity import _digest, cohort_id, cohort_name, split_id

    data = cfg.get("data") or {}
    table = str(data.get("cohort") or "")
    where = table or str(data.get("spots") or "")
    name = cohort_name(table) if table else ("spot samples" if where else "cohort not recorded")
    cid = f"path:{_digest(where)}" if where else "unrecorded"
    if table and root is not None and is_inside(root, table) and Path(table).is_file():
        try:
            from histoviz.data.cohort import read_cohort

            cid = cohort_id(read_cohort(table))
        except Exception:  # an unreadable table: keep the path-based key
            pass
    sid, n_folds, repeats = "unrecorded", int(info.get("n_folds") or 0), int((cfg.get("_run") or {}).get("repeats") or 1)
    sp = path / "splits.parquet"
    if sp.is_file():
        try:
            s = pd.read_parquet(sp, columns=["fold", "patient_id", "split"])
            s = s[s["split"].astype(str) == "test"]
            k = max(n_folds, 1)
            wide = s.assign(rep=s["fold"] // k, f=s["fold"] % k).pivot_table(
                index="patient_id", columns="rep", values="f", aggfunc="first")
            sid = split_id(wide.index.astype(str).tolist(), [wide[c].fillna(-1).to_numpy() for c in wide.columns])
        except Exception:  # an old or odd table: no split key
            pass
    return RunIdentity(cid, name, table, sid, n_folds, repeats, {}, recorded=False)


def _identity(path: Path, cfg: Mapping[str, Any], info: Mapping[str, Any], root: Path | None) -> RunIdentity:
    rec = (cfg.get("_run") or {}).get("identity")
    if isinstance(rec, Mapping) and isinstance(rec.get("cohort"), Mapping) and isinstance(rec.get("split"), Mapping):
        c, s = rec["cohort"], rec["split"]
        return RunIdentity(str(c.get("id", "")), str(c.get("name", "")), str(c.get("table", "")), str(s.get("id", "")),
                           int(s.get("folds") or 0), int(s.get("repeats") or 1),
                           {str(k): str(v) for k, v in (rec.get("omics") or {}).items()}, recorded=True)
    return _derived_identity(path, cfg, info, root)


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
    table
        The lazily scanned :class:`MetricsTable`.
    config, conformal, info
        ``config.yaml``, ``conformal.json``, ``run.json``.
    identity
        :class:`RunIdentity`.
    """

    label: str
    path: Path
    name: str
    blocks: dict[str, str]
    table: MetricsTable
    config: dict[str, Any] = field(default_factory=dict)
    conformal: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    identity: RunIdentity | None = None
    _heldout: dict[str, pd.DataFrame | None] = field(default_factory=dict, repr=False)
    _small: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def run_dir(self) -> Any:
        """The :class:`~histoviz.io.rundir.RunDir`."""
        from histoviz.io.rundir import RunDir

        return RunDir(self.path)

    @property
    def level(self) -> str:
        """``slide`` or ``spot``."""
        return str(self.info.get("level") or (self.config.get("_run") or {}).get("level") or "slide")

    @property
    def model(self) -> str:
        """The registered model the run trained."""
        return str(self.info.get("model") or (self.config.get("model") or {}).get("name") or self.name)

    @property
    def encoder(self) -> str:
        """The patch encoder of the run's features."""
        feats = (self.config.get("_run") or {}).get("features") or {}
        enc = feats.get("encoder") if isinstance(feats, Mapping) else None
        return str(enc or (self.config.get("data") or {}).get("encoder") or "")

    @property
    def created(self) -> str:
        """When the run was published (``run.json``'s time, local ``YYYY-MM-DD HH:MM``)."""
        for f in ("run.json", "metrics.parquet"):
            try:
                t = (self.path / f).stat().st_mtime
            except OSError:
                continue
            return _dt.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M")
        return ""

    @property
    def metrics(self) -> pd.DataFrame:
        """Every metric row except the (large) per-target rows of regression blocks, with a
        ``run`` column; those are read through :attr:`table` (``aggregate``, ``frame``)."""
        if self._small is None:
            reg = [b for b, k in self.blocks.items() if k == TaskKind.REGRESSION]
            parts = [self.table.frame(task=[b for b in self.blocks if b not in reg] or ["\x00"])]
            if reg:
                parts.append(self.table.frame(task=reg, axis=["per-patient", "pooled"]))
            m = pd.concat([p for p in parts if len(p)], ignore_index=True) if any(len(p) for p in parts) \
                else parts[0]
            m["run"] = self.label
            self._small = m
        return self._small

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

    def splits(self) -> pd.DataFrame | None:
        """``fold, patient_id, split`` (fit / val / cal / test) of every fold (``None`` when absent)."""
        p = self.path / "splits.parquet"
        try:
            return pd.read_parquet(p, columns=["fold", "patient_id", "split"]) if p.is_file() else None
        except Exception:  # an unreadable table: no answer rather than a wrong one
            return None

    def seen(self, patient: str, checkpoint: str) -> tuple[bool | None, str]:
        """Whether the model behind ``checkpoint`` (``final``, ``fold<k>``) trained on ``patient``,
        and one sentence saying so (``None``: the run's split table cannot tell)."""
        import re

        splits = self.splits()
        if splits is None:
            return None, f"{self.label} records no split table: whether it trained on patient {patient} is unknown"
        mine = splits[splits["patient_id"].astype(str) == str(patient)]
        m = re.fullmatch(r"fold(\d+)", str(checkpoint))
        if m:
            k = int(m.group(1))
            role = mine.loc[mine["fold"] == k, "split"].astype(str).tolist()
            if "test" in role:
                return False, (f"patient {patient} was held out in fold {k}, whose model made these maps: a slide "
                               "that model did not train on")
            if role:
                return True, (f"the fold-{k} model that made these maps trained on patient {patient} ({role[0]} "
                              "split): not an unseen slide")
            return False, f"patient {patient} is not among {self.label}'s patients: no model of it trained on this slide"
        if len(mine):
            return True, (f"the {checkpoint} model that made these maps trained on {self.label}'s patients, patient "
                          f"{patient} included: not an unseen slide")
        return False, f"patient {patient} is not among {self.label}'s patients: no model of it trained on this slide"

    def heldout_sizes(self) -> list[int] | None:
        """Held-out patients per fold (``splits.parquet``'s test rows, folds in order; ``None``
        when the run has no split table)."""
        s = self.splits()
        if s is None:
            return None
        s = s[(s["split"].astype(str) == "test") & (s["fold"] >= 0)]
        return [int(v) for v in s.groupby("fold", sort=True).size().to_numpy()] or None

    def heldout_rows(self, block: str) -> int:
        """Rows of the block's held-out table, from the parquet footer (0 when there is none)."""
        import pyarrow.parquet as pq

        for name in (f"heldout/{block}.parquet", "predictions.parquet"):
            try:
                return int(pq.ParquetFile(self.path / name).metadata.num_rows)
            except Exception:  # absent or unreadable: the next, else none
                continue
        return 0

    def has_heldout(self, block: str) -> bool:
        """Whether the run wrote held-out predictions of ``block`` (no file is read)."""
        if (self.path / "heldout" / f"{block}.parquet").is_file():
            return True
        return self.blocks.get(block) == TaskKind.REGRESSION and (self.path / "predictions.parquet").is_file()

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

    def time_unit(self, block: str) -> str:
        """The time unit of a survival block (``data.outcomes.<block>.time_unit``; ``""`` when
        the config does not say)."""
        spec = ((self.config.get("data") or {}).get("outcomes") or {}).get(block) or {}
        return str(spec.get("time_unit") or "") if isinstance(spec, Mapping) else ""


def load_run(path: str | os.PathLike, *, label: str | None = None, root: str | os.PathLike | None = None) -> RunData:
    """Read a run directory's config, conformal thresholds and identity; open its metrics.

    Parameters
    ----------
    path
        The run directory.
    label
        How pages name it (default: its folder name).
    root
        The results root: a config's cohort table is read (to derive an identity the run did
        not record) only when it lies under it.

    Raises
    ------
    DataError
        Not a finished run, or an unreadable file (the message names it).
    """
    from histoviz.io.rundir import RunDir

    r = RunDir(path)
    lab = label or r.path.name
    mp = r.path / "metrics.parquet"
    info = dict(r.info)
    if int(info.get("format", 2)) < 2:  # wide legacy table: converted by RunDir
        table = MetricsTable(r.metrics())
    elif not mp.is_file():
        raise DataError(f"{mp}: missing; the run is incomplete (retrain it)")
    else:
        table = MetricsTable(mp)
    blocks = r.blocks
    if not blocks:
        kinds = table.aggregate(["task", "kind"] if "kind" in table.columns else ["task"], [("value", "size")])
        blocks = {str(t): str(k) for t, k in zip(kinds["task"], kinds.get("kind", [TaskKind.REGRESSION.value] * len(kinds)))}
    cfg = r.config
    return RunData(lab, r.path, r.name, {str(k): str(v) for k, v in blocks.items()}, table, cfg,
                   r.json("conformal.json"), info, _identity(r.path, cfg, info, Path(root) if root else None))


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
            runs.append(load_run(p, label=label, root=root))
        except DataError as e:
            errors.append(str(e))
        except Exception as e:  # a reader bug must not hide the other runs either
            errors.append(f"{p}: unreadable ({type(e).__name__}: {e})")
    return runs, errors


# ------------------------------------------------------------------------------------------------
# groups and the runs table
# ------------------------------------------------------------------------------------------------
@dataclass
class CohortGroup:
    """Runs that share a cohort and a split (compared with each other by default)."""

    key: tuple[str, str]
    cohort_name: str
    split_label: str
    level: str
    runs: list[RunData]
    recorded: bool = True

    @property
    def id(self) -> str:
        """``cohort/split/level``: names the group in a URL or a widget."""
        return f"{self.key[0]}/{self.key[1]}/{self.level}"

    @property
    def label(self) -> str:
        """``power · 5-fold · 200 patients · 8 runs (slide level)``."""
        pats = {int(r.info.get("n_patients") or r.info.get("n_samples") or 0) for r in self.runs} - {0}
        who = f" · {max(pats)} {'samples' if self.level == 'spot' else 'patients'}" if pats else ""
        lvl = " (spots)" if self.level == "spot" else ""
        note = "" if self.recorded else " · identity derived"
        return (f"{self.cohort_name} · {self.split_label}{who} · {len(self.runs)} run"
                f"{'s' if len(self.runs) != 1 else ''}{lvl}{note}")


def cohort_groups(runs: Sequence[RunData]) -> list[CohortGroup]:
    """Runs grouped by ``(cohort, split)`` (and level); groups with more runs first, then by
    name. Two cohort tables that happen to share a folder name stay apart (their fingerprints
    differ) and their labels say which is which."""
    groups: dict[tuple[str, str, str], CohortGroup] = {}
    for r in runs:
        ident = r.identity or RunIdentity("unknown", "unknown cohort", recorded=False)
        k = (*ident.key, r.level)
        if k not in groups:
            groups[k] = CohortGroup(ident.key, ident.cohort_name, ident.split_label, r.level, [], ident.recorded)
        groups[k].runs.append(r)
        groups[k].recorded &= ident.recorded
    out = sorted(groups.values(), key=lambda g: (g.level != "slide", -len(g.runs), g.cohort_name, g.key))
    names: dict[str, list[CohortGroup]] = {}
    for g in out:
        names.setdefault(g.cohort_name, []).append(g)
    for same in names.values():  # two different cohorts (or splits) with one name: show the fingerprints
        if len(same) > 1:
            for g in same:
                g.cohort_name = f"{g.cohort_name} [{g.key[0][:6]}/{g.key[1][:6]}]"
    return out


def runs_table(runs: Sequence[RunData]) -> pd.DataFrame:
    """One row per run: ``run, cohort, model, encoder, blocks, folds x repeats, patients,
    held-out per fold, date, cohort id, split id``."""
    rows = []
    for r in runs:
        ident = r.identity or RunIdentity("", "")
        sizes = r.heldout_sizes()
        if sizes is not None:
            sizes = ", ".join(str(v) for v in sizes)
        elif r.level == "slide" and any(k == TaskKind.REGRESSION for k in r.blocks.values()) and "n" in r.table.columns:
            units = ["repeat", "fold"] if "repeat" in r.table.columns else ["fold"]
            n = r.table.aggregate(units, [("n", "max")], axis="per-target", kind=TaskKind.REGRESSION)
            sizes = ", ".join(str(int(v)) for v in n.sort_values(units)["n_max"].to_numpy())
        elif "n" in r.table.columns:
            n = r.metrics
            n = n[n["axis"].astype(str) == "per-target"] if "axis" in n.columns else n
            if len(n):
                g = n.groupby("fold", sort=True)["n"].max()
                sizes = ", ".join(str(int(v)) for v in g.to_numpy())
        repeats = ident.repeats if ident.n_folds else int((r.config.get("_run") or {}).get("repeats") or 1)
        folds = ident.n_folds or int(r.info.get("n_folds") or 0)
        rows.append({
            "run": r.label, "cohort": ident.cohort_name, "model": r.model, "encoder": r.encoder,
            "blocks": ", ".join(f"{b} ({k})" for b, k in r.blocks.items()),
            "folds x repeats": f"{folds} x {repeats}",
            "patients": r.info.get("n_patients") if r.level == "slide" else r.info.get("n_samples"),
            "held-out per fold": sizes, "date": r.created,
            "cohort id": ident.cohort_id + ("" if ident.recorded else " (derived)"), "split id": ident.split_id,
        })
    cols = ["run", "cohort", "model", "encoder", "blocks", "folds x repeats", "patients", "held-out per fold", "date",
            "cohort id", "split id"]
    out = pd.DataFrame(rows, columns=cols)
    out["patients"] = pd.to_numeric(out["patients"], errors="coerce").astype("Int64")
    return out


def shared_omics(runs: Sequence[RunData], block: str) -> bool | None:
    """Whether every run that recorded an omics fingerprint for ``block`` recorded the same one
    (``None`` when fewer than two did)."""
    ids = {r.identity.omics[block] for r in runs if r.identity is not None and block in r.identity.omics}
    n = sum(1 for r in runs if r.identity is not None and block in r.identity.omics)
    return None if n < 2 else len(ids) == 1

