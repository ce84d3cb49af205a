"""``predict_cohort``: every slide of a folder, a cohort table or a feature folder, with one or more runs.

Per slide and run, the same pipeline as :func:`histoviz.predict.predict_slide` (so a slide's file
equals a single-slide prediction): tiled and embedded once per encoder and tiling the runs share,
predicted by each run, the thumbnail put in ``uns["spatial"]``. Outputs under ``out``::

    <slide_id>.<run>.h5ad        one prediction file per slide and run (napari, the dashboard's
                                 Slide page, scanpy / squidpy: sc.pl.spatial(adata, color=...))
    predictions.csv              one row per slide: slide-level grade (probabilities, conformal
                                 set), risk (conformal interval), chosen genes; status, error
    predict_report.md, .json     per slide: status, patches, seconds, error; totals
    predict.json                 the runs (and their fingerprints) this folder holds

Resumable: a slide whose file exists for the same run (same fingerprint) is read back, not
predicted again; a folder that holds predictions of another model under the same run name is
refused (``overwrite`` replaces them). A slide that fails is reported and skipped; the others
finish. A live line on stderr follows the slides and tiles.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from histoviz._atomic import atomic_write_text
from histoviz.errors import ConfigError, DataError, HistovizError
from histoviz.task_kinds import TaskKind

__all__ = ["CohortPrediction", "predict_cohort", "slide_columns", "slide_row"]

log = logging.getLogger(__name__)
PREDICT_FORMAT = 1


@dataclass
class CohortPrediction:
    """What :func:`predict_cohort` did."""

    out: Path
    table: pd.DataFrame
    slides: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failed(self) -> list[dict[str, Any]]:
        """Slides that failed (with ``error``)."""
        return [s for s in self.slides if s["status"] == "failed"]

    def summary(self) -> str:
        """One line per status and the outputs."""
        counts: dict[str, int] = {}
        for s in self.slides:
            counts[s["status"]] = counts.get(s["status"], 0) + 1
        lines = [f"{len(self.slides)} slides: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))]
        lines += [f"  failed {s['slide_id']}: {s['error']}" for s in self.failed[:20]]
        lines.append(f"predictions: {self.out / 'predictions.csv'}; report: {self.out / 'predict_report.md'}")
        return "\n".join(lines)


def _jobs(source: str | os.PathLike, features: str | os.PathLike | None) -> pd.DataFrame:
    """``slide_id, patient_id, path, bag`` for a folder, a cohort table or a feature folder."""
    src = Path(source)
    if src.is_file() and src.suffix.lower() in (".csv", ".tsv", ".parquet", ".txt"):
        from histoviz.data.cohort import read_cohort

        t = read_cohort(src)[["slide_id", "patient_id", "path"]].copy()
    elif src.is_dir() and any(src.glob("*.h5")):  # a folder of feature bags (their slide, where it is here)
        from histoviz.io.featurebag import read_bag_attrs

        bags = sorted(src.glob("*.h5"))
        paths = [str(read_bag_attrs(b).get("slide_path") or "") for b in bags]
        t = pd.DataFrame({"slide_id": [b.name.split(".")[0] for b in bags], "patient_id": "",
                          "path": [p if p and Path(p).exists() else "" for p in paths]})
        features = features or src
    else:
        from histoviz.data.slide_files import find_slides
        from histoviz.data.tcga import parse_barcode
        from histoviz.io.open import slide_id_from_path

        rows = []
        for p in find_slides(src):
            b = parse_barcode(p.name)
            rows.append({"slide_id": b.text if b is not None and b.slide else slide_id_from_path(p),
                         "patient_id": b.patient if b is not None else "", "path": str(p)})
        t = pd.DataFrame(rows)
    dup = t["slide_id"][t["slide_id"].duplicated()].unique().tolist()
    if dup:
        ex = t[t["slide_id"] == dup[0]]["path"].tolist()
        raise DataError(f"{src}: several slides share the id {dup[0]!r} ({ex[:2]}); prediction files are named by "
                        "slide id: rename one, or predict the folders separately")
    t["bag"] = ""
    if features is not None:
        fd = Path(features)
        t["bag"] = [str(fd / f"{s}.h5") if (fd / f"{s}.h5").exists() else "" for s in t["slide_id"]]
    return t.reset_index(drop=True)


def _run_key(rm: Any) -> str:
    from histoviz.io.rundir import RunDir

    try:
        fp = RunDir(rm.run_dir).info.get("fingerprint", "")
    except HistovizError:
        fp = ""
    return f"{fp}:{rm.checkpoint}"


def _group(runs: dict[str, Any]) -> list[list[str]]:
    """Runs that can share one bag (same encoder, weights and tiling; no fine-tuned encoder of their own)."""
    from histoviz.predict import _encoder_for

    groups: dict[str, list[str]] = {}
    for name, rm in runs.items():
        own = any(getattr(p.model, "patch_encoder", lambda: None)() is not None for p in rm.pipelines)
        try:
            key = name if own else json.dumps(_encoder_for(rm), sort_keys=True, default=str)
        except DataError:  # features made elsewhere: predicted from bags only
            key = name
        groups.setdefault(key, []).append(name)
    return list(groups.values())


def slide_columns(adata: Any, genes: Sequence[str] = ()) -> list[tuple[str, str, Any]]:
    """``(block, column, value)`` of one prediction's slide level (``uns["slide_prediction"]``):
    ``<block>`` and ``<block>_p_<class>``, ``<block>_set``, ``<block>_set_size`` (classification);
    ``<block>_risk`` and its conformal interval (survival): ``<block>_time_lo`` (a lower bound
    of survival time in ``<block>_time_unit``; the upper end is open) for time intervals, or
    ``<block>_risk_lo``, ``<block>_risk_hi`` for risk-bin intervals; ``<block>:<target>``
    (and ``_lo``, ``_hi``) for the chosen regression targets."""
    cols: list[tuple[str, str, Any]] = []
    for b, sp in (adata.uns.get("slide_prediction") or {}).items():
        kind = TaskKind.parse(sp.get("kind", TaskKind.REGRESSION))
        targets = [str(t) for t in np.asarray(sp.get("targets", [])).reshape(-1)]
        vals = np.asarray(sp.get("values", []), np.float64).reshape(-1)
        if kind is TaskKind.CLASSIFICATION:
            cols.append((b, b, str(sp.get("predicted", ""))))
            cols += [(b, f"{b}_p_{t}", float(v)) for t, v in zip(targets, vals)]
            if "set" in sp:
                s = [str(x) for x in np.asarray(sp["set"]).reshape(-1)]
                cols += [(b, f"{b}_set", "|".join(s)), (b, f"{b}_set_size", len(s)), (b, f"{b}_alpha", float(sp["alpha"]))]
        elif kind is TaskKind.SURVIVAL:
            cols.append((b, f"{b}_risk", float(sp["risk"])))
            if "lo" in sp and sp.get("interval") == "time":
                cols += [(b, f"{b}_time_lo", float(sp["lo"])), (b, f"{b}_time_unit", str(sp.get("time_unit", ""))),
                         (b, f"{b}_alpha", float(sp["alpha"]))]
            elif "lo" in sp:
                cols += [(b, f"{b}_risk_lo", float(sp["lo"])), (b, f"{b}_risk_hi", float(sp["hi"])),
                         (b, f"{b}_alpha", float(sp["alpha"]))]
        else:
            lo = np.asarray(sp["lo"], np.float64).reshape(-1) if "lo" in sp else None
            hi = np.asarray(sp["hi"], np.float64).reshape(-1) if "hi" in sp else None
            for g in genes:
                if g in targets:
                    j = targets.index(g)
                    cols.append((b, f"{b}:{g}", float(vals[j])))
                    if lo is not None and hi is not None:
                        cols += [(b, f"{b}:{g}_lo", float(lo[j])), (b, f"{b}:{g}_hi", float(hi[j]))]
    return cols


def slide_row(adata: Any, genes: Sequence[str] = ()) -> dict[str, Any]:
    """:func:`slide_columns` as one row (column -> value)."""
    return {k: v for _, k, v in slide_columns(adata, genes)}


def _check_genes(runs: dict[str, Any], genes: Sequence[str]) -> None:
    have: set[str] = set()
    for rm in runs.values():
        for p in rm.pipelines:
            for names in (getattr(p.model, "targets_", {}) or {}).values():
                have |= set(map(str, names))
    unknown = [g for g in genes if g not in have]
    if unknown:
        raise ConfigError(f"--genes: {unknown} are not predicted by these runs (they predict e.g. "
                          f"{sorted(have)[:8]}); choose among their targets")


def _trained_slides(rm: Any) -> set[str]:
    cohort = (rm.config.get("data") or {}).get("cohort")
    if not cohort or not Path(str(cohort)).is_file():
        return set()
    from histoviz.data.cohort import read_cohort

    try:
        return set(read_cohort(cohort)["slide_id"].astype(str))
    except HistovizError:
        return set()


def predict_cohort(
    source: str | os.PathLike,
    models: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    features: str | os.PathLike | None = None,
    genes: Sequence[str] = (),
    fold: int | str | None = None,
    device: str = "auto",
    batch_size: int = 64,
    mpp_override: float | None = None,
    overwrite: bool = False,
    progress: bool = True,
    spatial_image: int = 2000,
) -> CohortPrediction:
    """Predict every slide of ``source`` with every run of ``models`` (see the module docstring).

    Parameters
    ----------
    source
        A folder tree of slides (GDC layout included), a cohort table, or a folder of feature bags.
    models
        Run directories (``histoviz train`` outputs).
    out
        Output folder.
    features
        A folder of ``<slide_id>.h5`` bags to predict from instead of embedding (features made
        elsewhere, or the cohort's own); slides without a bag are embedded.
    genes
        Regression targets to put in ``predictions.csv`` (every target stays in the per-slide files).
    fold, device, batch_size, mpp_override
        As :func:`histoviz.predict.predict_slide`.
    overwrite
        Replace predictions made by another model under the same run name.
    progress
        The live line on stderr.
    spatial_image
        Longest side of the ``uns["spatial"]`` thumbnail (0: none).

    Raises
    ------
    DataError, ConfigError
        Before any slide: no slides, unknown genes, a folder holding another model's predictions.
    """
    from histoviz.features.report import ProgressLine
    from histoviz.io.featurebag import FeatureBag
    from histoviz.io.predictions import add_slide_image, read_predictions, write_predictions
    from histoviz.predict import embed_for_run, load_run, predict_bag

    if not models:
        raise ConfigError("give at least one run directory (--model)")
    runs = {Path(m).resolve().name: load_run(m, fold=fold) for m in models}
    if len(runs) < len(models):
        raise ConfigError(f"runs {list(map(str, models))} share a folder name; predictions are named by it")
    _check_genes(runs, genes)
    jobs = _jobs(source, features)
    from histoviz._atomic import make_output_dir

    out = make_output_dir(out)  # a file, a read-only or full place: one line, before any work
    keys = {n: _run_key(rm) for n, rm in runs.items()}
    state_file = out / "predict.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {"format": PREDICT_FORMAT, "runs": {}}
    clash = [n for n in runs if n in state["runs"] and state["runs"][n]["key"] != keys[n]]
    if clash and not overwrite:
        raise DataError(f"{out}: holds predictions of another model under the run name(s) {clash}; use another "
                        "--out, or --overwrite to replace them")
    for n, rm in runs.items():
        state["runs"][n] = {"run_dir": str(rm.run_dir), "checkpoint": rm.checkpoint, "key": keys[n]}
    atomic_write_text(state_file, json.dumps(state, indent=1))
    groups = _group(runs)
    seen = set().union(*(_trained_slides(rm) for rm in runs.values()))
    line = ProgressLine(len(jobs), enabled=progress, label="predict")
    results, rows = [], []
    for job in jobs.itertuples(index=False):
        t0 = time.perf_counter()
        res: dict[str, Any] = {"slide_id": job.slide_id, "status": "done", "error": "", "n_patches": 0, "runs": []}
        row: dict[str, Any] = {"slide_id": job.slide_id, "patient_id": job.patient_id, "path": job.path,
                               "in_training_cohort": job.slide_id in seen}
        files = {n: out / f"{job.slide_id}.{n}.h5ad" for n in runs}
        preds: dict[str, Any] = {}
        try:
            for n, f in files.items():
                if f.exists() and not (clash and overwrite and n in clash):
                    a = read_predictions(f)
                    if a.uns["histoviz"].get("run_key") == keys[n]:
                        preds[n] = a
            todo = [[n for n in g if n not in preds] for g in groups]
            todo = [g for g in todo if g]
            if todo:
                reader = None
                if job.path:
                    from histoviz.io import open_slide

                    try:
                        reader = open_slide(job.path)
                    except HistovizError as e:
                        if not job.bag:
                            raise
                        res["note"] = f"predicted from its bag without a thumbnail: {e}"
                try:
                    for g in todo:
                        if job.bag:
                            bag, meta = FeatureBag.from_h5(job.bag), {}
                        elif reader is not None:
                            bag, meta = embed_for_run(reader, runs[g[0]], device=device,
                                                      progress_callback=partial(line.tiles, job.slide_id),
                                                      batch_size=batch_size, mpp_override=mpp_override)
                        else:
                            raise DataError(f"{job.slide_id}: no slide file and no feature bag")
                        for n in g:
                            a = predict_bag(bag, runs[n], device=device, meta={**meta, "run_key": keys[n]})
                            if reader is not None:
                                add_slide_image(a, reader, hires=spatial_image, lowres=min(600, spatial_image))
                            write_predictions(a, files[n])
                            preds[n] = a
                finally:
                    if reader is not None:
                        reader.close()
            else:
                res["status"] = "skipped (done before)"
        except (HistovizError, OSError, ValueError, RuntimeError) as e:
            res.update(status="failed", error=f"{type(e).__name__}: {e}" if not isinstance(e, HistovizError) else str(e))
            log.warning("%s: %s", job.slide_id, res["error"])
        res["n_patches"] = int(max((a.n_obs for a in preds.values()), default=0))
        res["runs"] = sorted(preds)
        res["seconds"] = round(time.perf_counter() - t0, 3)
        row.update(status=res["status"], error=res["error"], n_patches=res["n_patches"])
        cols = {n: slide_columns(a, genes) for n, a in preds.items()}
        shared = pd.Series([b for c in cols.values() for b in dict.fromkeys(x[0] for x in c)]).value_counts()
        for n, c in cols.items():
            for b, k, v in c:
                row[f"{n}/{k}" if shared.get(b, 0) > 1 else k] = v
        rows.append(row)
        results.append(res)
        line.finished(job.slide_id, "failed" if res["status"] == "failed" else "done", res["n_patches"])
    line.close()
    table = pd.DataFrame(rows)
    from histoviz._atomic import atomic_path

    with atomic_path(out / "predictions.csv") as tmp:
        table.to_csv(tmp, index=False)
    _write_report(out, results, runs, source)
    return CohortPrediction(out, table, results)


def _write_report(out: Path, results: list[dict[str, Any]], runs: dict[str, Any], source: Any) -> None:
    from histoviz._version import __version__

    counts: dict[str, int] = {}
    for r in results:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    rep = {"histoviz_version": __version__, "source": str(source), "counts": counts,
           "runs": {n: {"run_dir": str(rm.run_dir), "checkpoint": rm.checkpoint, "model": rm.model_name}
                    for n, rm in runs.items()},
           "slides": results}
    atomic_write_text(out / "predict_report.json", json.dumps(rep, indent=1, default=str))
    lines = [f"# Predictions of {source}", "", f"histoviz {__version__}; runs: "
             + ", ".join(f"{n} ({rm.model_name}, checkpoint {rm.checkpoint})" for n, rm in runs.items()), "",
             "; ".join(f"{v} {k}" for k, v in sorted(counts.items())), "",
             "| slide | status | patches | seconds | error |", "|---|---|---|---|---|"]
    lines += [f"| {r['slide_id']} | {r['status']} | {r['n_patches']} | {r['seconds']} | {r['error']} |"
              for r in results]
    atomic_write_text(out / "predict_report.md", "\n".join(lines) + "\n")
