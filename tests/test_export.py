"""QuPath GeoJSON and OME-TIFF heatmap export (round trips, alignment, errors)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import tifffile

from histoviz.errors import DataError
from histoviz.io.predictions import make_prediction_adata
from histoviz.viz.export import (
    read_geojson,
    read_ome_tiff_heatmap,
    write_geojson,
    write_ome_tiff_heatmap,
)

TS = 224


@pytest.fixture
def adata():
    rng = np.random.default_rng(1)
    coords = np.array([[x, y] for y in range(224, 1120, TS) for x in range(448, 1344, TS)])
    n = len(coords)
    expr = rng.random((n, 3)).astype(np.float32)
    expr[2, 1] = np.nan
    ct = pd.DataFrame(rng.dirichlet(np.ones(3), n), columns=["tumour", "stroma", "immune"])
    return make_prediction_adata(
        coords, slide_id="S7", tile_size_level0=TS, expression=expr, genes=["A", "B", "C"],
        obs={"risk": rng.standard_normal(n)}, obsm={"cell_type_weights": ct},
        meta={"slide_dimensions": [1500, 1200], "mpp": 0.5},
    )


def test_geojson_is_qupath_detections_that_round_trip(adata, tmp_path):
    p = write_geojson(adata, tmp_path / "d.geojson", maps=["gene:A", "gene:B", "risk", "dominant_type"])
    doc = json.loads(p.read_text())
    assert doc["type"] == "FeatureCollection" and len(doc["features"]) == adata.n_obs
    f0 = doc["features"][0]
    assert f0["properties"]["objectType"] == "detection"
    x, y = (int(v) for v in adata.obs[["x", "y"]].iloc[0])
    assert f0["geometry"] == {"type": "Polygon", "coordinates": [[[x, y], [x + TS, y], [x + TS, y + TS],
                                                                   [x, y + TS], [x, y]]]}
    assert set(f0["properties"]["measurements"]) == {"gene A", "gene B", "risk"}
    assert f0["properties"]["classification"]["name"] in {"tumour", "stroma", "immune"}
    # NaN measurements are left out, not written as invalid JSON
    assert "gene B" not in doc["features"][2]["properties"]["measurements"]
    df = read_geojson(p).set_index("name").loc[adata.obs_names]
    assert df["gene A"].to_numpy() == pytest.approx(np.asarray(adata[:, "A"].X).ravel())
    assert np.isnan(df["gene B"].iloc[2]) and df["gene B"].iloc[3] == pytest.approx(adata.X[3, 1])
    assert df["risk"].to_numpy() == pytest.approx(adata.obs["risk"].to_numpy())
    assert (df[["x", "y"]].to_numpy() == adata.obs[["x", "y"]].to_numpy()).all()
    assert (df["width"] == TS).all() and (df["height"] == TS).all()
    assert (df["classification"].to_numpy() == adata.obsm["cell_type_weights"].idxmax(axis=1).to_numpy()).all()
    # ids are stable UUIDs
    p2 = write_geojson(adata, tmp_path / "again.geojson", maps=["risk"])
    assert json.loads(p2.read_text())["features"][0]["id"] == f0["id"]


def test_geojson_default_exports_every_continuous_map(adata, tmp_path):
    df = read_geojson(write_geojson(adata, tmp_path / "all.geojson"))
    assert {"gene A", "gene B", "gene C", "risk", "cell type tumour", "cell type immune"} <= set(df.columns)
    assert df["classification"].isna().all()


def test_geojson_explicit_measurements_and_classification(adata, tmp_path):
    codes = np.arange(adata.n_obs) % 2 - (np.arange(adata.n_obs) == 0)
    p = write_geojson(adata, tmp_path / "x.geojson", maps=[], measurements={"score": np.arange(adata.n_obs)},
                      classification=(codes, ["low", "high"]))
    df = read_geojson(p)
    assert df["score"].tolist() == list(range(adata.n_obs))
    assert df["classification"].iloc[0] is None and df["classification"].iloc[1] == "high"
    with pytest.raises(DataError, match="values for"):
        write_geojson(adata, tmp_path / "bad.geojson", measurements={"s": np.zeros(3)})
    with pytest.raises(DataError, match="only one categorical"):
        write_geojson(adata, tmp_path / "bad.geojson", maps=["dominant_type"], classification=(codes, ["a", "b"]))
    assert not (tmp_path / "bad.geojson").exists()
    assert not list(tmp_path.glob(".*.tmp"))  # atomic: no temporary left behind


def test_read_geojson_accepts_qupath_list_measurements(tmp_path):
    doc = [{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]]]},
            "properties": {"objectType": "detection", "measurements": [{"name": "m", "value": 2.5}],
                           "classification": {"name": "Tumor", "color": [200, 0, 0]}}}]
    p = tmp_path / "q.geojson"
    p.write_text(json.dumps(doc))
    df = read_geojson(p)
    assert df.loc[0, "m"] == 2.5 and df.loc[0, "classification"] == "Tumor" and df.loc[0, "width"] == 10
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        read_geojson(tmp_path / "bad.json")
    with pytest.raises(DataError, match="not found"):
        read_geojson(tmp_path / "missing.geojson")


def test_ome_tiff_heatmap_has_the_slides_size_and_pixels(adata, tmp_path):
    """Default: level 0 = the slide's size and pixel size; a tiled pyramid of halvings; every
    level-0 pixel of a patch (and none outside it) holds the patch's value."""
    p = write_ome_tiff_heatmap(adata, tmp_path / "a.ome.tif", "gene:A", tile=256)
    arr, meta = read_ome_tiff_heatmap(p)
    assert meta["downsample"] == 1 and meta["slide_dimensions"] == [1500, 1200]
    assert meta["physical_size_x"] == pytest.approx(0.5) and meta["map"] == "gene A" and meta["unit"] == "target space"
    assert meta["exact_patch_edges"] and meta["level_downsamples"] == [1, 2, 4, 8]
    assert arr.shape == (1200, 1500) and arr.dtype == np.float32
    a = np.asarray(adata[:, "A"].X).ravel()
    for i, (x, y) in enumerate(adata.obs[["x", "y"]].to_numpy()):
        assert np.all(arr[y:y + TS, x:x + TS] == np.float32(a[i]))
    covered = np.zeros(arr.shape, bool)
    for x, y in adata.obs[["x", "y"]].to_numpy():
        covered[y:y + TS, x:x + TS] = True
    assert np.isnan(arr[~covered]).all() and np.isfinite(arr[covered]).all()
    with tifffile.TiffFile(p) as tf:
        assert tf.is_ome and tf.pages[0].is_tiled and tf.pages[0].tilewidth == 256
        levels = tf.series[0].levels
        assert [lv.shape for lv in levels] == [(1200, 1500), (600, 750), (300, 375), (150, 188)]
        # each level carries its own resolution (QuPath / Bio-Formats read the pyramid's scale)
        res = [lv.keyframe.get_resolution() for lv in levels]
        assert [r[0] for r in res] == pytest.approx([1e4 / (0.5 * f) for f in (1, 2, 4, 8)])
        assert 'PhysicalSizeX="0.5"' in tf.ome_metadata and 'PhysicalSizeXUnit="µm"' in tf.ome_metadata


def test_ome_tiff_heatmap_with_a_stated_downsample_reads_back_in_place(adata, tmp_path):
    from histoviz.viz.export import heatmap_info, heatmap_levels, heatmap_placement
    from histoviz.viz.maps import level0_to_world

    p = write_ome_tiff_heatmap(adata, tmp_path / "d8.ome.tif", "risk", downsample=8)
    meta = heatmap_info(p)
    assert meta["downsample"] == 8 and meta["shape"] == (150, 188) and meta["physical_size_x"] == pytest.approx(4.0)
    lvl0 = np.asarray(heatmap_levels(p)[0])
    scale, translate = heatmap_placement(meta)
    assert scale == (4.0, 4.0) and translate == (1.75, 1.75)
    # a viewer centres data pixel j at translate + scale * j: every level-0 point of a patch lands on
    # a heatmap pixel holding that patch's value
    risk = adata.obs["risk"].to_numpy()
    for i, (x, y) in enumerate(adata.obs[["x", "y"]].to_numpy()):
        for fx, fy in ((0.01, 0.01), (0.5, 0.5), (0.99, 0.99)):
            wy, wx = level0_to_world((x + fx * TS, y + fy * TS), (0.5, 0.5), (0.0, 0.0))
            r, c = (int(np.floor((w - t) / s + 0.5)) for w, t, s in ((wy, translate[0], scale[0]), (wx, translate[1], scale[1])))
            assert lvl0[r, c] == pytest.approx(risk[i], rel=1e-6)
    assert heatmap_info(tmp_path / "missing.ome.tif") is None
    plain = tmp_path / "plain.ome.tif"
    tifffile.imwrite(plain, np.zeros((8, 8), np.uint8), ome=True)
    assert heatmap_info(plain) is None


def test_default_heatmap_downsample_bounds_level_zero():
    from histoviz.viz.export import MAX_HEATMAP_PIXELS, default_heatmap_downsample

    assert default_heatmap_downsample(2220, 2967) == 1
    d = default_heatmap_downsample(100_000, 80_000)
    assert d == 16 and -(-100_000 // d) * -(-80_000 // d) <= MAX_HEATMAP_PIXELS
    assert default_heatmap_downsample(100_000, 80_000, max_pixels=10**6) == 128


def test_ome_tiff_full_resolution_pyramid_and_labels(adata, tmp_path):
    p = write_ome_tiff_heatmap(adata, tmp_path / "t.ome.tif", "dominant_type", downsample=1, tile=128)
    arr, meta = read_ome_tiff_heatmap(p)
    assert arr.shape == (1200, 1500) and arr.dtype == np.uint16
    assert meta["categories"] == ["tumour", "stroma", "immune"] and meta["physical_size_x"] == 0.5
    want = adata.obsm["cell_type_weights"].to_numpy().argmax(1) + 1
    x, y = (int(v) for v in adata.obs[["x", "y"]].iloc[5])
    # every level-0 pixel of the patch, and none outside it, carries its label
    assert (arr[y : y + TS, x : x + TS] == want[5]).all()
    assert (arr[:224, :] == 0).all() and (arr[:, :448] == 0).all()
    with tifffile.TiffFile(p) as tf:
        levels = tf.series[0].levels
        assert [lv.shape for lv in levels] == [(1200, 1500), (600, 750), (300, 375), (150, 188), (75, 94)]
        assert tf.pages[0].is_tiled and tf.is_ome
    lvl1, _ = read_ome_tiff_heatmap(p, level=1)
    assert lvl1[(y + 112) // 2, (x + 112) // 2] == want[5]


def test_ome_tiff_from_values_and_errors(adata, tmp_path):
    v = np.arange(adata.n_obs, dtype=np.float32)
    arr, meta = read_ome_tiff_heatmap(write_ome_tiff_heatmap(adata, tmp_path / "v.ome.tif", v, name="idx",
                                                             downsample=112))
    assert meta["map"] == "idx" and arr.shape == (-(-1200 // 112), -(-1500 // 112))
    x, y = (int(c) for c in adata.obs[["x", "y"]].iloc[3])
    assert (arr[y // 112 : y // 112 + 2, x // 112 : x // 112 + 2] == 3).all()
    with pytest.raises(DataError, match="values for"):
        write_ome_tiff_heatmap(adata, tmp_path / "bad.ome.tif", np.zeros(3))
    with pytest.raises(DataError, match="unknown gene"):
        write_ome_tiff_heatmap(adata, tmp_path / "bad.ome.tif", "gene:Z")
    with pytest.raises(DataError, match="integer >= 1"):
        write_ome_tiff_heatmap(adata, tmp_path / "bad.ome.tif", v, downsample=0)
    with pytest.raises(DataError, match="integer >= 1"):
        write_ome_tiff_heatmap(adata, tmp_path / "bad.ome.tif", v, downsample=2.5)
    assert not (tmp_path / "bad.ome.tif").exists()
