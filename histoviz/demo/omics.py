"""Step 5 of ``histoviz demo``: the omics models, cross-validated on the "power" cohort.

Each model runs its own shipped config (:data:`histoviz.demo.configs.OMICS_RUNS`:
``multiomics.yaml``, ``stl.yaml``, ``cpnn.yaml``, ``ridge.yaml`` and a shuffled-label control)
with the YAML's ``data/synth/`` pointed at the cohort and the demo's features; prints the
held-out comparison table and the paired comparisons MTL vs STL and MTL vs ridge; writes
per-patch maps of a slide no model saw.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from histoviz.demo.configs import DemoContext

__all__ = ["run_omics", "slide_maps"]


def slide_maps(slide: Path, run_dir: Path, h5ad: Path, shown: str, png: Path) -> Any:
    """Predict ``slide`` with ``run_dir``, write the prediction file and an overlay of map
    ``shown``; returns the prediction AnnData."""
    from histoviz.io import open_slide
    from histoviz.io.predictions import write_predictions
    from histoviz.predict import predict_slide
    from histoviz.viz.overlay import save_overlay

    with open_slide(slide) as reader:
        a = predict_slide(reader, run_dir)
        write_predictions(a, h5ad)
        save_overlay(reader, a, shown, png)
    return a


def run_omics(ctx: DemoContext, cohort: Any, show: Any = None) -> None:
    """Train, compare (paired) and predict; fills ``ctx.res`` (outputs, tables ``omics``,
    ``paired`` and ``composition``, numbers).

    Parameters
    ----------
    ctx
        The demo run (output folder, result, features, printing).
    cohort
        :class:`~histoviz.data.synthetic.SyntheticCohort` the models are cross-validated on.
    show
        Another synthetic cohort whose first slide gets per-patch maps (a slide no model saw);
        default: the first slide of ``cohort``.
    """
    from histoviz._atomic import atomic_write_text
    from histoviz.demo.configs import OMICS_RUNS, train_runs
    from histoviz.evaluation.compare import compare_runs, format_table
    from histoviz.evaluation.paired import compare_paired
    from histoviz.training.composition import (
        composition_recovery,
        format_composition,
        has_composition_truth,
    )

    t = time.perf_counter()
    res, echo, runs_dir = ctx.res, ctx.echo, ctx.runs_dir
    dirs = train_runs(ctx, OMICS_RUNS, {"data/synth": cohort.root}, what="5-fold patient-level CV")
    table = compare_runs(dirs, topk=[50], criteria=["variance"])
    main = table[(table["subset"] == "all") & (table["axis"] == "per-target")
                 & table["metric"].isin(["pearson", "spearman"])]
    echo(f"[5/8] omics, held-out per-target Pearson (mean ± std over 5 folds), {time.perf_counter() - t:.0f} s:")
    echo(format_table(main))
    res.records("omics", table[table["axis"] == "per-target"])
    for _, row in main[main["metric"] == "pearson"].iterrows():
        res.numbers[f"pearson_{row['model']}_{row['task']}"] = round(float(row["mean"]), 4)
    echo("  paired comparisons (per-target Pearson; 95% CI: Nadeau-Bengio corrected resampled t over folds, "
         "which includes training variance):")
    for a_, b_ in (("mtl", "stl"), ("mtl", "ridge")):
        for r in compare_paired(runs_dir / a_, runs_dir / b_, metric="pearson", n_boot=300, seed=0):
            echo("    " + "\n    ".join(r.lines()))
            res.numbers[f"paired_{a_}_minus_{b_}_{r.task}"] = round(float(r.difference), 4)
            res.records("paired", [r.row()])
    res.outputs["comparison"] = atomic_write_text(runs_dir / "comparison.csv", table.to_csv(index=False))
    for d in dirs:
        if has_composition_truth(d):
            comp = composition_recovery(d)
            echo(f"  {d.name}: composition recovery on held-out slides vs the synthetic truth (mean over folds; "
                 "the supervised ridge is the ceiling of these features):")
            echo("    " + "\n    ".join(format_composition(comp).splitlines()))
            res.records("composition", comp.assign(run=d.name))

    src = show if show is not None else cohort
    slide_id = src.slide_ids[0]
    maps = Path(ctx.out) / "maps"
    for name, shown in (("mtl", "gene:MKI67"), ("cpnn", "cell_type:lymphocyte")):
        p, png = maps / f"{slide_id}.{name}.h5ad", maps / f"{slide_id}.{name}.png"
        a = slide_maps(src.slides[slide_id], runs_dir / name, p, shown, png)
        keys = [k for k in a.obs.columns if k not in ("x", "y", "slide_id")] + [k for k in a.obsm if k != "spatial"]
        echo(f"  per-patch maps of {slide_id} (a slide no model saw) with {name}: {a.n_obs} patches x {a.n_vars} "
             f"genes ({', '.join(keys)}) -> {p}; {shown} over the slide -> {png}")
        res.outputs[f"pred_{name}"] = p
        res.outputs[f"overlay_{name}"] = png
