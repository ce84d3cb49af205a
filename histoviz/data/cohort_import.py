"""``import_cohort``: a cohort folder from what people download (GDC, cBioPortal, Xena, TRIDENT).

Inputs: slide folders (any tree, including the GDC layout), clinical tables
(:mod:`histoviz.data.clinical`), omics tables (:mod:`histoviz.data.omics_import`), optionally a
slide -> patient mapping (or a regex), feature bags made elsewhere
(:mod:`histoviz.data.external_features`) and spot files. Output (published whole: assembled in a
hidden sibling folder, renamed into place when complete)::

    <out>/cohort.csv            slide_id, patient_id, sample_id, path (absolute), sample_type, tissue,
                                slide_type, slide_kind, [width, height, mpp,] time, event, grade,
                                [os_/dfs_/pfs_/dss_ time and event]
    <out>/omics/<modality>.h5ad obs = patients (obs["sample_id"]), var = targets
    <out>/configs/<task>.yaml   ready experiment configs (:mod:`histoviz.data.cohort_configs`)
    <out>/features/<encoder>/   linked bags made elsewhere (else filled by ``histoviz train``)
    <out>/import_report.md, import_report.json   what was matched, unmatched and dropped, and why
    <out>/import.json           fingerprint of the inputs and options (a rerun with the same is a no-op)

Slides kept by default: TCGA sample types 01-09 (tumour) and diagnostic (DX) slides; slides that
are not TCGA barcodes have no type and are kept. A slide whose patient has no clinical row is kept
(it can serve omics and prediction) and listed; when *no* slide matches a clinical row the import
stops (the table belongs to other patients).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from histoviz._version import __version__
from histoviz.data.clinical import ClinicalOptions, read_clinical
from histoviz.data.tcga import SAMPLE_TYPES, parse_sample_types, parse_slide_types
from histoviz.errors import ConfigError, DataError, HistovizError

__all__ = ["IMPORT_FORMAT", "ImportOptions", "ImportResult", "import_cohort"]

log = logging.getLogger(__name__)

IMPORT_FORMAT = 1


@dataclass(frozen=True)
class ImportOptions:
    """Choices of an import (each is a CLI flag of ``histoviz import``).

    Parameters
    ----------
    sample_types
        TCGA sample types kept: ``tumour`` (default), ``normal``, ``primary``, ``all`` or codes.
    slide_types
        TCGA slide types kept: ``diagnostic`` (default, DX), ``frozen``, ``all``.
    slide_map
        A slide -> patient table (GDC sample sheet or ``file, patient_id``).
    patient_regex
        Regex on file names with a group for the patient.
    clinical
        :class:`~histoviz.data.clinical.ClinicalOptions`.
    encoder
        Encoder of the cohort's features (``features/<encoder>``).
    check_slides
        Open every kept slide (size, mpp); unreadable ones are dropped with the reason.
    omics_scale
        ``modality -> log|counts|linear`` overriding the detected value scale.
    """

    sample_types: str = "tumour"
    slide_types: str = "diagnostic"
    slide_map: str | None = None
    patient_regex: str | None = None
    clinical: ClinicalOptions = field(default_factory=ClinicalOptions)
    encoder: str = "efficientnet-lite0"
    check_slides: bool = True
    omics_scale: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        parse_sample_types(self.sample_types)
        parse_slide_types(self.slide_types)
        bad = {k: v for k, v in self.omics_scale.items() if v not in ("log", "counts", "linear")}
        if bad:
            raise ConfigError(f"--omics-scale {bad}: use log, counts or linear")


@dataclass
class ImportResult:
    """What :func:`import_cohort` made (or found up to date)."""

    out: Path
    report: dict[str, Any]
    unchanged: bool = False

    @property
    def configs(self) -> dict[str, Path]:
        """Written configs by task."""
        return {k: self.out / v for k, v in self.report.get("configs", {}).get("written", {}).items()}

    def summary(self) -> str:
        """A few lines for the terminal."""
        from histoviz.data.cohort_report import summary_lines

        return "\n".join(summary_lines(self.report, self.out, unchanged=self.unchanged))


def _stat(p: Path) -> list[Any]:
    try:
        st = p.stat()
        return [str(p), st.st_size, int(st.st_mtime_ns)]
    except OSError:
        return [str(p), None, None]


def _fingerprint(options: ImportOptions, slides: Sequence[Path], files: Sequence[str], out: Path) -> str:
    opt = asdict(options)
    h = hashlib.sha256(json.dumps({"format": IMPORT_FORMAT, "options": opt, "out": str(out.resolve())},
                                  sort_keys=True, default=str).encode())
    for p in slides:
        h.update(json.dumps(_stat(p) if p.is_file() else [str(p), sorted(_stat(c) for c in p.iterdir())]).encode())
    for f in files:
        q = Path(f)
        h.update(json.dumps([_stat(c) for c in sorted(q.rglob("*.h5"))] if q.is_dir() else _stat(q)).encode())
    return h.hexdigest()[:20]


def _some(ids: Sequence[str], n: int = 5) -> list[str]:
    return [str(i) for i in list(ids)[:n]]


def _filter_slides(table: pd.DataFrame, opt: ImportOptions) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    keep_s, keep_t = parse_sample_types(opt.sample_types), parse_slide_types(opt.slide_types)
    dropped: dict[str, list[str]] = {}
    keep = []
    seen: dict[str, str] = {}
    for r in table.itertuples(index=False):
        why = None
        if r.sample_type and r.sample_type not in keep_s:
            why = (f"sample type {r.sample_type} ({SAMPLE_TYPES.get(r.sample_type, 'other')}) not kept "
                   f"(--sample-types {opt.sample_types})")
        elif r.slide_type and r.slide_type not in keep_t:
            why = f"{r.slide_kind or r.slide_type} slide ({r.slide_type}) not kept (--slide-types {opt.slide_types})"
        elif r.slide_id in seen:
            why = "another file of the same slide id (kept the first)"
        if why:
            dropped.setdefault(why, []).append(Path(r.path).name)
        else:
            seen[r.slide_id] = r.path
        keep.append(why is None)
    return table[np.array(keep, dtype=bool)].reset_index(drop=True), dropped


def _check_slides(table: pd.DataFrame, progress: Callable[[int, int], None] | None) -> tuple[pd.DataFrame, dict]:
    from histoviz.io import open_slide

    dims, bad = [], {}
    for i, (sid, p) in enumerate(table[["slide_id", "path"]].itertuples(index=False)):
        try:
            with open_slide(p) as r:
                w, h = r.dimensions
                dims.append((int(w), int(h), r.mpp))
        except HistovizError as e:
            dims.append((np.nan, np.nan, np.nan))
            bad[sid] = str(e)
        if progress is not None:
            progress(i + 1, len(table))
    out = table.copy()
    out["width"] = [d[0] for d in dims]
    out["height"] = [d[1] for d in dims]
    out["mpp"] = [np.nan if d[2] is None else d[2] for d in dims]
    return out, bad


def _outcomes_for(table: pd.DataFrame, clin: Any) -> tuple[pd.DataFrame, dict[str, Any]]:
    per = clin.patients
    pats = table["patient_id"].astype(str)
    has = pats.isin(per.index)
    info: dict[str, Any] = {"patients_with_slides": int(pats.nunique()),
                            "patients_with_clinical_row": int(pats[has].nunique()),
                            "clinical_patients_without_slides": int(len(set(per.index) - set(pats))),
                            "slides_without_clinical_row": sorted(table.loc[~has, "slide_id"].astype(str))}
    cols = [c for c in per.columns]
    merged = table.join(per[cols], on="patient_id")
    return merged, info


def import_cohort(
    out: str | os.PathLike,
    *,
    slides: Sequence[str | os.PathLike],
    clinical: Sequence[str | os.PathLike] = (),
    omics: Sequence[str | os.PathLike] | Mapping[str, str | os.PathLike] = (),
    features: str | os.PathLike | None = None,
    spots: str | os.PathLike | None = None,
    options: ImportOptions | None = None,
    overwrite: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> ImportResult:
    """Build (or find up to date) a cohort folder from downloaded files (see the module docstring).

    Parameters
    ----------
    out
        The cohort folder.
    slides
        Folders (or files) holding the slides.
    clinical
        Clinical tables (cBioPortal patient/sample files, GDC clinical TSV, any CSV/TSV).
    omics
        Omics tables; a mapping names their modalities (default: from the file names).
    features
        A TRIDENT/CLAM feature folder to use as the cohort's features (``options.encoder`` names it).
    spots
        A folder of spot files (``histoviz st-import``) for the spot config.
    options
        :class:`ImportOptions`.
    overwrite
        Replace a folder imported from other inputs (its ``features/`` are kept).
    progress
        ``progress(stage, done, total)`` while slides are checked.

    Raises
    ------
    DataError, ConfigError
        Bad input (one line naming the file and the fix); nothing is written then.
    """
    from histoviz.data.slide_files import find_slides, identify_slides, read_slide_map

    opt = options or ImportOptions()
    out = Path(out)
    if isinstance(omics, Mapping):
        om = {str(k): v for k, v in omics.items()}
    else:
        from histoviz.data.omics_import import guess_modality

        om = {}
        for p in omics:
            m = guess_modality(p)
            if m in om:
                raise ConfigError(f"{p}: a second {m!r} table ({om[m]}); name them, e.g. --omics {m}2={p}")
            om[m] = p
    paths = find_slides(slides)
    inputs = [str(p) for p in (*clinical, *om.values())] + [x for x in (opt.slide_map, features, spots) if x]
    for f in inputs:
        if not Path(f).exists():
            raise DataError(f"{f}: not found")
    fp = _fingerprint(opt, paths, inputs, out)
    _cleanup_stale(out)
    marker = out / "import.json"
    if marker.exists():
        try:
            old = json.loads(marker.read_text())
        except (OSError, ValueError):
            old = {}
        if old.get("fingerprint") == fp and all((out / f).exists() for f in old.get("files", [])):
            report = json.loads((out / "import_report.json").read_text())
            return ImportResult(out, report, unchanged=True)
        if not overwrite:
            raise ConfigError(f"{out}: holds a cohort imported from other inputs or options; use another --out, "
                              "or --overwrite to replace it (its features/ are kept)")
    elif out.exists() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"{out}: exists and is not an imported cohort folder; give an empty or new --out")

    smap = read_slide_map(opt.slide_map) if opt.slide_map else None
    table = identify_slides(paths, slide_map=smap, patient_regex=opt.patient_regex, source=", ".join(map(str, slides)))
    found = len(table)
    table, dropped = _filter_slides(table, opt)
    if table.empty:
        raise DataError(f"{', '.join(map(str, slides))}: all {found} slide(s) were dropped ("
                        + "; ".join(f"{k}: {len(v)}" for k, v in dropped.items())
                        + "); choose --sample-types / --slide-types that keep some")
    unreadable: dict[str, str] = {}
    if opt.check_slides:
        table, unreadable = _check_slides(table, (lambda d, n: progress("slides", d, n)) if progress else None)
        for sid in unreadable:
            dropped.setdefault("unreadable slide file (the errors are listed below)", []).append(sid)
        table = table[~table["slide_id"].isin(unreadable)].reset_index(drop=True)
        if table.empty:
            raise DataError(f"{', '.join(map(str, slides))}: no kept slide could be opened (e.g. "
                            f"{next(iter(unreadable.values()))})")
    clin = read_clinical(list(clinical), opt.clinical)
    cinfo: dict[str, Any] = {"files": clin.sources, "grades": clin.grades, "time_unit": clin.time_unit}
    if len(clin.patients):
        overlap = set(table["patient_id"]) & set(clin.patients.index)
        if not overlap:
            files = ", ".join(str(s["file"]) for s in clin.sources)
            raise DataError(f"{files}: none of its {len(clin.patients)} patients (e.g. {_some(clin.patients.index, 3)}) "
                            f"has a kept slide (patients of the slides, e.g. {_some(sorted(set(table['patient_id'])), 3)}); "
                            "check that the table is of the same project, or map slides to its patient ids with "
                            "--slide-map")
    table, match = _outcomes_for(table, clin)
    cinfo.update(match)
    samples_map = dict(zip(clin.samples["sample_id"].astype(str), clin.samples["patient_id"].astype(str)))
    if smap is not None:
        samples_map.update({s: p for s, p in zip(smap["sample_id"], smap["patient_id"]) if s})
    slides_meta = {"found": found, "dropped": dropped, "unreadable": unreadable}
    staging = out.with_name(f".{out.name}.importing-{os.getpid()}")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        report = _build(staging, out, table, om, clin, cinfo, samples_map, opt, features, spots,
                        slides_meta)
        report["inputs"] = {"slides": [str(Path(s).resolve()) for s in slides],
                            "clinical": [str(Path(c).resolve()) for c in clinical],
                            "omics": {str(k): str(Path(v).resolve()) for k, v in om.items()},
                            "slide_map": opt.slide_map, "features": str(features) if features else None,
                            "spots": str(spots) if spots else None}
        report["options"] = json.loads(json.dumps(asdict(opt), default=str))
        from histoviz.data.cohort_report import write_report

        write_report(staging, report)
        files = sorted(str(p.relative_to(staging)) for p in staging.rglob("*") if p.is_file()
                       and "features" not in p.relative_to(staging).parts[:1])
        (staging / "import.json").write_text(json.dumps({"fingerprint": fp, "format": IMPORT_FORMAT,
                                                         "histoviz_version": __version__, "files": files}, indent=1))
        _publish(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ImportResult(out, report)


def _publish(staging: Path, out: Path) -> None:
    """Swap the finished folder in; an existing folder's features/ move over when not re-linked."""
    if out.exists():
        for sub in ("features", "spot_features"):
            old, new = out / sub, staging / sub
            if old.is_dir():
                new.mkdir(exist_ok=True)
                for d in old.iterdir():
                    if not (new / d.name).exists():
                        os.replace(d, new / d.name)
        trash = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, trash)
        os.replace(staging, out)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging, out)


def _build(root: Path, final: Path, table: pd.DataFrame, om: Mapping[Any, Any], clin: Any, cinfo: dict[str, Any],
           samples_map: dict[str, str], opt: ImportOptions, features: Any, spots: Any,
           slides_info: dict[str, Any]) -> dict[str, Any]:
    from histoviz.data.cohort_configs import CohortLayout, render_config, task_configs
    from histoviz.data.omics_import import IdMatcher, import_omics_table

    patients = sorted(set(table["patient_id"].astype(str)))
    matcher = IdMatcher(patients, samples_map)
    slide_samples: dict[str, set[str]] = {}
    for p, s in table[["patient_id", "sample_id"]].itertuples(index=False):
        if s:
            slide_samples.setdefault(str(p), set()).add(str(s))
    keep_types = parse_sample_types(opt.sample_types)
    omics_info: dict[str, Any] = {}
    layout_omics: dict[str, dict[str, Any]] = {}
    (root / "omics").mkdir()
    for name, path in om.items():
        imp = import_omics_table(path, matcher, modality=name, keep_sample_types=keep_types,
                                 slide_samples=slide_samples)
        if imp.modality in omics_info:
            raise ConfigError(f"{path}: a second {imp.modality!r} table; name them, e.g. --omics "
                              f"{imp.modality}2={path}")
        imp.info["scale_detected"] = imp.info["scale"]
        imp.info["scale"] = opt.omics_scale.get(imp.modality, imp.info["scale"])
        dst = root / "omics" / f"{imp.modality}.h5ad"
        imp.adata.uns["histoviz_import"] = json.dumps(imp.info, default=str)
        imp.adata.write_h5ad(dst)
        omics_info[imp.modality] = imp.info
        layout_omics[imp.modality] = {"path": final / "omics" / dst.name, "scale": imp.info["scale"],
                                      "missing": imp.info["missing_values"] > 0}
    # ---- cohort table ----
    cols = ["slide_id", "patient_id", "sample_id", "path", "sample_type", "tissue", "slide_type", "slide_kind",
            "width", "height", "mpp", "time", "event", "grade"]
    extra = [c for c in table.columns if c.endswith(("_time", "_event")) and c not in cols]
    ct = table.reindex(columns=[c for c in cols if c in table.columns] + extra).copy()
    ct["path"] = [str(Path(p).resolve()) for p in ct["path"]]
    for c in ("event", *[c for c in extra if c.endswith("_event")]):
        if c in ct.columns:
            ct[c] = pd.to_numeric(ct[c], errors="coerce").astype("Int64")
    ct = ct.dropna(axis=1, how="all").sort_values(["patient_id", "slide_id"]).reset_index(drop=True)
    ct.to_csv(root / "cohort.csv", index=False)
    per_patient = ct.drop_duplicates("patient_id")
    # ---- features ----
    enc = opt.encoder
    feat_info: dict[str, Any] = {"encoder": enc, "made": "by histoviz train (data.embed)"}
    if features is not None:
        from histoviz.data.external_features import link_feature_folder

        feat_info = link_feature_folder(features, root / "features" / enc, ct, enc)
        feat_info["made"] = "elsewhere (linked, not copied)"
    # ---- configs ----
    grades = None
    if "grade" in ct.columns:
        present = set(per_patient["grade"].dropna().astype(str))
        grades = [c for c in opt.clinical.grade_classes if c in present]
        cinfo["grades"]["classes_present"] = grades
    surv = {"time", "event"} <= set(ct.columns)
    lay = CohortLayout(
        root=final, cohort=final / "cohort.csv", features=final / "features" / enc, encoder=enc,
        embed=features is None, omics=layout_omics, grade_classes=grades,
        grade_missing=bool(grades) and bool(per_patient["grade"].isna().any()),
        survival=surv, survival_missing=surv and bool(per_patient[["time", "event"]].isna().any(axis=None)),
        time_unit=clin.time_unit, spots=Path(spots).resolve() if spots else None,
    )
    (root / "configs").mkdir()
    written, skipped = {}, {}
    for task, cfg in task_configs(lay).items():
        if isinstance(cfg, str):
            skipped[task] = cfg
            continue
        (root / "configs" / f"{task}.yaml").write_text(render_config(cfg, cohort_name=final.name))
        written[task] = f"configs/{task}.yaml"
    # ---- counts ----
    ev = pd.to_numeric(per_patient.get("event", pd.Series(dtype=float)), errors="coerce")
    slides_info.update({
        "kept": int(len(ct)),
        "dropped": {k: {"n": len(v), "e.g.": _some(v)} for k, v in slides_info["dropped"].items()},
        "n_dropped": int(sum(len(v) for v in slides_info["dropped"].values())),
        "without_clinical_row": cinfo.pop("slides_without_clinical_row"),
        "by_id_source": {str(k): int(v) for k, v in table["id_source"].value_counts().items()},
        "no_mpp": sorted(ct.loc[ct["mpp"].isna(), "slide_id"].astype(str)) if "mpp" in ct.columns else [],
    })
    patients_info = {
        "n": int(ct["patient_id"].nunique()),
        "with_several_slides": int((ct.groupby("patient_id").size() > 1).sum()),
        "with_clinical_row": cinfo.pop("patients_with_clinical_row"),
        "clinical_without_slides": cinfo.pop("clinical_patients_without_slides"),
        "with_survival": int((per_patient[["time", "event"]].notna().all(axis=1)).sum()) if surv else 0,
        "events": int(ev.fillna(0).sum()) if surv else 0,
        "with_grade": int(per_patient["grade"].notna().sum()) if "grade" in ct.columns else 0,
    }
    cinfo.pop("patients_with_slides", None)
    return {"histoviz_version": __version__, "out": str(final), "slides": slides_info, "patients": patients_info,
            "clinical": cinfo, "omics": omics_info, "features": feat_info,
            "configs": {"written": written, "not_written": skipped}}


def _cleanup_stale(out: Path) -> None:
    """Remove staging folders of imports whose process is gone."""
    from histoviz._atomic import pid_alive

    for p in out.parent.glob(f".{out.name}.importing-*"):
        with contextlib.suppress(ValueError):
            if not pid_alive(int(p.name.rsplit("-", 1)[1])):
                shutil.rmtree(p, ignore_errors=True)
