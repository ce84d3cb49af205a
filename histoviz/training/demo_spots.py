"""The spatial step of ``histoviz demo``: spot-level models on the synthetic cohort's spots.

1. imports the shipped Visium sample (Space Ranger layout) as a HEST-style spot file, so napari
   shows its spots on the tissue (``demo_out/real/visium_mini.h5ad``);
2. trains CMRCNet with BLEEP, CPNN-spot, ridge (HEST protocol) and kNN beside it, plus the
   training-mean and shuffled controls, leave-one-sample-out over the synthetic spatial samples
   (the configuration of ``training/configs/st_cmrcnet.yaml``, made smaller for two CPU cores:
   :func:`spot_demo_config`), and prints the model x gene-set table with paired differences;
3. predicts at the spots of one sample with the fold that held it out and writes the per-spot
   AnnData (measured beside predicted) for napari and the dashboard.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["run_spot_demo", "spot_demo_config"]


def spot_demo_config(cohort_root: Path, features: Path, **extra: Any) -> dict[str, Any]:
    """``st_cmrcnet.yaml`` on a synthetic cohort folder, sized for the demo (small network, one k,
    no final model: predictions use the fold that held the sample out)."""
    r = Path(cohort_root)
    cfg: dict[str, Any] = {
        "name": "cmrcnet",
        "seed": 0,
        "data": {"spots": {
            "samples": str(r / "spatial"), "features": str(features), "encoder": "morphology",
            "patch": {"size_um": 112, "mpp": 0.5}, "target_sum": 10000, "n_genes": 1000,
            "markers": ["MKI67", "COL1A1", "PTPRC", "CD68", "EPCAM", "PECAM1"]}},
        "model": {"name": "cmrcnet", "params": {"dim": 32, "n_image_tokens": 4, "n_gene_tokens": 4,
                                                 "cross_heads": 4, "fusion_heads": 4}},
        "training": {"epochs": 15, "lr": 1e-3, "weight_decay": 1e-3, "batch_size": 64, "patience": 5,
                     "val_fraction": 0.2, "final_model": False},
        "evaluation": {"spots": {
            "top_k": [50],
            "compare": [
                {"name": "bleep", "params": {"dim": 32, "n_image_tokens": 4}},
                {"name": "cpnn-spot", "params": {"reference": str(r / "reference_sc.h5ad"), "hidden": 64},
                 "label": "cpnn-spot"},
                "ridge", "knn-spot"],
            "controls": ["mean", "shuffled"]}},
    }
    cfg.update(extra)
    return cfg


def run_spot_demo(cohort: Any, out: Path, res: Any, *, echo: Callable[[str], None] = print,
                  progress: bool = True) -> None:
    """Steps 1-3 of the module docstring (fills ``res.outputs`` and ``res.numbers``)."""
    from histoviz.data.spatial import load_spot_sample
    from histoviz.data.st_import import import_spaceranger
    from histoviz.datasets import sample_data_dir
    from histoviz.evaluation.spots import format_spot_table, spot_table
    from histoviz.io.predictions import write_predictions
    from histoviz.predict import predict_spots
    from histoviz.training.config import load_config
    from histoviz.training.spots import run_spot_experiment

    t = time.perf_counter()
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
    cfg = load_config(spot_demo_config(cohort.root, Path(cohort.root) / "spot_features"))
    run_dir = Path(out) / "runs" / "spatial"
    r = run_spot_experiment(cfg, run_dir, progress=progress)
    n = r.metrics["fold"].nunique()
    echo(f"  spot models on {len(cohort.spatial)} synthetic samples, leave-one-sample-out ({n} folds) in "
         f"{time.perf_counter() - t:.0f} s -> {run_dir}")
    echo(format_spot_table(r.metrics))
    tab = spot_table(r.metrics)
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
