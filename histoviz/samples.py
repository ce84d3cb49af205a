"""Sample prediction files for the viewers, made by real trained models (built once, cached).

``napari``'s File > Open Sample > histoviz, the README screenshots and the GUI tests show these:

- :func:`synthetic_sample`: a synthetic slide with maps from two models trained here with
  :func:`histoviz.training.runner.run_experiment` on a small synthetic cohort (``histoviz
  synth``; morphology features on 112-px tiles at 0.5 um/px): CPNN for expression and cell-type
  composition, and the joint ABMIL grade + survival model with split-conformal calibration
  (alpha 0.1) for per-patch grade probabilities, predicted grade, conformal set size,
  uncertainty, risk, survival bound width and attention, plus the slide-level grade with its
  conformal set and risk with its interval. The slide shown is not one the models were trained
  on: it comes from the same generator (same genes, cell types, tissue colours) with a layout
  of its own. About a minute on first use, then read from the cache.
- :func:`real_sample`: the shipped Aperio SVS (CMU-1-Small-Region). No model here is trained
  on real slides, so its maps are *simulated* (:func:`histoviz.viz.demo.simulated_predictions`)
  and labelled so in the file and in every map name.

Files live under ``default_cache_dir() / "samples"`` (``$HISTOVIZ_CACHE`` to move it).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from histoviz.errors import DataError

__all__ = ["SAMPLE_VERSION", "Sample", "real_sample", "sample_files", "synthetic_sample"]

log = logging.getLogger(__name__)

#: Bumped whenever the recipe below changes (a new cache folder is made).
SAMPLE_VERSION = 1
_SEED = 3
#: Training cohort: 66 patients with one small slide each and few censored survival times, enough
#: for 2-fold CV with a 40% calibration split (split conformal at alpha 0.1 needs >= 9 events).
_TRAIN = {"n_slides": 66, "slide_size": (512, 512), "seed": _SEED, "spatial_fraction": 0.0,
          "multi_slide_fraction": 0.0, "censoring_fraction": 0.1}
#: The slide shown: same generator and seed (same genes and cell types), a layout of its own.
_SHOWN = {**_TRAIN, "n_slides": 1, "slide_size": (2048, 1536)}
_TILING = {"tile_size": 112, "mpp": 0.5}


@dataclass(frozen=True)
class Sample:
    """A sample slide and its prediction file."""

    slide: Path
    predictions: Path
    runs: dict[str, Path] = field(default_factory=dict)


def _root(cache_dir: str | os.PathLike | None) -> Path:
    from histoviz.datasets import default_cache_dir

    return Path(cache_dir) if cache_dir is not None else default_cache_dir() / "samples"


def _configs(train: Path, feats: Path) -> dict[str, dict[str, Any]]:
    cohort, omics = str(train / "cohort.csv"), str(train / "omics" / "gene.h5ad")
    common = {"seed": 0, "data": {"cohort": cohort, "features": str(feats)}}
    evaluation = {"n_folds": 2, "calibration_fraction": 0.4, "conformal": {"alpha": 0.1}}
    return {
        "cpnn": {
            **common, "name": "sample-cpnn",
            "data": {**common["data"], "omics": {"gene": {
                "path": omics, "normalize": "total", "transform": "log10p1", "drop_median_zero": True,
                "standardize": True}}},
            "model": {"name": "cpnn", "params": {"reference": str(train / "reference_sc.h5ad"),
                                                 "label_key": "cell_type", "loss": "nb"}},
            "training": {"epochs": 80, "patience": 10, "grad_clip": 0.5, "val_fraction": 0.2,
                         "final_model": True},
            "evaluation": {"n_folds": 2},
        },
        "grade-survival": {
            **common, "name": "sample-abmil-grade-survival",
            "data": {**common["data"], "outcomes": {
                "grade": {"column": "grade", "classes": [1, 2, 3, 4]},
                "survival": {"time": "time", "event": "event", "n_bins": 4}}},
            "model": {"name": "abmil-grade-survival",
                      "params": {"embed_dim": 64, "attn_dim": 32, "hidden": 64}},
            "training": {"epochs": 80, "lr": 5e-4, "batch_size": 16, "patience": 12, "val_fraction": 0.15,
                         "final_model": True},
            "evaluation": evaluation,
        },
    }


def _merge(parts: list[Any], runs: dict[str, Path]) -> Any:
    """One prediction AnnData from several runs' predictions of the same patches."""
    import numpy as np

    from histoviz.io.predictions import make_prediction_adata

    base = parts[0]
    for p in parts[1:]:
        if p.n_obs != base.n_obs or not np.array_equal(p.obs[["x", "y"]].to_numpy(), base.obs[["x", "y"]].to_numpy()):
            raise DataError("sample predictions of different runs cover different patches")
    expr = next((p for p in parts if p.n_vars), None)
    obs: dict[str, Any] = {}
    obsm: dict[str, Any] = {}
    sp: dict[str, Any] = {}
    for p in parts:
        for c in p.obs.columns:
            if c not in ("x", "y", "slide_id"):
                obs[c] = p.obs[c].array if hasattr(p.obs[c], "cat") else p.obs[c].to_numpy()
        for k in p.obsm:
            if k != "spatial":
                obsm[k] = p.obsm[k]
        sp.update(dict(p.uns.get("slide_prediction", {})))
    info = dict(parts[-1].uns["histoviz"])
    models = {str(p.uns["histoviz"]["model"]): str(p.uns["histoviz"]["run_dir"]) for p in parts}
    info.update(model=" + ".join(models), run_dir=json.dumps(models), runs=json.dumps({k: str(v) for k, v in runs.items()}),
                modality=str(expr.uns["histoviz"].get("modality", "")) if expr is not None else "")
    a = make_prediction_adata(
        base.obs[["x", "y"]].to_numpy(), slide_id=str(info["slide_id"]), tile_size_level0=int(info["tile_size_level0"]),
        expression=np.asarray(expr.X) if expr is not None else None,
        genes=[str(g) for g in expr.var_names] if expr is not None else None,
        obs=obs, obsm=obsm, meta={k: v for k, v in info.items() if k not in ("slide_id", "tile_size_level0")},
    )
    a.uns["slide_prediction"] = sp
    return a


def synthetic_sample(
    cache_dir: str | os.PathLike | None = None,
    *,
    progress: bool = False,
    echo: Callable[[str], None] | None = None,
) -> Sample:
    """A synthetic slide with maps predicted by models trained here (see the module docstring).

    Parameters
    ----------
    cache_dir
        Where samples live (default ``default_cache_dir() / "samples"``).
    progress
        Progress bars while building.
    echo
        Called with one line per build step (default: the log).

    Returns
    -------
    :class:`Sample`: the slide, the prediction ``.h5ad`` and the two run directories.
    """
    root = _root(cache_dir) / f"synthetic-v{SAMPLE_VERSION}"
    runs = {"cpnn": root / "runs" / "cpnn", "grade-survival": root / "runs" / "grade-survival"}
    pred = root / "S001.predictions.h5ad"
    slide = root / "slide" / "slides" / "S001.tif"
    if pred.is_file() and slide.is_file() and all((r / "run.json").is_file() for r in runs.values()):
        return Sample(slide, pred, runs)
    say = echo or log.info
    from histoviz.data.cohort import read_cohort
    from histoviz.data.synthetic import make_synthetic_cohort
    from histoviz.errors import ConfigError
    from histoviz.features import create_encoder, embed_slide
    from histoviz.features.cohort import embed_cohort
    from histoviz.io import open_slide
    from histoviz.io.predictions import write_predictions
    from histoviz.predict import predict_bag
    from histoviz.tiling import TilingConfig, make_tile_grid
    from histoviz.training.config import load_config
    from histoviz.training.runner import run_experiment

    def cohort(folder: Path, kw: dict[str, Any]) -> Any:
        try:
            return make_synthetic_cohort(folder, progress=progress, **kw)
        except ConfigError:  # made by another version of the generator: remake it
            shutil.rmtree(folder, ignore_errors=True)
            return make_synthetic_cohort(folder, progress=progress, **kw)

    say(f"histoviz sample: building a synthetic cohort and training two models under {root} (once)")
    train = cohort(root / "train", _TRAIN)
    feats = root / "train" / "features" / "morphology-112"
    rep = embed_cohort(read_cohort(train.cohort_csv), feats, encoder="morphology", tiling=_TILING, workers=0,
                       progress=progress)
    if rep.failed:
        raise DataError(f"{root}: embedding the sample cohort failed: {rep.summary()}")
    say(f"  training cohort: {len(train.slide_ids)} slides, embedded {rep.counts()}")
    for name, cfg in _configs(root / "train", feats).items():
        if not (runs[name] / "run.json").is_file():
            run_experiment(load_config(cfg), runs[name], progress=progress)
        say(f"  trained {cfg['model']['name']} -> {runs[name]}")
    shown = cohort(root / "slide", _SHOWN)
    with open_slide(shown.slides[shown.slide_ids[0]]) as reader:
        grid = make_tile_grid(reader, TilingConfig(**_TILING))
        bag = embed_slide(reader, create_encoder("morphology"), grid, progress=progress)
        meta = {"slide_path": str(Path(reader.path).resolve()), "slide_dimensions": list(map(int, reader.dimensions)),
                "mpp": reader.mpp, "tile_size": int(grid.tile_size), "stride_level0": int(grid.stride_level0)}
    parts = [predict_bag(bag, runs[name], meta=meta) for name in ("cpnn", "grade-survival")]
    write_predictions(_merge(parts, runs), pred)
    say(f"  predicted {len(grid)} patches of {shown.slide_ids[0]} -> {pred}")
    return Sample(Path(shown.slides[shown.slide_ids[0]]), pred, runs)


def real_sample(cache_dir: str | os.PathLike | None = None) -> Sample:
    """The shipped Aperio SVS with *simulated* maps (no model here is trained on real slides)."""
    from histoviz.datasets import real_sample as shipped
    from histoviz.io import open_slide
    from histoviz.io.predictions import write_predictions
    from histoviz.tiling import TilingConfig, make_tile_grid
    from histoviz.viz.demo import simulated_predictions

    slide = shipped("CMU-1-Small-Region.svs")
    pred = _root(cache_dir) / f"real-v{SAMPLE_VERSION}" / "CMU-1-Small-Region.simulated.h5ad"
    if not pred.is_file():
        with open_slide(slide) as reader:
            grid = make_tile_grid(reader, TilingConfig(tile_size=112, mpp=0.5))
            write_predictions(simulated_predictions(reader, grid), pred)
    return Sample(slide, pred)


def sample_files(kind: str = "synthetic", cache_dir: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """``(slide, predictions)`` of the ``"synthetic"`` or ``"real"`` sample."""
    if kind == "synthetic":
        s = synthetic_sample(cache_dir)
    elif kind == "real":
        s = real_sample(cache_dir)
    else:
        raise DataError(f"unknown sample {kind!r}; choose 'synthetic' or 'real'")
    return s.slide, s.predictions
