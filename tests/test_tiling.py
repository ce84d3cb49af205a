"""Tissue masks and tile grids on layouts with known truth."""

from __future__ import annotations

import numpy as np
import pytest

from histoviz.errors import ConfigError, MissingMppError, NoTissueError
from histoviz.io import open_slide
from histoviz.tiling import TileGrid, TilingConfig, make_tile_grid, tissue_mask
from histoviz.tiling.dataset import TileDataset, read_tile


def test_tissue_fraction_on_known_layout(layout_slide):
    p, img, truth = layout_slide
    r = open_slide(p)
    m = tissue_mask(r, target_mpp=4.0)
    assert m.downsample == pytest.approx(8.0, rel=0.02)
    assert m.fraction == pytest.approx(truth.mean(), abs=0.02)
    # mask pixels agree with the truth (downsampled) almost everywhere
    t = truth[:: int(m.downsample), :: int(m.downsample)][: m.mask.shape[0], : m.mask.shape[1]]
    assert (m.mask[: t.shape[0], : t.shape[1]] == t).mean() > 0.97


def test_grid_coords_land_on_tissue(layout_slide):
    p, _, truth = layout_slide
    g = make_tile_grid(open_slide(p))
    assert g.tile_size_level0 == 224 and g.stride_level0 == 224
    want = {(x, y) for x in range(448, 1344, 224) for y in range(224, 1120, 224)}
    assert {tuple(c) for c in g.coords.tolist()} == want
    assert g.coords.dtype == np.int64
    for x, y in g.coords:
        assert truth[y : y + 224, x : x + 224].mean() == 1.0
    assert np.allclose(g.tissue_fraction, 1.0, atol=0.05)


def test_grid_at_coarser_mpp_and_overlap(layout_slide):
    p, _, _ = layout_slide
    r = open_slide(p)
    g = make_tile_grid(r, TilingConfig(tile_size=224, mpp=1.0))
    assert g.tile_size_level0 == 448
    # tissue rectangle 896 px: lattice at stride 448 starting at 0 -> corners 448, 896 in x;
    # in y, tiles [448, 896) lie fully inside [224, 1120); [0, 448) and [896, 1344) are exactly
    # half tissue and pass the default 50 % threshold
    assert {tuple(c) for c in g.coords.tolist()} == {(x, y) for x in (448, 896) for y in (0, 448, 896)}
    assert sorted(np.round(g.tissue_fraction, 2).tolist()) == [0.5] * 4 + [1.0] * 2
    go = make_tile_grid(r, TilingConfig(overlap=0.5, min_tissue_fraction=1.0))
    assert go.stride_level0 == 112
    assert len(go) == 7 * 7  # (896 - 224) / 112 + 1 positions per axis, all fully inside


def test_raster_places_values(layout_slide):
    p, _, _ = layout_slide
    g = make_tile_grid(open_slide(p))
    vals = g.coords[:, 0] * 10 + g.coords[:, 1]
    ras = g.to_raster(vals.astype(float))
    assert ras.shape == g.grid_shape
    for (x, y), v in zip(g.coords, vals):
        assert ras[y // 224, x // 224] == v
    assert np.isnan(ras[0, 0])


def test_missing_mpp_and_override(png_path):
    r = open_slide(png_path)
    with pytest.raises(MissingMppError, match="he_1000px.png.*--mpp-override"):
        make_tile_grid(r)
    g = make_tile_grid(r, TilingConfig(mpp_override=0.25))  # 0.5 um tiles from 0.25 um pixels
    assert g.tile_size_level0 == 448 and len(g) >= 1
    g2 = make_tile_grid(open_slide(png_path), TilingConfig(mpp=None))  # native pixels: allowed
    assert g2.tile_size_level0 == 224 and len(g2) > len(g)


def test_no_tissue_is_a_clear_error(plain_tiff_path):
    with pytest.raises(NoTissueError, match="kidney-48-5.tif: no usable tissue: no tile"):
        make_tile_grid(open_slide(plain_tiff_path, mpp=0.5))
    blank = open_slide(np.full((2000, 2000, 3), 250, np.uint8), mpp=0.5)
    with pytest.raises(NoTissueError):
        make_tile_grid(blank)
    assert len(make_tile_grid(blank, allow_empty=True)) == 0


def test_svs_grid_on_tissue(svs_path):
    r = open_slide(svs_path)
    g = make_tile_grid(r)
    assert 20 < len(g) < 140
    # every kept tile is mostly non-white at full resolution
    for i in range(0, len(g), 5):
        tile = read_tile(r, g, i)
        assert (tile.mean(axis=2) < 220).mean() > 0.3


def test_tile_dataset_reads_like_read_region(svs_path):
    r = open_slide(svs_path)
    g = make_tile_grid(r, TilingConfig(mpp=1.0))
    ds = TileDataset(r, g)
    x, i = ds[3]
    assert x.shape == (224, 224, 3) and i == 3
    want = r.read_region_mpp(tuple(g.coords[3]), (224, 224), 1.0)
    assert np.array_equal(x, want)
    from torch.utils.data import DataLoader

    from histoviz.tiling.dataset import tile_collate

    xb, ib = next(iter(DataLoader(ds, batch_size=5, num_workers=2, collate_fn=tile_collate)))
    assert xb.shape == (5, 3, 224, 224) and ib.tolist() == [0, 1, 2, 3, 4]
    assert np.array_equal(xb[3].permute(1, 2, 0).numpy(), want)


def test_config_validation():
    with pytest.raises(ConfigError, match="mpp must be a finite number"):
        TilingConfig(mpp=0)
    for bad in (float("nan"), float("inf"), -1.0):
        with pytest.raises(ConfigError, match=r"mpp must be a finite number in \(0"):
            TilingConfig(mpp=bad)
    with pytest.raises(ConfigError, match="overlap"):
        TilingConfig(overlap=1.0)
    with pytest.raises(ConfigError, match="mpp_override = 1e\\+06 um/px is outside the plausible"):
        TilingConfig(mpp_override=1e6)
    with pytest.raises(ConfigError, match="mpp_override must be a finite number"):
        TilingConfig(mpp_override=float("nan"))
    with pytest.raises(ConfigError, match="tile_size must be an integer"):
        TilingConfig(tile_size=0)
    with pytest.raises(ConfigError, match="mask_method must be one of"):
        TilingConfig(mask_method="magic")


def test_grid_from_mask_small_tiles():
    from histoviz.tiling.mask import TissueMask

    mask = TissueMask(np.ones((10, 10), bool), downsample=64.0)
    g = TileGrid.from_mask(mask, dimensions=(640, 640), tile_size=16, tile_size_level0=16)
    assert len(g) == 40 * 40


def test_mask_keeps_pale_tissue_on_synthetic_slides(tmp_path):
    """Pale (normal, necrotic) regions count as tissue: Otsu alone drops them when the
    tissue itself is bimodal (dense vs pale stain)."""
    from PIL import Image

    from histoviz.data.synthetic import make_synthetic_cohort

    c = make_synthetic_cohort(tmp_path, n_slides=4, seed=1, slide_size=(1536, 1536))
    for sid, path in c.slides.items():
        m = tissue_mask(open_slide(path))
        lab = c.truth(sid)["labels"] > 0
        truth = np.asarray(Image.fromarray(lab.astype(np.uint8)).resize(m.mask.shape[::-1], Image.NEAREST)) > 0
        assert (truth == m.mask).mean() > 0.97, sid
