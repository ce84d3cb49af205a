"""``RunDir``: the one owner of a run directory (writing it, publishing it, reading it).

It lives in ``io`` (a run directory is a file format) so training writes it and evaluation,
prediction, the dashboard and napari read it without importing upward.

A run is assembled under ``<out>.partial/`` and published whole: when every fold (and the
final model) is done, the tables are written, then ``<out>.partial`` is renamed to ``<out>``
(an existing run at ``<out>`` is moved aside first and removed after the rename). A run that
is killed mid-way leaves the previous ``<out>`` untouched; rerunning the same command with the
same config and data resumes: finished folds are kept (their pieces live in
``<out>.partial/folds/<k>/``), anything else starts over. A ``<out>.partial`` made with another
config or other data is discarded, never mixed. Two trainers writing one ``<out>`` are refused
(a lock file holds the writer's pid; a lock left by a dead process is taken over and said).

Layout of a published run (``run.json`` says ``format``)::

    run.json                 format, name, model, blocks {name: kind}, folds, seconds, fingerprint
    config.yaml              resolved config (absolute paths, all defaults)
    splits.parquet           fold, patient_id, split (fit / val / cal / test)
    folds.csv                patient_id, fold, split_in_final (legacy view of splits)
    metrics.parquet          model, fold, repeat, task, kind, target, metric, value, n, axis, subset
                             (fold ids run on across repeats: repeat * n_folds + k)
    targets.parquet          model, fold, task, target, train_mean, train_var (training-fold
                             statistics on the scale the targets are chosen on)
    heldout/<block>.parquet  held-out predictions of each block (model, fold, ...)
    predictions.parquet      regression blocks' held-out predictions, long format
    conformal.json           per fold and block: alpha, q_hat (list for regression), method
    history.parquet          model, fold, epoch, train_loss, val_* (torch models)
    selection.json           per-fold best epoch / validation loss, selected fold
    summary.csv              mean +- std over folds (histoviz.evaluation.compare)
    checkpoints/fold<k>/     model.safetensors + model.json
    checkpoints/final/       fitted on all patients (training.final_model)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from histoviz._atomic import atomic_path, atomic_write_text
from histoviz.errors import DataError
from histoviz.task_kinds import TaskKind

__all__ = ["RUN_FORMAT", "RunDir", "RunWriter", "check_run_out", "concat_pieces", "fingerprint", "is_run_dir"]

log = logging.getLogger(__name__)

RUN_FORMAT = 2


def _jsonable(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x


def write_parquet(df: pd.DataFrame, path: Path) -> None:
    """Write ``df`` atomically."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def _stat(p: Path) -> list[Any]:
    try:
        st = p.stat()
        return [p.name, st.st_size, int(st.st_mtime_ns)]
    except OSError:
        return [p.name, None, None]


def fingerprint(config: Mapping[str, Any], inputs: Iterable[str | os.PathLike]) -> str:
    """Hash of the resolved config and of the input files' names, sizes and mtimes.

    Folders count by their direct ``.h5`` children (feature bags).
    """
    h = hashlib.sha256(json.dumps(_jsonable(config), sort_keys=True, default=str).encode())
    for p in sorted({str(x) for x in inputs if x}):
        q = Path(p)
        if q.is_dir():
            h.update(json.dumps([p, [_stat(c) for c in sorted(q.glob("*.h5"))]]).encode())
        else:
            h.update(json.dumps([p, _stat(q)]).encode())
    return h.hexdigest()[:16]


def is_run_dir(path: str | os.PathLike) -> bool:
    """True when ``path`` holds a published run (``run.json``) or a legacy one (metrics + checkpoints)."""
    p = Path(path)
    return (p / "run.json").is_file() or ((p / "metrics.parquet").is_file() and (p / "checkpoints").is_dir())


def check_run_out(out: str | os.PathLike) -> Path:
    """Refuse a run folder that would replace something that is not a run, before any work.

    A run replaces only an earlier run (or an empty folder); its parent must be writable.

    Raises
    ------
    StorageError
        ``out`` is a file, or a folder holding something other than a run, or cannot be written.
    """
    from histoviz._atomic import check_writable
    from histoviz.errors import StorageError

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise StorageError(f"{out}: exists and is a file, not a run folder; give a new folder for --out "
                           "(a run never replaces a file)")
    if out.is_dir() and not is_run_dir(out) and any(out.iterdir()):
        raise StorageError(f"{out}: a folder that holds something other than a histoviz run (no run.json); "
                           "give a new folder, or an earlier run's, for --out (a run replaces only a run)")
    check_writable(out.parent)
    return out


# ------------------------------------------------------------------------------------------------
# writing
# ------------------------------------------------------------------------------------------------
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunWriter:
    """Assembles a run under ``<out>.partial`` and publishes it whole (see the module docstring).

    Parameters
    ----------
    out
        Final run directory.
    fp
        :func:`fingerprint` of the config and inputs; a partial run with another one is
        discarded.
    """

    def __init__(self, out: str | os.PathLike, fp: str) -> None:
        self.out = Path(out)
        self.staging = self.out.with_name(self.out.name + ".partial")
        self.fp = fp
        self._lock: Path | None = None
        self.resumed: list[str] = []

    # -- lifecycle -------------------------------------------------------------------------------
    def __enter__(self) -> RunWriter:
        self.open()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def open(self) -> None:
        """Lock the staging folder; keep it when its fingerprint matches, else start afresh.

        Raises
        ------
        DataError
            Another live process is writing this run.
        StorageError
            ``out`` is not a run folder (a file, a folder of other things) or cannot be written.
        """
        check_run_out(self.out)
        lock = self.out.with_name(self.out.name + ".lock")
        for _ in range(2):
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    pid = int(lock.read_text().strip() or "0")
                except (OSError, ValueError):
                    pid = 0
                if pid and pid != os.getpid() and _pid_alive(pid):
                    raise DataError(f"{self.out}: another histoviz train (pid {pid}) is writing this run; "
                                    f"wait for it or remove {lock} if that process is gone") from None
                log.warning("%s: taking over a lock left by a process that is gone (pid %s)", self.out, pid)
                with contextlib.suppress(FileNotFoundError):
                    lock.unlink()
                continue
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            self._lock = lock
            break
        fpf = self.staging / "fingerprint.txt"
        if self.staging.exists():
            old = fpf.read_text().strip() if fpf.exists() else ""
            if old != self.fp:
                log.info("%s: discarding an interrupted run made with another config or data", self.staging)
                shutil.rmtree(self.staging)
            else:
                self.resumed = sorted(p.name for p in (self.staging / "folds").glob("*") if (p / "done").exists())
                if self.resumed:
                    log.info("%s: resuming an interrupted run; finished: %s", self.out, ", ".join(self.resumed))
        self.staging.mkdir(parents=True, exist_ok=True)
        atomic_write_text(fpf, self.fp)

    def release(self) -> None:
        """Drop the lock (the staging folder stays for a resume)."""
        if self._lock is not None:
            with contextlib.suppress(FileNotFoundError):
                self._lock.unlink()
            self._lock = None

    # -- pieces --------------------------------------------------------------------------------
    def piece_dir(self, key: str) -> Path:
        """Folder of one unit of work (``"0"``, ``"final"``)."""
        return self.staging / "folds" / str(key)

    def done(self, key: str) -> bool:
        """Whether unit ``key`` finished in this or an interrupted attempt."""
        return (self.piece_dir(key) / "done").exists()

    def checkpoint_dir(self, key: str) -> Path:
        """Where unit ``key`` writes its checkpoint (``checkpoints/fold<k>`` or ``final``)."""
        return self.staging / "checkpoints" / (key if key == "final" else f"fold{key}")

    def save_piece(self, key: str, tables: Mapping[str, pd.DataFrame], info: Mapping[str, Any]) -> None:
        """Write the tables and info of unit ``key``, then mark it done (last)."""
        d = self.piece_dir(key)
        d.mkdir(parents=True, exist_ok=True)
        for name, df in tables.items():
            write_parquet(df, d / f"{name}.parquet")
        atomic_write_text(d / "info.json", json.dumps(_jsonable(info), indent=1))
        atomic_write_text(d / "done", "")

    def run_pieces(
        self,
        keys: Iterable[str],
        work: Any,
        *,
        progress: bool = False,
        desc: str = "folds",
    ) -> dict[str, tuple[dict[str, pd.DataFrame], dict[str, Any]]]:
        """Do every unit of work not finished yet (``work(key) -> (tables, info)``), saving each
        as it ends; finished units (of this or an interrupted attempt) are loaded instead.

        Returns
        -------
        ``key -> (tables, info)`` in ``keys`` order.
        """
        keys = list(keys)
        pieces: dict[str, tuple[dict[str, pd.DataFrame], dict[str, Any]]] = {}
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(keys), desc=desc, unit="fold", initial=len(self.resumed))
        try:
            for key in keys:
                if self.done(key):
                    pieces[key] = self.load_piece(key)
                    continue
                tables, info = work(key)
                self.save_piece(key, tables, info)
                pieces[key] = (tables, info)
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        return pieces

    def load_piece(self, key: str) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
        """Tables and info of a finished unit."""
        d = self.piece_dir(key)
        tables = {p.stem: pd.read_parquet(p) for p in sorted(d.glob("*.parquet"))}
        return tables, json.loads((d / "info.json").read_text())

    # -- publishing ----------------------------------------------------------------------------
    def write_table(self, name: str, df: pd.DataFrame) -> None:
        """A final table (``name`` relative to the run, ``.parquet``)."""
        write_parquet(df, self.staging / name)

    def read_table(self, name: str) -> pd.DataFrame | None:
        """A final table written earlier in this run (``None`` when absent)."""
        p = self.staging / name
        return pd.read_parquet(p) if p.exists() else None

    def write_text(self, name: str, text: str) -> None:
        """A final text file."""
        atomic_write_text(self.staging / name, text)

    def write_json(self, name: str, obj: Any) -> None:
        """A final JSON file."""
        atomic_write_text(self.staging / name, json.dumps(_jsonable(obj), indent=1))

    def publish(self, run_info: Mapping[str, Any]) -> Path:
        """Write ``run.json`` and move the whole run to ``out`` (replacing a previous run)."""
        shutil.rmtree(self.staging / "folds", ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            (self.staging / "fingerprint.txt").unlink()
        self.write_json("run.json", {"format": RUN_FORMAT, "fingerprint": self.fp, **run_info})
        old = None
        if self.out.exists():
            old = self.out.with_name(f".{self.out.name}.old-{os.getpid()}-{int(time.time())}")
            os.replace(self.out, old)
        os.replace(self.staging, self.out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.out


# ------------------------------------------------------------------------------------------------
# reading
# ------------------------------------------------------------------------------------------------
class RunDir:
    """Read access to a published run directory (predict, evaluate and the dashboard use it).

    Raises
    ------
    DataError
        ``path`` is not a finished run (names what is missing and what to do).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise DataError(f"{self.path}: no such run directory; train one with histoviz train")
        if not is_run_dir(self.path):
            partial = self.path.with_name(self.path.name + ".partial")
            hint = (f" (an interrupted run is in {partial}; rerun the same histoviz train command to finish it)"
                    if partial.exists() else " (no run.json); give the folder histoviz train --out wrote")
            raise DataError(f"{self.path}: not a finished histoviz run directory{hint}")
        self._info: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def info(self) -> dict[str, Any]:
        """``run.json`` (legacy runs: reconstructed from the config)."""
        if self._info is None:
            p = self.path / "run.json"
            if p.exists():
                try:
                    self._info = json.loads(p.read_text())
                except ValueError as e:
                    raise DataError(f"{p}: unreadable ({e})") from e
                if int(self._info.get("format", 0)) > RUN_FORMAT:
                    raise DataError(f"{p}: run format {self._info.get('format')} is newer than this histoviz "
                                    f"reads ({RUN_FORMAT}); upgrade histoviz")
            else:
                cfg = self.config
                omics = list((cfg.get("data") or {}).get("omics") or {})
                self._info = {"format": 1, "name": cfg.get("name", self.path.name),
                              "model": (cfg.get("model") or {}).get("name"),
                              "blocks": {m: TaskKind.REGRESSION for m in omics}}
        return self._info

    @property
    def name(self) -> str:
        """Run name (the ``model`` column of its tables)."""
        return str(self.info.get("name") or self.path.name)

    @property
    def blocks(self) -> dict[str, str]:
        """``block -> task kind`` predicted by this run."""
        return dict(self.info.get("blocks") or {})

    @property
    def capabilities(self) -> dict[str, Any]:
        """What the run's model declared at registration (``run.json``; empty for runs written
        before capabilities were recorded)."""
        return dict(self.info.get("capabilities") or {})

    @property
    def setting(self) -> str | None:
        """The value of the model's declared setting parameter in this run (PathGen's slide /
        synthetic / real), or ``None`` for a model without one."""
        s = self.info.get("setting") or {}
        return None if s.get("value") is None else str(s["value"])

    @property
    def config(self) -> dict[str, Any]:
        """The resolved ``config.yaml``."""
        import yaml

        p = self.path / "config.yaml"
        if not p.exists():
            return {}
        try:
            return yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise DataError(f"{p}: unreadable ({e})") from e

    def _parquet(self, name: str, *, required: bool = False) -> pd.DataFrame | None:
        p = self.path / name
        if not p.exists():
            if required:
                raise DataError(f"{p}: missing; the run is incomplete (retrain it)")
            return None
        try:
            return pd.read_parquet(p)
        except Exception as e:  # pyarrow raises several types on corrupt files
            raise DataError(f"{p}: unreadable ({type(e).__name__}: {e}); retrain this run") from e

    def metrics(self) -> pd.DataFrame:
        """Long metric table (``model, fold, task, kind, target, metric, value, n, axis, subset``)."""
        m = self._parquet("metrics.parquet", required=True)
        assert m is not None
        if "metric" not in m.columns:  # format 1: wide per-target Pearson / Spearman
            m = _legacy_metrics(m, self._parquet("patient_metrics.parquet"))
        return m

    def targets(self) -> pd.DataFrame | None:
        """Training-fold statistics of regression targets (``fold, task, target, train_mean, train_var``)."""
        t = self._parquet("targets.parquet")
        if t is None:
            m = self._parquet("metrics.parquet")
            if m is not None and "train_var" in m.columns:
                t = m[["model", "fold", "modality", "target", "train_mean", "train_var"]].rename(columns={"modality": "task"})
        return t

    def heldout(self, block: str) -> pd.DataFrame | None:
        """Held-out predictions of one block (``None`` when the run has none)."""
        h = self._parquet(f"heldout/{block}.parquet")
        if h is None and self.blocks.get(block, TaskKind.REGRESSION) == TaskKind.REGRESSION:
            p = self._parquet("predictions.parquet")
            if p is not None:
                col = "task" if "task" in p.columns else "modality"
                h = p[p[col] == block]
        return h

    def heldout_target(self, block: str, target: str) -> pd.DataFrame | None:
        """Held-out rows of one regression target, read with a row filter (a cohort-size table
        is not loaded whole); ``None`` when the run has no held-out predictions of ``block``."""
        for name, by_task in ((f"heldout/{block}.parquet", False), ("predictions.parquet", True)):
            p = self.path / name
            if not p.exists():
                continue
            filters = [("target", "==", str(target))]
            try:
                if by_task:
                    import pyarrow.parquet as pq

                    names = pq.ParquetFile(p).schema_arrow.names
                    filters.append(("task" if "task" in names else "modality", "==", str(block)))
                h = pd.read_parquet(p, filters=filters)
            except Exception as e:  # pyarrow raises several types on corrupt files
                raise DataError(f"{p}: unreadable ({type(e).__name__}: {e}); retrain this run") from e
            for c in ("task", "target", "patient_id"):
                if c in h.columns:
                    h[c] = h[c].astype(str)
            return h.reset_index(drop=True)
        return None

    def predictions(self) -> pd.DataFrame | None:
        """Every regression block's held-out predictions (long; ``task`` column)."""
        p = self._parquet("predictions.parquet")
        if p is not None and "task" not in p.columns and "modality" in p.columns:
            p = p.rename(columns={"modality": "task"})
        return p

    def splits(self) -> pd.DataFrame | None:
        """``fold, patient_id, split`` (fit / val / cal / test)."""
        return self._parquet("splits.parquet")

    def history(self) -> pd.DataFrame | None:
        """Per-epoch losses (torch models)."""
        return self._parquet("history.parquet")

    def json(self, name: str) -> dict[str, Any]:
        """A JSON file of the run (``selection.json``, ``conformal.json``), ``{}`` when absent."""
        p = self.path / name
        if not p.exists():
            return {}
        try:
            return json.loads(p.read_text())
        except ValueError as e:
            raise DataError(f"{p}: unreadable ({e})") from e

    def checkpoint_names(self) -> list[str]:
        """``fold0 ... foldK`` then ``final`` when present."""
        ck = self.path / "checkpoints"
        if not ck.is_dir():
            return []
        folds = sorted((p.name for p in ck.iterdir() if p.name.startswith("fold") and p.name[4:].isdigit()),
                       key=lambda n: int(n[4:]))
        return folds + (["final"] if (ck / "final").is_dir() else [])

    def checkpoint(self, name: str) -> Path:
        """Folder of checkpoint ``name``.

        Raises
        ------
        DataError
            No such checkpoint (lists those that exist).
        """
        p = self.path / "checkpoints" / name
        if not p.is_dir():
            raise DataError(f"{p}: no such checkpoint; have {self.checkpoint_names()}")
        return p

    def default_checkpoint(self) -> str:
        """``final`` when present, else the fold selected on validation loss."""
        names = self.checkpoint_names()
        if "final" in names:
            return "final"
        if not names:
            raise DataError(f"{self.path}: the run has no checkpoints")
        sel = self.json("selection.json")
        return f"fold{int(sel.get('selected_fold', 0))}"


def _legacy_metrics(m: pd.DataFrame, pm: pd.DataFrame | None) -> pd.DataFrame:
    """Format-1 (wide) metrics as the long table."""
    rows = []
    base = m.rename(columns={"modality": "task"})
    for metric in ("pearson", "spearman"):
        d = base[["model", "fold", "task", "target", "n"]].copy()
        d["metric"], d["value"], d["axis"], d["subset"] = metric, base[metric].to_numpy(), "per-target", "all"
        rows.append(d)
    if pm is not None and not pm.empty:
        p = pm.rename(columns={"modality": "task", "patient_id": "target", "n_targets": "n"})
        for metric in ("pearson", "spearman", "pearson_centered"):
            if metric in p.columns:
                d = p[["model", "fold", "task", "target", "n"]].copy()
                d["metric"], d["value"], d["axis"], d["subset"] = metric, p[metric].to_numpy(), "per-patient", "all"
                rows.append(d)
    out = pd.concat(rows, ignore_index=True)
    out["kind"] = TaskKind.REGRESSION.value
    return out


def concat_pieces(pieces: Mapping[str, tuple[Mapping[str, pd.DataFrame], Any]], name: str, *,
                  fold_col: bool = True, n_folds: int | None = None) -> pd.DataFrame | None:
    """Table ``name`` of every piece of :meth:`RunWriter.run_pieces`, concatenated (``None``: none has it).

    ``fold_col`` adds the piece's fold (``-1`` for ``"final"``) where the table has none;
    ``n_folds`` also adds ``repeat`` (fold // n_folds) where it has none.
    """
    parts = []
    for key, (tables, _) in pieces.items():
        if name not in tables:
            continue
        d = tables[name].copy()
        fold = -1 if key == "final" else int(key)
        if fold_col and "fold" not in d.columns:
            d.insert(0, "fold", fold)
        if n_folds is not None and "repeat" not in d.columns:
            d.insert(1, "repeat", -1 if fold < 0 else fold // n_folds)
        parts.append(d)
    return pd.concat(parts, ignore_index=True) if parts else None
