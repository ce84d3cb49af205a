"""The spatial step of ``histoviz demo``: spot-level models on the synthetic cohort's spots.

1. imports the shipped Visium sample (Space Ranger layout) as a HEST-style spot file, so napari
   shows its spots on the tissue (``demo_out/real/visium_mini.h5ad``);
2. trains CMRCNet with BLEEP, CPNN-spot, ridge (HEST protocol) and kNN beside it, plus the
   training-mean and shuffled controls, leave-one-sample-out over the synthetic spatial samples
   (``training/configs/st_cmrcnet.yaml`` with the overrides of
   :data:`histoviz.demo.configs.SPOT_RUN`: smaller for two CPU cores), and prints the model x
   gene-set table with paired differences;
3. predicts at the spots of one sample with the fold that held it out and writes the per-spot
   AnnData (measured beside predicted) for napari and the dashboard.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from histoviz.demo.configs import DemoContext

__all__ = ["run_spots"]


def run_spots(ctx: DemoContext, cohort: Any) -> None:
    """Steps 1-3 of the module docstring on ``cohort``'s spatial samples (fills ``ctx.res``:
    outputs, tables ``spots``, ``spots_mse`` and ``spots_paired``, numbers)."""
    from histoviz.data.spatial import load_spot_sample
    from histoviz.data.st_import import import_spaceranger
    from histoviz.datasets import sample_data_dir
    from histoviz.demo.configs import SPOT_RUN, demo_config, describe, record_run
    from histoviz.evaluation.spots import format_spot_table, paired_differences, spot_table
    from histoviz.io.predictions import write_predictions
    from histoviz.predict import predict_spots
    from histoviz.training.spots import run_spot_experiment

    t = time.perf_counter()
    res, echo, out = ctx.res, ctx.echo, ctx.out
    real = sample_data_dir()
    if real is not None and (real / "visium_mini").is_dir():
        p = import_spaceranger(real / "visium_mini", Path(out) / "real" / "visium_mini.h5ad")
        s = load_spot_sample(p)
        echo(f"  Visium sample (Space Ranger): {len(s)} spots x {len(s.genes)} genes, spot diameter "
             f"{s.spot_diameter_px:.1f} px on {Path(s.slide_path).name} ({s.mpp:.1f} um/px) -> {p}")
        res.outputs["visium_spots"] = p
    if not cohort.spatial:
        echo("  no synthetic spatial samples (spatial_fraction = 0); spot models skipped")
        return
    paths = {"data/synth": cohort.root}
    echo(f"  config: training/configs/ with data/synth/ -> {cohort.root}/")
    echo("    " + describe(SPOT_RUN))
    run_dir = Path(out) / "runs" / SPOT_RUN.name
    r = run_spot_experiment(demo_config(SPOT_RUN, paths), run_dir, progress=ctx.progress)
    record_run(res, SPOT_RUN, paths)
    n = r.metrics["fold"].nunique()
    echo(f"  spot models on {len(cohort.spatial)} synthetic samples, leave-one-sample-out ({n} folds) in "
         f"{time.perf_counter() - t:.0f} s -> {run_dir}")
    echo(format_spot_table(r.metrics))
    tab = spot_table(r.metrics)
    res.records("spots", tab)
    res.records("spots_mse", spot_table(r.metrics, metric="mse"))
    res.records("spots_paired", paired_differences(r.metrics, reference=str(tab["model"].iloc[0])))
    for row in tab.itertuples(index=False):
        res.numbers[f"spot_pearson_{row.model}_{row.subset}"] = round(float(row.mean), 4)
    res.outputs["run_spatial"] = run_dir
    sample = sorted(cohort.spatial)[0]
    a = predict_spots(cohort.spatial[sample], run_dir, progress=False)
    pth = write_predictions(a, Path(out) / "maps" / f"{sample}.spots.h5ad")
    echo(f"  held-out per-spot predictions of {sample} ({a.uns['spots']['checkpoint']}, which never saw it): "
         f"{a.n_obs} spots x {a.n_vars} genes, measured beside predicted -> {pth} (napari: open it; the dashboard's "
         "Spatial page shows the run)")
    res.outputs["pred_spots"] = pth
