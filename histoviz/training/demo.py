"""Step 5 of ``histoviz demo``: cross-validate the slide-level models on the synthetic cohort.

Trains (patient-level 5-fold CV, early stopping on validation patients of the training folds)
the multi-task ABMIL model, CPNN, the mean-pool ridge baseline and a shuffled-label control;
prints the comparison table; writes per-patch prediction maps of one slide with each of the
multi-task and CPNN models. Then grade and survival (:func:`train_outcome_models`) and a small
PathGen in its three settings (:func:`train_pathgen_models`). The configurations are those of ``training/configs/`` with the
demo's paths (:func:`demo_config`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["demo_config", "outcome_config", "pathgen_config", "train_demo_models", "train_outcome_models",
           "train_pathgen_models"]


def demo_config(name: str, model: str, cohort_root: Path, features: Path, **extra: Any) -> dict[str, Any]:
    """The experiment config of ``training/configs/<model>.yaml`` on a synthetic cohort folder."""
    r = Path(cohort_root)
    omics = {
        "gene": {"path": str(r / "omics/gene.h5ad"), "normalize": "total", "transform": "log10p1",
                 "drop_median_zero": True, "standardize": True},
        "protein": {"path": str(r / "omics/protein.h5ad"), "impute": "median", "standardize": True},
        "mirna": {"path": str(r / "omics/mirna.h5ad"), "drop_median_zero": True, "standardize": True},
        "pathway": {"path": str(r / "omics/pathway.h5ad"), "standardize": True},
    }
    params: dict[str, Any] = {}
    training: dict[str, Any] = {"epochs": 100, "patience": 15, "val_fraction": 0.2, "final_model": True}
    if model in ("multiomics", "multiomics-stl"):
        params = {"embed_dim": 128, "attn_dim": 64, "hidden": 512, "loss_reduction": "mean"}
    elif model == "cpnn":
        params = {"reference": str(r / "reference_sc.h5ad"), "label_key": "cell_type", "loss": "nb"}
        training.update(epochs=600, patience=20, grad_clip=0.5, lr=5e-3, lr_schedule="plateau")
        omics = {"gene": omics["gene"]}
    training.update(extra.pop("training", {}))
    return {
        "name": name,
        "seed": 0,
        "data": {"cohort": str(r / "cohort.csv"), "features": str(features), "omics": omics},
        "model": {"name": model, "params": params},
        "training": training,
        "evaluation": {"n_folds": 5, "topk": [50], "topk_criteria": ["variance"]},
        **extra,
    }


def train_demo_models(
    cohort: Any,
    features: Path,
    out: Path,
    res: Any,
    *,
    echo: Callable[[str], None] = print,
    progress: bool = True,
    show: Any = None,
) -> None:
    """Train, compare (paired) and predict (fills ``res.outputs`` and ``res.numbers``).

    Parameters
    ----------
    cohort
        :class:`~histoviz.data.synthetic.SyntheticCohort` the models are cross-validated on.
    features
        Folder of its ``<slide_id>.h5`` bags (their encoder is the models' encoder).
    out
        Demo output folder (runs go to ``out/runs/<name>``).
    res
        The demo's result object (``outputs`` and ``numbers`` dicts).
    echo, progress
        Printing and progress bars.
    show
        Another synthetic cohort whose first slide gets per-patch maps (a slide no model saw);
        default: the first slide of ``cohort``.
    """
    from histoviz.evaluation.compare import compare_runs, format_table
    from histoviz.evaluation.paired import compare_paired
    from histoviz.io.predictions import write_predictions
    from histoviz.predict import predict_slide
    from histoviz.training.config import load_config
    from histoviz.training.runner import run_experiment

    t = time.perf_counter()
    runs_dir = Path(out) / "runs"
    specs = [
        ("mtl", "multiomics", {}),
        ("stl", "multiomics-stl", {}),
        ("cpnn", "cpnn", {}),
        ("ridge", "ridge", {"training": {"val_fraction": 0.0}}),
        ("mtl-shuffled", "multiomics", {"training": {"shuffle_labels": True, "final_model": False}}),
    ]
    dirs = []
    for name, model, extra in specs:
        cfg = load_config(demo_config(name, model, cohort.root, features, **extra))
        ts = time.perf_counter()
        run_experiment(cfg, runs_dir / name, progress=progress)
        echo(f"  trained {name} ({model}): 5-fold patient-level CV in {time.perf_counter() - ts:.1f} s "
             f"-> {runs_dir / name}")
        dirs.append(runs_dir / name)
        res.outputs[f"run_{name}"] = runs_dir / name
    table = compare_runs(dirs, topk=[50], criteria=["variance"])
    main = table[(table["subset"] == "all") & (table["axis"] == "per-target")
                 & table["metric"].isin(["pearson", "spearman"])]
    echo(f"[5/7] omics, held-out per-target Pearson (mean ± std over 5 folds), {time.perf_counter() - t:.0f} s:")
    echo(format_table(main))
    for _, row in main[main["metric"] == "pearson"].iterrows():
        res.numbers[f"pearson_{row['model']}_{row['task']}"] = round(float(row["mean"]), 4)
    echo("  paired comparisons (per-target Pearson; 95% CI: Nadeau-Bengio corrected resampled t over folds, "
         "which includes training variance):")
    for a_, b_ in (("mtl", "stl"), ("mtl", "ridge")):
        for r in compare_paired(runs_dir / a_, runs_dir / b_, metric="pearson", n_boot=300, seed=0):
            echo("    " + "\n    ".join(r.lines()))
            res.numbers[f"paired_{a_}_minus_{b_}_{r.task}"] = round(float(r.difference), 4)
    from histoviz._atomic import atomic_write_text

    cmp_path = atomic_write_text(Path(out) / "runs" / "comparison.csv", table.to_csv(index=False))
    res.outputs["comparison"] = cmp_path
    from histoviz.io import open_slide
    from histoviz.viz.overlay import save_overlay

    src = show if show is not None else cohort
    slide_id = src.slide_ids[0]
    for name, shown in (("mtl", "gene:MKI67"), ("cpnn", "cell_type:lymphocyte")):
        with open_slide(src.slides[slide_id]) as reader:
            a = predict_slide(reader, runs_dir / name)
            p = write_predictions(a, Path(out) / "maps" / f"{slide_id}.{name}.h5ad")
            png = save_overlay(reader, a, shown, Path(out) / "maps" / f"{slide_id}.{name}.png")
        keys = [k for k in a.obs.columns if k not in ("x", "y", "slide_id")] + [k for k in a.obsm if k != "spatial"]
        echo(f"  per-patch maps of {slide_id} (a slide no model saw) with {name}: {a.n_obs} patches x {a.n_vars} "
             f"genes ({', '.join(keys)}) -> {p}; {shown} over the slide -> {png}")
        res.outputs[f"pred_{name}"] = p
        res.outputs[f"overlay_{name}"] = png


def outcome_config(name: str, model: str, cohort_root: Path, features: Path, **extra: Any) -> dict[str, Any]:
    """The config of ``training/configs/grade_survival.yaml`` / ``outcome_baselines.yaml`` on a
    synthetic cohort folder."""
    r = Path(cohort_root)
    params: dict[str, Any] = {}
    training: dict[str, Any] = {"epochs": 100, "lr": 5e-4, "batch_size": 16, "patience": 15,
                                "val_fraction": 0.15, "final_model": True}
    if model.startswith("abmil"):
        params = {"embed_dim": 128, "attn_dim": 64, "hidden": 128}
    training.update(extra.pop("training", {}))
    return {
        "name": name,
        "seed": 0,
        "data": {"cohort": str(r / "cohort.csv"), "features": str(features),
                 "outcomes": {"grade": {"column": "grade", "classes": [1, 2, 3, 4]},
                              "survival": {"time": "time", "event": "event", "n_bins": 4}}},
        "model": {"name": model, "params": params},
        "training": training,
        "evaluation": {"n_folds": 5, "calibration_fraction": 0.2, "conformal": {"alpha": 0.1}},
        **extra,
    }


def train_outcome_models(
    cohort: Any,
    features: Path,
    out: Path,
    res: Any,
    *,
    echo: Callable[[str], None] = print,
    progress: bool = True,
    show: Any = None,
) -> None:
    """Grade and survival: joint ABMIL, PCA + logistic / Cox baselines, a shuffled control;
    AUC, c-index and conformal coverage; per-patch grade, risk and uncertainty maps of a slide."""
    from histoviz.evaluation.compare import compare_runs, format_table
    from histoviz.evaluation.report import outcome_report
    from histoviz.io import open_slide
    from histoviz.io.predictions import write_predictions
    from histoviz.predict import predict_slide
    from histoviz.training.config import load_config
    from histoviz.training.runner import run_experiment
    from histoviz.viz.overlay import save_overlay

    t = time.perf_counter()
    runs_dir = Path(out) / "runs"
    specs = [
        ("abmil-grade-survival", "abmil-grade-survival", {}),
        ("pca-outcomes", "pca-outcomes", {}),
        ("abmil-shuffled", "abmil-grade-survival", {"training": {"shuffle_labels": True, "final_model": False}}),
    ]
    dirs = []
    for name, model, extra in specs:
        cfg = load_config(outcome_config(name, model, cohort.root, features, **extra))
        ts = time.perf_counter()
        run_experiment(cfg, runs_dir / name, progress=progress)
        echo(f"  trained {name} ({model}): 5-fold patient-level CV + 20% calibration split in "
             f"{time.perf_counter() - ts:.1f} s -> {runs_dir / name}")
        dirs.append(runs_dir / name)
        res.outputs[f"run_{name}"] = runs_dir / name
    table = compare_runs(dirs, topk=[])
    main = table[(table["subset"] == "all") & (table["axis"] == "per-target") & table["metric"].isin(
        ["auc_macro", "balanced_accuracy", "c_index", "c_index_uno", "coverage", "set_size", "interval_width"])]
    echo(f"[6/7] grade and survival, held-out (mean ± std over 5 folds; conformal alpha 0.1), "
         f"{time.perf_counter() - t:.0f} s:")
    echo(format_table(main))
    for line in outcome_report(dirs[:2]):
        echo("  " + line)
    for _, row in main.iterrows():
        res.numbers[f"{row['metric']}_{row['model']}_{row['task']}"] = round(float(row["mean"]), 4)
    src = show if show is not None else cohort
    slide_id = src.slide_ids[0]
    with open_slide(src.slides[slide_id]) as reader:
        a = predict_slide(reader, runs_dir / "abmil-grade-survival")
        p = write_predictions(a, Path(out) / "maps" / f"{slide_id}.outcomes.h5ad")
        png = save_overlay(reader, a, "risk", Path(out) / "maps" / f"{slide_id}.risk.png")
    sp = a.uns["slide_prediction"]
    echo(f"  per-patch grade, risk and conformal uncertainty of {slide_id}: {a.n_obs} patches -> {p}; risk map -> {png}")
    echo(f"  slide {slide_id}: grade {sp['grade']['predicted']} (set {{{', '.join(sp['grade']['set'])}}}), "
         f"risk {sp['survival']['risk']:.2f} in [{sp['survival']['lo']:.2f}, {sp['survival']['hi']:.2f}]")
    res.outputs["pred_outcomes"] = p
    res.outputs["overlay_risk"] = png


#: CPU-sized PathGen for the demo (DDIM with 20 steps; the config's defaults are PathGen's DDPM, T = 1000)
DEMO_PATHGEN = {"sampler": "ddim", "sample_steps": 20, "n_samples": 3, "diffusion_dim": 32, "diffusion_blocks": 2,
                "diffusion_heads": 2, "diffusion_lr": 2e-3, "diffusion_epochs": 60, "diffusion_patience": 15}


def pathgen_config(name: str, setting: str, cohort_root: Path, features: Path, **extra: Any) -> dict[str, Any]:
    """The config of ``training/configs/pathgen.yaml`` (setting ``setting``) on a synthetic cohort
    made with ``gene_groups=True``, CPU-sized (:data:`DEMO_PATHGEN`, 3 folds)."""
    r = Path(cohort_root)
    training: dict[str, Any] = {"epochs": 40, "lr": 5e-4, "batch_size": 16, "patience": 8, "val_fraction": 0.15,
                                "final_model": False}
    training.update(extra.pop("training", {}))
    return {
        "name": name,
        "seed": 0,
        "data": {"cohort": str(r / "cohort.csv"), "features": str(features),
                 "omics": {"gene": {"path": str(r / "omics/gene.h5ad"), "normalize": "total", "transform": "log10p1",
                                    "drop_median_zero": True, "standardize": True}},
                 "outcomes": {"grade": {"column": "grade", "classes": [1, 2, 3, 4]},
                              "survival": {"time": "time", "event": "event", "n_bins": 4}}},
        "model": {"name": "pathgen", "params": {"gene_groups": str(r / "gene_groups.csv"), "setting": setting,
                                                **DEMO_PATHGEN}},
        "training": training,
        "evaluation": {"n_folds": 3, "calibration_fraction": 0.2, "conformal": {"alpha": 0.1}, "topk": [20]},
        **extra,
    }


def train_pathgen_models(
    outcome_cohort: Any,
    features: Path,
    out: Path,
    res: Any,
    *,
    echo: Callable[[str], None] = print,
    progress: bool = True,
) -> None:
    """A small PathGen on the outcome cohort's slides with gene groups: the cohort regenerated with
    ``gene_groups=True, hidden_factor=1`` (same pixels, so the outcome cohort's bags are reused),
    the three settings on the same 3 folds, the settings table with paired differences, the
    synthesis against the training mean, and the maps of one slide (per-patch risk, co-attention)."""
    from dataclasses import asdict

    from histoviz.data.synthetic import make_synthetic_cohort
    from histoviz.evaluation.pathgen import pathgen_report
    from histoviz.io import open_slide
    from histoviz.io.featurebag import FeatureBag
    from histoviz.io.predictions import write_predictions
    from histoviz.predict import predict_bag
    from histoviz.training.config import load_config
    from histoviz.training.runner import run_experiment
    from histoviz.viz.overlay import save_overlay

    t = time.perf_counter()
    cfg = {**asdict(outcome_cohort.config), "gene_groups": True, "hidden_factor": 1.0}
    pc = make_synthetic_cohort(Path(out) / "pathgen", **cfg, progress=progress)
    runs_dir = Path(out) / "runs"
    dirs = []
    for setting in ("slide", "synthetic", "real"):
        name = f"pathgen-{setting}"
        ts = time.perf_counter()
        run_experiment(load_config(pathgen_config(name, setting, pc.root, features)), runs_dir / name,
                       progress=progress)
        echo(f"  trained {name}: 3-fold patient-level CV + 20% calibration in {time.perf_counter() - ts:.1f} s "
             f"-> {runs_dir / name}")
        dirs.append(runs_dir / name)
        res.outputs[f"run_{name}"] = runs_dir / name
    echo(f"  PathGen on {pc.root} (six gene groups; a hidden factor shifts grade, survival and two groups), "
         f"{time.perf_counter() - t:.0f} s:")
    for line in pathgen_report(dirs):
        echo("  " + line)
    slide_id = pc.slide_ids[0]
    a = predict_bag(FeatureBag.from_h5(Path(features) / f"{slide_id}.h5"), runs_dir / "pathgen-synthetic")
    p = write_predictions(a, Path(out) / "maps" / f"{slide_id}.pathgen.h5ad")
    top = str(a.obsm["coattention"].columns[1])
    with open_slide(pc.slides[slide_id]) as reader:
        png = save_overlay(reader, a, f"coattention:{top}", Path(out) / "maps" / f"{slide_id}.coattention.png")
    echo(f"  PathGen maps of {slide_id}: per-patch grade / risk, synthesised gene groups ({a.n_vars} genes) and "
         f"co-attention of {a.obsm['coattention'].shape[1]} groups -> {p}; {top} co-attention -> {png}")
    res.outputs["pred_pathgen"] = p
    res.outputs["overlay_coattention"] = png
