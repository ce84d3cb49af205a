"""``histoviz import``: a cohort folder from downloaded slides, clinical and omics tables."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``import`` subcommand."""
    p = sub.add_parser(
        "import", help="build a cohort folder (table, omics .h5ad, ready configs, report) from downloaded slides "
        "(any tree, GDC layout), clinical tables (cBioPortal, GDC, any CSV/TSV) and omics tables (Xena, cBioPortal)")
    p.add_argument("--slides", nargs="+", required=True, metavar="DIR", help="folders (or files) holding the slides")
    p.add_argument("--out", required=True, type=Path, help="the cohort folder to write")
    p.add_argument("--clinical", nargs="+", default=[], metavar="FILE",
                   help="cBioPortal data_clinical_patient/sample.txt, GDC clinical.tsv, or any CSV/TSV "
                   "(with --patient-column, --time-column, --event-column, --time-unit)")
    p.add_argument("--omics", nargs="+", default=[], metavar="[NAME=]FILE",
                   help="Xena matrices, cBioPortal data_mrna_seq_v2_rsem.txt / data_rppa.txt / miRNA tables, or "
                   "samples x targets / targets x samples CSV, TSV, parquet, h5ad (modality from the file name "
                   "unless NAME= is given)")
    g = p.add_argument_group("which slides")
    g.add_argument("--sample-types", default="tumour",
                   help="TCGA sample types kept: tumour (01-09, default), normal, primary, metastasis, all, or codes 01,06")
    g.add_argument("--slide-types", default="diagnostic",
                   help="TCGA slide types kept: diagnostic (DX, default), frozen (TS, BS, MS), all")
    g.add_argument("--slide-map", default=None, metavar="TABLE",
                   help="slide -> patient table for names that are not TCGA barcodes (a GDC sample sheet, or "
                   "columns file, patient_id[, sample_id])")
    g.add_argument("--patient-regex", default=None, metavar="RE",
                   help="regex on slide file names with a group for the patient, e.g. '^(P\\d+)_'")
    g.add_argument("--no-check-slides", action="store_true",
                   help="do not open the slides (size, resolution, readability) during the import")
    c = p.add_argument_group("clinical columns (plain tables)")
    c.add_argument("--patient-column", default=None)
    c.add_argument("--time-column", default=None)
    c.add_argument("--event-column", default=None)
    c.add_argument("--grade-column", default=None)
    c.add_argument("--time-unit", default=None, choices=["days", "weeks", "months", "years"],
                   help="unit of --time-column (required with it); times are stored in months")
    c.add_argument("--event-values", nargs="+", default=[], metavar="STRING=0|1",
                   help="status strings and their meaning beyond the known ones (1 = event, 0 = censored)")
    c.add_argument("--survival", default="os", choices=["os", "dfs", "pfs", "dss"],
                   help="which survival pair becomes time / event (default os; all found are kept as columns)")
    c.add_argument("--grade-classes", default="1,2,3,4", help="declared grade classes (default 1,2,3,4)")
    c.add_argument("--grade-map", nargs="+", default=[], metavar="STRING=CLASS",
                   help="grade strings beyond G1..G4 / Grade 2 / Grade II and their class")
    f = p.add_argument_group("features and spots")
    f.add_argument("--encoder", default=None,
                   help="encoder of the cohort's features (default efficientnet-lite0; with --features: its name, "
                   "e.g. uni_v1, read from a TRIDENT features_<name> folder when not given)")
    f.add_argument("--features", default=None, metavar="DIR",
                   help="a TRIDENT or CLAM feature folder to use as the cohort's features (linked, not copied)")
    f.add_argument("--spots", default=None, metavar="DIR", help="folder of spot files (histoviz st-import)")
    p.add_argument("--omics-scale", nargs="+", default=[], metavar="NAME=log|counts|linear",
                   help="override the detected value scale of a modality")
    p.add_argument("--overwrite", action="store_true", help="replace a cohort folder imported from other inputs")
    p.add_argument("--json", action="store_true", help="print the import report as JSON")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_import)


def _pairs(items: list[str], flag: str) -> dict[str, str]:
    from histoviz.errors import ConfigError

    out = {}
    for it in items:
        if "=" not in it:
            raise ConfigError(f"{flag} {it!r}: expected KEY=VALUE")
        k, v = it.rsplit("=", 1)
        out[k.strip()] = v.strip()
    return out


def _import(a: argparse.Namespace) -> int:
    from histoviz.data.clinical import ClinicalOptions
    from histoviz.data.cohort_import import ImportOptions, import_cohort
    from histoviz.errors import ConfigError

    events = _pairs(a.event_values, "--event-values")
    bad = {k: v for k, v in events.items() if v not in ("0", "1")}
    if bad:
        raise ConfigError(f"--event-values {bad}: each status means 1 (event) or 0 (censored)")
    clin = ClinicalOptions(
        patient_column=a.patient_column, time_column=a.time_column, event_column=a.event_column,
        grade_column=a.grade_column, time_unit=a.time_unit, event_values={k: int(v) for k, v in events.items()},
        grade_classes=tuple(x.strip() for x in a.grade_classes.split(",") if x.strip()),
        grade_map=_pairs(a.grade_map, "--grade-map"), survival=a.survival,
    )
    encoder = a.encoder
    if a.features and not encoder:
        from histoviz.data.external_features import encoder_from_folder, feature_files

        encoder = encoder_from_folder(feature_files(a.features)[0])
        if not encoder:
            raise ConfigError(f"--features {a.features}: name the encoder that made these features with --encoder "
                              "(e.g. uni_v1, conch_v15, resnet50)")
    opt = ImportOptions(sample_types=a.sample_types, slide_types=a.slide_types, slide_map=a.slide_map,
                        patient_regex=a.patient_regex, clinical=clin, encoder=encoder or "efficientnet-lite0",
                        check_slides=not a.no_check_slides, omics_scale=_pairs(a.omics_scale, "--omics-scale"))
    omics = _pairs([o for o in a.omics if "=" in o], "--omics")
    plain = [o for o in a.omics if "=" not in o]
    if plain:
        from histoviz.data.omics_import import guess_modality

        for o in plain:
            m = guess_modality(o)
            if m in omics:
                raise ConfigError(f"--omics {o}: a second {m!r} table; name them, e.g. --omics {m}2={o}")
            omics[m] = o
    progress = None
    if not a.no_progress and sys.stderr.isatty():
        def progress(stage: str, done: int, total: int) -> None:
            sys.stderr.write(f"\rimport: checking {stage} {done}/{total}")
            if done == total:
                sys.stderr.write("\n")
            sys.stderr.flush()
    res = import_cohort(a.out, slides=a.slides, clinical=a.clinical, omics=omics, features=a.features,
                        spots=a.spots, options=opt, overwrite=a.overwrite, progress=progress)
    if a.json:
        print(json.dumps(res.report, indent=1, default=str))
        return 0
    print(res.summary())
    if not res.unchanged:
        _check_configs(res.configs)
    return 0


def _check_configs(configs: dict[str, Path]) -> None:
    """Run each written config's checks (the same as ``histoviz train`` runs first) and say the result."""
    from histoviz.errors import HistovizError
    from histoviz.training.config import load_config
    from histoviz.training.preflight import preflight

    for task, path in configs.items():
        try:
            cfg = load_config(path)
            if cfg.data.spots is None:
                preflight(cfg)
            print(f"  {task}: ready")
        except HistovizError as e:
            print(f"  {task}: not ready as shipped: {e}")


def is_batch(a: argparse.Namespace) -> bool:
    """``histoviz predict`` over many slides: --slides, or --slide / --features naming a folder or a table."""
    if getattr(a, "slides", None):
        return True
    for x in (a.slide, a.features):
        if x is not None and (Path(x).is_dir() and not str(x).endswith(".h5ad")
                              or Path(x).suffix.lower() in (".csv", ".tsv", ".parquet")):
            return True
    return False


def predict_many(a: argparse.Namespace) -> int:
    """``histoviz predict --slides FOLDER|TABLE --model RUN [--model RUN ...] --out DIR``."""
    from histoviz.errors import ConfigError
    from histoviz.predict_cohort import predict_cohort

    source = a.slides or a.slide or a.features
    features = a.features if a.features is not None and source != a.features else None
    if str(a.out).endswith(".h5ad"):
        raise ConfigError(f"--out {a.out}: predicting many slides writes a folder; give a folder name")
    fold = a.fold
    if fold is not None and fold not in ("final", "ensemble"):
        try:
            fold = int(fold)
        except ValueError:
            raise ConfigError(f"--fold {fold!r}: use final, ensemble or a fold number") from None
    res = predict_cohort(source, a.model, a.out, features=features, genes=a.genes, fold=fold, device=a.device,
                         mpp_override=a.mpp_override, overwrite=a.overwrite, progress=not a.no_progress,
                         spatial_image=a.thumbnail_size)
    print(res.summary())
    return 3 if res.failed else 0
