"""Slide reading: metadata, pixels against reference readers, errors, feature bags."""

from __future__ import annotations

import json

import h5py
import numpy as np
import openslide
import pytest
import tifffile
from PIL import Image

from histoviz.errors import DataError, MissingMppError, SlideOpenError
from histoviz.io import FeatureBag, FeatureBagWriter, is_complete_bag, open_slide
from histoviz.io.slide import resize_rgb
from tests.conftest import write_pyramid_tiff


def test_svs_metadata(svs_path):
    with open_slide(svs_path) as r:
        assert r.dimensions == (2220, 2967)
        assert r.mpp == pytest.approx(0.499)
        assert r.meta.objective_power == 20
        assert r.meta.vendor == "aperio"
        assert r.level_count == 1
        assert r.slide_id == "CMU-1-Small-Region"


def test_svs_tile_decode_matches_openslide(svs_path):
    ref = openslide.OpenSlide(str(svs_path))
    fast = open_slide(svs_path)
    slow = open_slide(svs_path, tile_decode=False)
    assert fast.tile_decode and not slow.tile_decode
    for loc, size in [((0, 0), (240, 240)), ((123, 457), (500, 333)), ((2000, 2800), (220, 167))]:
        want = np.asarray(ref.read_region(loc, 0, size).convert("RGB"))
        assert np.array_equal(slow.read_region(loc, 0, size), want)
        # same JPEG decoder family: identical pixels
        assert np.abs(fast.read_region(loc, 0, size).astype(int) - want).max() <= 1


def test_region_outside_slide_is_white(svs_path):
    r = open_slide(svs_path)
    out = r.read_region((2100, 2900), 0, (300, 200))
    assert out.shape == (200, 300, 3)
    assert (out[100:, :] == 255).all() and (out[:, 150:] == 255).all()
    assert not (out[:50, :100] == 255).all()


def test_read_at_mpp_matches_area_downsample(svs_path):
    r = open_slide(svs_path)
    native = r.read_region((600, 900), 0, (448, 448)).astype(np.float64)
    want = native.reshape(224, 2, 224, 2, 3).mean(axis=(1, 3))
    got = r.read_region_mpp((600, 900), (224, 224), mpp=2 * r.mpp)
    assert got.shape == (224, 224, 3)
    assert np.abs(got - want).mean() < 1.0


def test_png_and_array_backend(png_path):
    r = open_slide(png_path)
    assert r.mpp is None and r.dimensions == (1000, 1000)
    want = np.asarray(Image.open(png_path).convert("RGB"))
    assert np.array_equal(r.read_region((10, 20), 0, (100, 50)), want[20:70, 10:110])
    with pytest.raises(MissingMppError, match="he_1000px.png"):
        r.require_mpp()
    assert open_slide(png_path, mpp=0.25).mpp == 0.25


def test_plain_tiff(plain_tiff_path):
    r = open_slide(plain_tiff_path)
    assert r.backend == "tifffile"
    assert r.dimensions == (1493, 901) and r.mpp is None
    want = tifffile.imread(plain_tiff_path)
    assert np.array_equal(r.read_region((700, 300), 0, (64, 32)), want[300:332, 700:764, :3])


@pytest.mark.parametrize("ome", [False, True])
def test_pyramidal_tiff_levels_and_mpp(tmp_path, ome):
    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (1536, 2048, 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(img).resize((512, 384)).resize((2048, 1536)))  # smooth
    p = write_pyramid_tiff(tmp_path / ("p.ome.tif" if ome else "p.tif"), img, mpp=0.25, ome=ome)
    r = open_slide(p)
    assert r.backend == "tifffile"
    assert r.mpp == pytest.approx(0.25)
    assert r.meta.mpp_source == ("ome" if ome else "tiff-resolution")
    assert r.level_dimensions[:2] == ((2048, 1536), (1024, 768))
    assert r.level_downsamples[1] == pytest.approx(2.0)
    assert r.best_level_for_downsample(2.0) == 1
    assert r.best_level_for_downsample(1.9) == 0
    got = r.read_region_mpp((512, 256), (128, 128), mpp=0.5)  # served from level 1
    want = img[256:512, 512:768].astype(float).reshape(128, 2, 128, 2, 3).mean(axis=(1, 3))
    assert np.abs(got - want).mean() < 6  # JPEG q~75 on both levels
    if not ome:
        assert openslide.OpenSlide(str(p)).level_count == r.level_count


def test_lazy_levels_match_reads(layout_slide):
    p, img, _ = layout_slide
    r = open_slide(p)
    d = r.to_dask(1, chunk=300)
    assert d.shape[:2] == r.level_dimensions[1][::-1]
    assert np.array_equal(d[100:250, 200:500].compute(), r.read_region((400, 200), 1, (300, 150)))
    from histoviz.io.pyramid import display_levels

    levels = display_levels(r, max_coarse_side=256)
    assert [lv.shape[:2] for lv in levels[: r.level_count]] == [(h, w) for (w, h) in r.level_dimensions]
    assert max(levels[-1].shape[:2]) <= 256
    assert np.array_equal(levels[0][250:400, 500:900], r.read_region((500, 250), 0, (400, 150)))


def test_resize_rgb_box():
    a = np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3)
    out = resize_rgb(a, (8, 8))
    assert out.shape == (8, 8, 3)
    assert np.abs(out.astype(float) - a.astype(float).reshape(8, 2, 8, 2, 3).mean((1, 3))).max() <= 1


def test_errors_name_the_file(tmp_path):
    with pytest.raises(SlideOpenError, match="missing.svs: slide file not found"):
        open_slide(tmp_path / "missing.svs")
    bad = tmp_path / "corrupt.svs"
    bad.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(SlideOpenError, match="corrupt.svs"):
        open_slide(bad)
    txt = tmp_path / "notes.txt"
    txt.write_text("not an image")
    with pytest.raises(SlideOpenError, match="notes.txt: unsupported format"):
        open_slide(txt)
    empty = tmp_path / "empty.tif"
    empty.touch()
    with pytest.raises(SlideOpenError, match="empty.tif: file is empty"):
        open_slide(empty)
    with pytest.raises(SlideOpenError, match="is a directory"):
        open_slide(tmp_path)


def test_truncated_tiff_is_reported(tmp_path, layout_slide):
    p, _, _ = layout_slide
    data = p.read_bytes()
    cut = tmp_path / "truncated.tif"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(SlideOpenError, match="truncated.tif.*(truncated|corrupt)"):
        open_slide(cut).read_region((0, 0), 0, (1792, 1344))


def test_featurebag_roundtrip_and_contract(tmp_path):
    rng = np.random.default_rng(0)
    coords = rng.integers(0, 10000, (37, 2))
    feats = rng.normal(size=(37, 8)).astype(np.float32)
    attrs = {"slide_id": "s1", "encoder": "x", "tile_size": 224, "mpp": 0.5, "tile_size_level0": 448}
    p = FeatureBag(coords, feats, dict(attrs)).to_h5(tmp_path / "s1.h5")
    with h5py.File(p) as f:
        assert f["coords"].dtype == np.int64 and f["coords"].shape == (37, 2)
        assert f["features"].dtype == np.float32 and f["features"].shape == (37, 8)
        assert f.attrs["embed_dim"] == 8 and f.attrs["histoviz_version"]
    bag = FeatureBag.from_h5(p)
    assert np.array_equal(bag.coords, coords) and np.array_equal(bag.features, feats)
    assert bag.attrs["tile_size_level0"] == 448 and bag.slide_id == "s1"
    assert np.allclose(bag.centers, coords + 224)
    assert is_complete_bag(p, encoder="x") and not is_complete_bag(p, encoder="y")
    with pytest.raises(DataError, match="must be"):
        FeatureBag(coords, feats[:5])


def test_featurebag_writer_is_atomic(tmp_path):
    coords = np.zeros((10, 2), np.int64)
    attrs = {"slide_id": "s", "encoder": "x", "tile_size": 1, "mpp": 1.0, "tile_size_level0": 1}
    def fail_midway():
        with FeatureBagWriter(tmp_path / "s.h5", coords, 4, attrs) as w:
            w.write(0, np.ones((5, 4)))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fail_midway()
    assert list(tmp_path.iterdir()) == []
    w = FeatureBagWriter(tmp_path / "s.h5", coords, 4, attrs)
    w.write(0, np.ones((5, 4)))
    with pytest.raises(DataError, match="5 feature rows were never written"):
        w.close()
    assert list(tmp_path.iterdir()) == []
    with FeatureBagWriter(tmp_path / "s.h5", coords, 4, attrs) as w:
        w.write(5, np.full((5, 4), 2.0))
        w.write(0, np.ones((5, 4)))
    assert FeatureBag.from_h5(tmp_path / "s.h5").features[:, 0].tolist() == [1.0] * 5 + [2.0] * 5


def test_cli_info_json(svs_path, capsys):
    from histoviz.cli import main

    assert main(["info", str(svs_path), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["dimensions"] == [2220, 2967] and d["mpp"] == pytest.approx(0.499)
    assert d["objective_power"] == 20 and d["vendor"] == "aperio"
    assert main(["info", "does-not-exist.svs"]) == 1
    assert "does-not-exist.svs: slide file not found" in capsys.readouterr().err
