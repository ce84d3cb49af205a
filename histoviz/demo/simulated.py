"""Simulated maps for a *real* slide that has no model trained for it (labelled "simulated").

:func:`simulated_maps` gives per-patch values whose structure follows each tile's
measured H&E content (haematoxylin and eosin density, the design's "real images, simulated
labels"), so viewers have something to draw on the shipped Aperio SVS. They are not model
output: the file says so (``uns["histoviz"]["simulated"] = True``, ``model = "simulated:
..."``), every map label starts with "simulated" (:attr:`histoviz.viz.maps.MapValues.label`),
and no grade, risk, attention or uncertainty is simulated (those come from trained models only;
see :mod:`histoviz.demo.samples` for sample maps made by real trained models).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from histoviz.errors import DataError

if TYPE_CHECKING:
    import anndata as ad

    from histoviz.io.slide import SlideReader
    from histoviz.tiling.grid import TileGrid

__all__ = ["simulated_maps"]


def _softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def simulated_maps(
    reader: SlideReader,
    grid: TileGrid,
    *,
    n_genes: int = 24,
    seed: int = 0,
    thumb_px: int = 32,
) -> ad.AnnData:
    """Simulated maps for a real slide: values that follow each tile's measured H&E content.

    Genes (``sim_gene_01`` ...) come from :func:`histoviz.data.synthetic.simulated_labels_for_tiles`
    (monotone in haematoxylin density, with noise genes); cell-type weights are a softmax of
    standardised haematoxylin and eosin densities. Nothing here is biology or a prediction: it
    is a reproducible stand-in, flagged as simulated in the file.

    Returns
    -------
    AnnData in the :mod:`histoviz.io.predictions` contract with ``X`` (simulated genes) and
    ``obsm["cell_type_weights"]``; ``uns["histoviz"]["simulated"] = True``.
    """
    import pandas as pd
    from skimage.color import rgb2hed

    from histoviz.data.synthetic import simulated_labels_for_tiles
    from histoviz.io.predictions import make_prediction_adata

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
    return make_prediction_adata(
        grid.coords,
        slide_id=reader.slide_id,
        tile_size_level0=grid.tile_size_level0,
        expression=np.asarray(labels, np.float32),
        genes=genes,
        obsm={"cell_type_weights": pd.DataFrame(comp.astype(np.float32), columns=cell_types)},
        meta={
            "slide_path": str(reader.path) if reader.path else None,
            "slide_dimensions": [int(v) for v in reader.dimensions],
            "mpp": reader.mpp,
            "tile_size": int(grid.tile_size),
            "stride_level0": int(grid.stride_level0),
            "model": "simulated: H&E density of real tiles (not a model)",
            "simulated": True,
        },
    )
