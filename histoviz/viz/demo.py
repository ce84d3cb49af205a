"""Prediction files for demos and screenshots, made without a trained model.

- :func:`synthetic_predictions`: "predictions" of a synthetic-cohort slide read from its ground
  truth (:func:`histoviz.data.synthetic.tile_truth`) plus noise, so every map shows real
  structure and tests know which patch is high in which gene.
- :func:`simulated_predictions`: maps for a *real* slide whose values follow measured tile
  morphology (haematoxylin and eosin density, the design's "real images, simulated labels").

Both return AnnData in the :mod:`histoviz.io.predictions` contract with every map kind the
viewers show: expression, cell-type weights, grade probabilities, risk, attention, gene-group
co-attention and conformal grade sets / risk intervals. They are labelled as simulated in
``uns["histoviz"]["model"]``; never mistake them for model output.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from histoviz.errors import DataError

if TYPE_CHECKING:
    import anndata as ad

    from histoviz.data.synthetic import SyntheticCohort
    from histoviz.io.slide import SlideReader
    from histoviz.tiling.grid import TileGrid

__all__ = [
    "derived_maps",
    "sample_files",
    "simulated_predictions",
    "synthetic_predictions",
]

GRADES = ("G1", "G2", "G3")


def _softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def derived_maps(
    composition: np.ndarray,
    cell_types: Sequence[str],
    tumour_fraction: np.ndarray,
    *,
    seed: int = 0,
    alpha: float = 0.1,
) -> dict[str, object]:
    """Grade, risk, attention, co-attention and conformal outputs that follow tissue content.

    Parameters
    ----------
    composition
        ``(N, K)`` cell-type weights per patch.
    cell_types
        The ``K`` cell-type names (``tumour``, ``lymphocyte``/``immune`` and ``fibroblast``/
        ``stroma`` are recognised; others only enter through the composition).
    tumour_fraction
        ``(N,)`` tumour content in [0, 1].
    seed
        Noise seed.
    alpha
        Miscoverage of the simulated conformal sets / intervals.

    Returns
    -------
    dict with ``obs`` (risk, attention, grade_set, risk_lo, risk_hi) and ``obsm``
    (grade_proba, coattention) ready for :func:`~histoviz.io.predictions.make_prediction_adata`.
    """
    import pandas as pd

    rng = np.random.default_rng(seed)
    comp = np.asarray(composition, dtype=np.float64)
    n = len(comp)
    names = [c.lower() for c in cell_types]

    def col(*keys: str) -> np.ndarray:
        for k in keys:
            if k in names:
                return comp[:, names.index(k)]
        return np.zeros(n)

    tf = np.clip(np.asarray(tumour_fraction, dtype=np.float64), 0, 1)
    immune = col("lymphocyte", "immune") + 0.5 * col("macrophage")
    stroma = col("fibroblast", "stroma")
    logits = np.stack([2.0 - 4.0 * tf, 0.5 + 0.0 * tf, -2.0 + 4.5 * tf], axis=1)
    proba = _softmax(logits + 0.4 * rng.standard_normal((n, 3)))
    expected_grade = proba @ np.array([1.0, 2.0, 3.0])
    risk = 1.5 * tf + 0.6 * (expected_grade - 2.0) - 1.2 * immune + 0.15 * rng.standard_normal(n)
    attention = _softmax(3.0 * tf + 0.5 * rng.standard_normal(n), axis=0)
    groups = {
        "proliferation": tf,
        "immune response": immune,
        "stromal remodelling": stroma,
        "epithelial": col("epithelial", "normal"),
    }
    co = {g: _softmax(4.0 * v + 0.3 * rng.standard_normal(n), axis=0) for g, v in groups.items()}
    order = np.argsort(-proba, axis=1)
    cum = np.take_along_axis(proba, order, axis=1).cumsum(axis=1)
    k_needed = (cum < 1.0 - alpha).sum(axis=1) + 1
    grade_set = [",".join(sorted(GRADES[j] for j in order[i, : k_needed[i]])) for i in range(n)]
    half = 0.35 + 0.2 * (1.0 - proba.max(axis=1))
    return {
        "obs": {
            "risk": risk.astype(np.float32),
            "attention": attention.astype(np.float32),
            "grade_set": np.asarray(grade_set, dtype=object),
            "risk_lo": (risk - half).astype(np.float32),
            "risk_hi": (risk + half).astype(np.float32),
        },
        "obsm": {
            "grade_proba": pd.DataFrame(proba.astype(np.float32), columns=list(GRADES)),
            "coattention": pd.DataFrame(
                np.stack(list(co.values()), axis=1).astype(np.float32), columns=list(co)
            ),
        },
    }


def _assemble(
    reader: SlideReader,
    grid: TileGrid,
    expression: np.ndarray,
    genes: Sequence[str],
    composition: np.ndarray,
    cell_types: Sequence[str],
    tumour_fraction: np.ndarray,
    *,
    model: str,
    seed: int,
) -> ad.AnnData:
    import pandas as pd

    from histoviz.io.predictions import make_prediction_adata

    extra = derived_maps(composition, cell_types, tumour_fraction, seed=seed + 1)
    obsm = {"cell_type_weights": pd.DataFrame(np.asarray(composition, np.float32),
                                              columns=list(cell_types))}
    obsm.update(extra["obsm"])  # type: ignore[arg-type]
    return make_prediction_adata(
        grid.coords,
        slide_id=reader.slide_id,
        tile_size_level0=grid.tile_size_level0,
        expression=np.asarray(expression, np.float32),
        genes=list(genes),
        obs=extra["obs"],  # type: ignore[arg-type]
        obsm=obsm,
        meta={
            "slide_path": str(reader.path) if reader.path else None,
            "slide_dimensions": [int(v) for v in reader.dimensions],
            "mpp": reader.mpp,
            "tile_size": int(grid.tile_size),
            "stride_level0": int(grid.stride_level0),
            "model": model,
        },
    )


def synthetic_predictions(
    cohort: SyntheticCohort | str | os.PathLike,
    slide_id: str,
    grid: TileGrid,
    *,
    noise: float = 0.15,
    seed: int = 0,
) -> ad.AnnData:
    """Predictions for a synthetic-cohort slide taken from its ground truth plus noise.

    Expression is ``log1p`` of the tile's true expected counts times a log-normal error with
    standard deviation ``noise``; cell-type weights are the true composition.
    """
    from histoviz.data.synthetic import SyntheticCohort, load_synthetic_cohort, tile_truth
    from histoviz.io import open_slide

    c = cohort if isinstance(cohort, SyntheticCohort) else load_synthetic_cohort(cohort)
    if slide_id not in c.slides:
        raise DataError(f"slide {slide_id!r} is not in the synthetic cohort {c.root}")
    truth = c.truth(slide_id)
    tt = tile_truth(c, slide_id, grid.coords, grid.tile_size_level0)
    rng = np.random.default_rng(seed)
    expr = np.log1p(tt["expression"]) * np.exp(noise * rng.standard_normal(tt["expression"].shape))
    with open_slide(c.slides[slide_id]) as reader:
        return _assemble(
            reader, grid, expr, [str(g) for g in truth["gene_names"]], tt["composition"],
            [str(t) for t in truth["cell_types"]], tt["tumour_fraction"],
            model="simulated: synthetic ground truth + noise", seed=seed,
        )


def simulated_predictions(
    reader: SlideReader,
    grid: TileGrid,
    *,
    n_genes: int = 24,
    seed: int = 0,
    thumb_px: int = 32,
) -> ad.AnnData:
    """Maps for a real slide whose values follow each tile's measured H&E content.

    Genes come from :func:`histoviz.data.synthetic.simulated_labels_for_tiles` (monotone in
    haematoxylin density, with noise genes); cell-type weights and tumour content are a softmax
    of standardised haematoxylin and eosin densities. Nothing here is biology: it is a
    realistic-looking, reproducible stand-in for model output on a real image.
    """
    from skimage.color import rgb2hed

    from histoviz.data.synthetic import simulated_labels_for_tiles

    if len(grid) == 0:
        raise DataError(f"{reader.slide_id}: the tile grid is empty")
    ds = grid.tile_size_level0 / thumb_px
    tiles = np.stack(
        [reader.read_region_downsample((int(x), int(y)), (thumb_px, thumb_px), ds)
         for x, y in grid.coords]
    )
    labels, _ = simulated_labels_for_tiles(tiles, n_genes=n_genes, seed=seed)
    hed = np.stack([np.clip(rgb2hed(t), 0, None).mean(axis=(0, 1)) for t in tiles])

    def z(v: np.ndarray) -> np.ndarray:
        s = v.std()
        return (v - v.mean()) / s if s > 0 else v * 0

    h, e = z(hed[:, 0]), z(hed[:, 1])
    cell_types = ["tumour", "stroma", "lymphocyte", "epithelial"]
    comp = _softmax(np.stack([1.6 * h - 0.4 * e, 1.6 * e - 0.8 * h, 0.8 * h + 0.2 * e - 0.5,
                              -0.6 * h - 0.2 * e], axis=1))
    genes = [f"sim_gene_{i + 1:02d}" for i in range(n_genes)]
    return _assemble(reader, grid, labels, genes, comp, cell_types, comp[:, 0],
                     model="simulated: H&E density of real tiles", seed=seed)


def sample_files(kind: str = "synthetic", cache_dir: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """A sample slide and its prediction file, made once and cached.

    Parameters
    ----------
    kind
        ``"synthetic"``: a 4096 x 3072 px synthetic slide (0.5 um/px) with predictions from
        its ground truth (:func:`synthetic_predictions`, 128 px patches). ``"real"``: the
        shipped Aperio SVS (CMU-1-Small-Region) with :func:`simulated_predictions` (112 px
        patches).
    cache_dir
        Where to keep them (default :func:`default_cache_dir` ``/ "samples"``).

    Returns
    -------
    ``(slide_path, predictions_path)``.
    """
    from histoviz.datasets import default_cache_dir
    from histoviz.io import open_slide
    from histoviz.io.predictions import write_predictions
    from histoviz.tiling.grid import TilingConfig, make_tile_grid

    root = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "samples"
    if kind == "synthetic":
        import shutil

        from histoviz.data.synthetic import make_synthetic_cohort
        from histoviz.errors import ConfigError

        kw = {"n_slides": 1, "slide_size": (4096, 3072), "seed": 0, "spatial_fraction": 0.0}
        try:
            cohort = make_synthetic_cohort(root / "synthetic", **kw)
        except ConfigError:  # a cache made by another version of the generator: remake it
            shutil.rmtree(root / "synthetic", ignore_errors=True)
            cohort = make_synthetic_cohort(root / "synthetic", **kw)
        sid = cohort.slide_ids[0]
        slide = cohort.slides[sid]
        pred = root / "synthetic" / f"{sid}.predictions.h5ad"
        if not pred.is_file():
            with open_slide(slide) as reader:
                grid = make_tile_grid(reader, TilingConfig(tile_size=128, mpp=0.5))
            write_predictions(synthetic_predictions(cohort, sid, grid), pred)
        return slide, pred
    if kind == "real":
        from histoviz.datasets import real_sample

        slide = real_sample("CMU-1-Small-Region.svs")
        pred = root / "real" / f"{slide.name.split('.')[0]}.predictions.h5ad"
        if not pred.is_file():
            with open_slide(slide) as reader:
                grid = make_tile_grid(reader, TilingConfig(tile_size=112, mpp=0.5))
                adata = simulated_predictions(reader, grid)
            write_predictions(adata, pred)
        return slide, pred
    raise DataError(f"unknown sample {kind!r}; choose 'synthetic' or 'real'")
