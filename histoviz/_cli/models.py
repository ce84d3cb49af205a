"""``histoviz train | evaluate | compare | predict | models``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add the model subcommands."""
    p = sub.add_parser("train", help="patient-level K-fold cross-validation of a model config (spot configs: "
                       "leave-one-sample-out)")
    p.add_argument("config", help="experiment YAML (training/configs/*.yaml)")
    p.add_argument("--out", required=True, type=Path, help="run directory")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set training.epochs=20 (repeatable)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_train)

    p = sub.add_parser("evaluate", help="one comparison table over run directories")
    p.add_argument("runs", nargs="+", type=Path, help="run directories written by histoviz train")
    p.add_argument("--topk", type=int, nargs="*", default=[50, 500], help="top-k subset sizes")
    p.add_argument("--criteria", nargs="*", default=["variance", "mean"], choices=["variance", "mean"],
                   help="training-data criteria for top-k subsets")
    p.add_argument("--no-best-predicted", action="store_true",
                   help="leave out the optimistic 'k best-predicted targets' rows")
    p.add_argument("--all-rows", action="store_true", help="print every subset (default: main rows)")
    p.add_argument("--out", type=Path, default=None, help="also write the table (.csv or .parquet)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--panel", action="append", default=[], metavar="NAME|FILE",
                   help="a gene panel to summarise (pam50 is shipped; or a file of symbols); repeatable")
    p.add_argument("--survival-association", action="store_true",
                   help="log-rank of median splits of every predicted target (BH-adjusted), as the multi-omics paper")
    p.add_argument("--no-composition", action="store_true",
                   help="skip the composition-recovery report of cell-type models on synthetic cohorts")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("compare", help="paired comparison of two runs on the same folds (difference, "
                       "bootstrap interval, fold win rate, Wilcoxon, verdict)")
    p.add_argument("run_a", type=Path, help="run directory A")
    p.add_argument("run_b", type=Path, help="run directory B")
    p.add_argument("--metric", default=None, help="pearson | spearman | auc_macro | auc_micro | balanced_accuracy | "
                   "accuracy | c_index (default: each task's primary metric)")
    p.add_argument("--task", default=None, help="one block, e.g. gene or grade (default: every shared one)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates (0: no interval)")
    p.add_argument("--confidence", type=float, default=0.95)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_compare)

    p = sub.add_parser("predict", help="per-patch molecular maps of one slide, or of every slide of a folder or "
                       "cohort table (.h5ad per slide + a table of slide-level predictions)")
    p.add_argument("--model", required=True, type=Path, action="append",
                   help="run directory (or checkpoint folder); repeat it to predict a folder with several runs")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--slides", help="a folder tree of slides (GDC layout too) or a cohort table: one prediction "
                     "file per slide and run, predictions.csv (grade with its conformal set, risk with its interval, "
                     "--genes), a report; resumable, failed slides reported and skipped")
    src.add_argument("--slide", help="slide file (tiled and embedded with the run's encoder); with a spot-level "
                     "run, a spot file (.h5ad) predicts at its spots and a slide on a grid of tiles")
    src.add_argument("--features", type=Path, help="an existing <slide_id>.h5 feature bag")
    src.add_argument("--spots", type=Path, help="a spot file (histoviz st-import / HEST-style .h5ad): predict "
                     "at its spots with a spot-level run")
    p.add_argument("--out", required=True, help="output .h5ad, or a folder (ending in / or existing) to write "
                   "<slide_id>.<run>.h5ad into")
    p.add_argument("--fold", default=None, help="final (default when present), ensemble or a fold number")
    p.add_argument("--mpp-override", type=float, default=None,
                   help="the slide's microns per pixel when the file does not record it")
    p.add_argument("--overlap", type=float, default=None,
                   help="tile overlap 0-0.9 (e.g. 0.5: stride half the tile): a finer map in napari, more tiles")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--genes", nargs="+", default=[], metavar="GENE",
                   help="with --slides: predicted targets to put in predictions.csv")
    p.add_argument("--overwrite", action="store_true",
                   help="with --slides: replace predictions another model made under the same run name")
    p.add_argument("--thumbnail-size", type=int, default=2000, metavar="PX",
                   help="with --slides: longest side of the slide thumbnail in each file's uns['spatial'] "
                   "(Space Ranger: 2000; 0: none)")
    p.set_defaults(func=_predict)

    p = sub.add_parser("models", help="registered slide-level models")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_models)


def _train(a: argparse.Namespace) -> int:
    from histoviz.evaluation.compare import format_table, main_rows
    from histoviz.io.rundir import check_run_out
    from histoviz.training.config import load_config
    from histoviz.training.runner import run_experiment

    cfg = load_config(a.config, overrides=a.overrides)
    check_run_out(a.out)
    if cfg.data.spots is not None:
        from histoviz.evaluation.spots import format_spot_table
        from histoviz.training.spots import run_spot_experiment

        res = run_spot_experiment(cfg, a.out, progress=not a.no_progress)
        print(format_spot_table(res.metrics))
        print(f"{cfg.name}: leave-one-out over {res.metrics['fold'].nunique()} held-out samples, "
              f"{res.selection.get('seconds', 0):.1f} s -> {a.out}")
        return 0
    res = run_experiment(cfg, a.out, progress=not a.no_progress)
    print(format_table(main_rows(res.summary)))
    print(f"{cfg.name}: {res.selection.get('seconds', 0):.1f} s -> {a.out}")
    return 0


def _evaluate(a: argparse.Namespace) -> int:
    from histoviz.errors import ConfigError
    from histoviz.evaluation.association import read_panel
    from histoviz.evaluation.compare import compare_runs, format_table, main_rows
    from histoviz.evaluation.report import outcome_report
    from histoviz.io.rundir import RunDir

    spot_runs = [r for r in a.runs if RunDir(r).info.get("level") == "spot"]
    if spot_runs:
        _evaluate_spots(spot_runs, a)
        a.runs = [r for r in a.runs if r not in spot_runs]
        if not a.runs:
            return 0
    panels = dict(read_panel(p) for p in a.panel)
    df = compare_runs(a.runs, topk=a.topk, criteria=a.criteria, best_predicted=not a.no_best_predicted,
                      panels=panels)
    if a.out is not None:
        if a.out.is_dir() or str(a.out).endswith(("/", "\\")):
            raise ConfigError(f"--out {a.out}: is a directory; give a file name ending in .csv or .parquet")
        from histoviz._atomic import atomic_path

        with atomic_path(a.out) as tmp:
            if a.out.suffix == ".parquet":
                df.to_parquet(tmp, index=False)
            else:
                df.to_csv(tmp, index=False)
    if a.json:
        print(json.dumps(json.loads(df.to_json(orient="records")), indent=1))
        return 0
    shown = df if a.all_rows else main_rows(df, topk=a.topk)
    print(format_table(shown))
    for line in outcome_report(a.runs):
        print(line)
    for name in panels:
        sel = df[df["subset"] == f"panel:{name}"]["selection"]
        print(f"panel {name}: " + (sel.iloc[0] if len(sel) else "none of its genes is a target of these runs"))
    if a.survival_association:
        _print_association(a.runs)
    if not a.no_composition:
        from histoviz.training.composition import (
            composition_recovery,
            format_composition,
            has_composition_truth,
        )

        for d in a.runs:
            if has_composition_truth(d):
                print(f"{d}: composition recovery on held-out slides vs the synthetic truth (mean over folds; "
                      "pearson across patches, TV distance per patch), beside a supervised ridge ceiling:")
                print(format_composition(composition_recovery(d)))
    return 0


def _evaluate_spots(runs: list[Path], a: argparse.Namespace) -> None:
    """Model x gene-set table (and paired differences) of spot-level runs."""
    import pandas as pd

    from histoviz.errors import ConfigError
    from histoviz.evaluation.spots import format_spot_table, spot_table
    from histoviz.io.rundir import RunDir

    parts, seen = [], {}
    for r in runs:
        rd = RunDir(r)
        m = rd.metrics().copy()
        m["model"] = m["model"].astype(str)
        for lab in m["model"].unique():
            if lab in seen and seen[lab] != rd.name:
                m.loc[m["model"] == lab, "model"] = f"{rd.name}:{lab}"
            seen.setdefault(lab, rd.name)
        parts.append(m)
    metrics = pd.concat(parts, ignore_index=True)
    if a.out is not None:
        if a.out.is_dir() or str(a.out).endswith(("/", "\\")):
            raise ConfigError(f"--out {a.out}: is a directory; give a file name ending in .csv or .parquet")
        from histoviz._atomic import atomic_path

        tab = pd.concat([spot_table(metrics, metric=k) for k in ("pearson", "spearman", "mse")], ignore_index=True)
        with atomic_path(a.out) as tmp:
            tab.to_parquet(tmp, index=False) if a.out.suffix == ".parquet" else tab.to_csv(tmp, index=False)
    if a.json:
        tab = pd.concat([spot_table(metrics, metric=k) for k in ("pearson", "spearman", "mse")], ignore_index=True)
        print(json.dumps(json.loads(tab.to_json(orient="records")), indent=1))
        return
    print(format_spot_table(metrics))


def _compare(a: argparse.Namespace) -> int:
    from histoviz.errors import ConfigError
    from histoviz.evaluation.paired import compare_paired

    if a.n_boot < 0 or not 0 < a.confidence < 1:
        raise ConfigError(f"--n-boot must be >= 0 and --confidence in (0, 1), got {a.n_boot} and {a.confidence}")
    res = compare_paired(a.run_a, a.run_b, metric=a.metric, task=a.task, n_boot=a.n_boot,
                         confidence=a.confidence, seed=a.seed)
    if a.json:
        rows = [{**{k: (None if isinstance(v, float) and v != v else v) for k, v in r.row().items()},
                 "notes": r.notes, "only_a": r.only_a, "only_b": r.only_b} for r in res]
        print(json.dumps(rows, indent=1, default=float))
        return 0
    for r in res:
        print("\n".join(r.lines()))
    return 0


def _predict(a: argparse.Namespace) -> int:
    from histoviz._atomic import check_writable, refuse_input_as_output
    from histoviz._cli.cohort import is_batch, predict_many
    from histoviz.errors import ConfigError
    from histoviz.io.predictions import write_predictions
    from histoviz.predict import predict_bag, predict_slide

    if is_batch(a):
        return predict_many(a)
    if len(a.model) > 1:
        raise ConfigError("several --model runs predict a folder or cohort table (--slides); give one for a slide")
    a.model = a.model[0]
    out = Path(a.out)
    to_folder = out.is_dir() or str(a.out).endswith(("/", os.sep))
    refuse_input_as_output(out, a.slide, a.features, a.spots)
    check_writable(out if to_folder else out.parent)  # before the work, not after it
    fold = a.fold
    if fold is not None and fold not in ("final", "ensemble"):
        try:
            fold = int(fold)
        except ValueError:
            raise ConfigError(f"--fold {fold!r}: use final, ensemble or a fold number") from None
    spots = a.spots or (Path(a.slide) if a.slide and str(a.slide).endswith(".h5ad") else None)
    if spots is not None:
        from histoviz.predict import predict_spots

        adata = predict_spots(spots, a.model, fold=fold, device=a.device, progress=not a.no_progress)
    elif a.features is not None:
        from histoviz.io.featurebag import FeatureBag

        bag = FeatureBag.from_h5(a.features)
        bag.attrs["_path"] = str(a.features)  # named in errors
        adata = predict_bag(bag, a.model, fold=fold, device=a.device)
    else:
        adata = predict_slide(a.slide, a.model, device=a.device, progress=not a.no_progress, fold=fold,
                              mpp_override=a.mpp_override, overlap=a.overlap)
    if to_folder:
        out = out / f"{adata.uns['histoviz']['slide_id']}.{Path(a.model).resolve().name}.h5ad"
    out = write_predictions(adata, out)
    keys = [k for k in adata.obs.columns if k not in ("x", "y", "slide_id")] + [k for k in adata.obsm if k != "spatial"]
    unit = "spots" if "spots" in adata.uns else "patches"
    extra = f", checkpoint {adata.uns['spots']['checkpoint']}" if unit == "spots" else ""
    print(f"{adata.uns['histoviz']['slide_id']}: {adata.n_obs} {unit} x {adata.n_vars} targets "
          f"({', '.join(keys)}{extra}) -> {out}")
    from histoviz.viz.summary import slide_predictions

    for row in slide_predictions(adata):
        print(f"  slide {row['line']}")
    from histoviz.provenance import prediction_warning

    warning = prediction_warning(adata, slide_path=a.slide if a.slide else None)
    if warning:
        print(f"histoviz predict: warning: {warning}", file=sys.stderr)
    return 0


def _models(a: argparse.Namespace) -> int:
    from histoviz.models import list_models

    rows = [{"name": i.name, "class": i.cls.__name__, "tasks": list(i.tasks), "defaults": i.defaults,
             "description": i.description} for i in list_models()]
    if a.json:
        print(json.dumps(rows, indent=1, default=str))
        return 0
    w = max(len(r["name"]) for r in rows)
    for r in rows:
        print(f"{r['name']:<{w}}  {'+'.join(r['tasks']):<37}  {r['description']}")
    return 0


def _print_association(runs: list[Path]) -> None:
    import pandas as pd

    from histoviz.data.cohort import read_cohort
    from histoviz.evaluation.association import survival_association
    from histoviz.io.rundir import RunDir

    for d in runs:
        run = RunDir(d)
        pr = run.predictions()
        cohort_path = (run.config.get("data") or {}).get("cohort")
        if pr is None or not cohort_path:
            print(f"{run.name}: no held-out regression predictions; survival association skipped")
            continue
        c = read_cohort(cohort_path)
        if not {"time", "event"} <= set(c.columns):
            print(f"{run.name}: the cohort table has no time / event columns; survival association skipped")
            continue
        res = survival_association(pr, c[["patient_id", "time", "event"]])
        n_sig = int((res["q_predicted"] < 0.05).sum())
        print(f"{run.name}: survival association of {len(res)} predicted targets (median split within folds, "
              f"log-rank, Benjamini-Hochberg): {n_sig} with q < 0.05; top 10:")
        with pd.option_context("display.width", 160):
            print(res.head(10).to_string(index=False, float_format=lambda v: f"{v:.3g}"))
