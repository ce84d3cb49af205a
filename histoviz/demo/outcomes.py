"""Step 6 of ``histoviz demo``: grade and survival, then a small PathGen.

:func:`run_outcomes`: the joint ABMIL grade + survival model (``grade_survival.yaml``), the PCA
+ logistic / Cox baselines (``outcome_baselines.yaml``) and a shuffled control, with
split-conformal calibration; AUC, c-index, coverage, the outcome report and per-patch grade, risk
and uncertainty maps of a slide no model saw. :func:`run_pathgen`: ``pathgen.yaml`` in its three
settings, CPU-sized (:data:`histoviz.demo.configs.PATHGEN_RUNS` says how), on the same slides
regenerated with gene groups and a hidden factor.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from histoviz.demo.configs import DemoContext

__all__ = ["run_outcomes", "run_pathgen"]

_OUTCOME_METRICS = ["auc_macro", "balanced_accuracy", "c_index", "c_index_uno", "coverage", "set_size", "lower_bound",
                    "interval_width"]


def run_outcomes(ctx: DemoContext, cohort: Any, show: Any = None) -> None:
    """Grade and survival (see the module docstring) on ``cohort``, maps of the first slide of
    ``show`` (default ``cohort``); fills ``ctx.res`` (table ``outcomes``)."""
    from histoviz.demo.configs import OUTCOME_RUNS, train_runs
    from histoviz.demo.omics import slide_maps
    from histoviz.evaluation.compare import compare_runs, format_table
    from histoviz.evaluation.report import outcome_report
    from histoviz.viz.summary import slide_prediction_sentence

    t = time.perf_counter()
    res, echo, runs_dir, out = ctx.res, ctx.echo, ctx.runs_dir, ctx.out
    dirs = train_runs(ctx, OUTCOME_RUNS, {"data/outcomes": cohort.root},
                      what="5-fold patient-level CV + 20% calibration split")
    table = compare_runs(dirs, topk=[])
    main = table[(table["subset"] == "all") & (table["axis"] == "per-target") & table["metric"].isin(_OUTCOME_METRICS)]
    echo(f"[6/8] grade and survival, held-out (mean ± std over 5 folds; conformal alpha 0.1), "
         f"{time.perf_counter() - t:.0f} s:")
    echo(format_table(main))
    res.records("outcomes", main)
    for line in outcome_report(dirs[:2]):
        echo("  " + line)
    for _, row in main.iterrows():
        res.numbers[f"{row['metric']}_{row['model']}_{row['task']}"] = round(float(row["mean"]), 4)
    src = show if show is not None else cohort
    slide_id = src.slide_ids[0]
    p, png = Path(out) / "maps" / f"{slide_id}.outcomes.h5ad", Path(out) / "maps" / f"{slide_id}.risk.png"
    a = slide_maps(src.slides[slide_id], runs_dir / "abmil-grade-survival", p, "risk", png)
    sp = a.uns["slide_prediction"]
    echo(f"  per-patch grade, risk and conformal uncertainty of {slide_id}: {a.n_obs} patches -> {p}; risk map -> {png}")
    for block in ("grade", "survival"):
        echo(f"  slide {slide_id}: {slide_prediction_sentence(block, sp[block])}")
    res.outputs["pred_outcomes"] = p
    res.outputs["overlay_risk"] = png


def run_pathgen(ctx: DemoContext, outcome_cohort: Any) -> None:
    """A small PathGen on the outcome cohort's slides with gene groups: the cohort regenerated with
    ``gene_groups=True, hidden_factor=1`` (same pixels, so the outcome cohort's bags are reused),
    the three settings on the same 3 folds, the settings table with paired differences, the
    synthesis against the training mean, and the maps of one slide (per-patch risk, co-attention)."""
    from dataclasses import asdict

    from histoviz.data.synthetic import make_synthetic_cohort
    from histoviz.demo.configs import PATHGEN_RUNS, train_runs
    from histoviz.evaluation.pathgen import pathgen_report
    from histoviz.io import open_slide
    from histoviz.io.featurebag import FeatureBag
    from histoviz.io.predictions import write_predictions
    from histoviz.predict import predict_bag
    from histoviz.viz.overlay import save_overlay

    t = time.perf_counter()
    res, echo, runs_dir, out = ctx.res, ctx.echo, ctx.runs_dir, ctx.out
    cfg = {**asdict(outcome_cohort.config), "gene_groups": True, "hidden_factor": 1.0}
    pc = make_synthetic_cohort(Path(out) / "pathgen", **cfg, progress=ctx.progress)
    dirs = train_runs(ctx, PATHGEN_RUNS, {"data/pathgen": pc.root}, what="3-fold patient-level CV + 20% calibration")
    echo(f"  PathGen on {pc.root} (six gene groups; a hidden factor shifts grade, survival and two groups), "
         f"{time.perf_counter() - t:.0f} s:")
    lines = pathgen_report(dirs)
    for line in lines:
        echo("  " + line)
    res.records("pathgen_report", [{"line": line} for line in lines])
    slide_id = pc.slide_ids[0]
    a = predict_bag(FeatureBag.from_h5(Path(ctx.features) / f"{slide_id}.h5"), runs_dir / "pathgen-synthetic")
    p = write_predictions(a, Path(out) / "maps" / f"{slide_id}.pathgen.h5ad")
    top = str(a.obsm["coattention"].columns[1])
    with open_slide(pc.slides[slide_id]) as reader:
        png = save_overlay(reader, a, f"coattention:{top}", Path(out) / "maps" / f"{slide_id}.coattention.png")
    echo(f"  PathGen maps of {slide_id}: per-patch grade / risk, synthesised gene groups ({a.n_vars} genes) and "
         f"co-attention of {a.obsm['coattention'].shape[1]} groups -> {p}; {top} co-attention -> {png}")
    res.outputs["pred_pathgen"] = p
    res.outputs["overlay_coattention"] = png
