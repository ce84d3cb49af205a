"""Regions of a slide (histoviz.viz.regions): which patches a region holds, region means with
bootstrap intervals that cover at their promised rate, comparisons, QuPath GeoJSON in and out."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from histoviz.errors import DataError
from histoviz.io.predictions import make_prediction_adata
from histoviz.viz.regions import (
    Region,
    compare_regions,
    patches_in_region,
    read_qupath_geojson,
    region_table,
    write_qupath_geojson,
    write_region_table,
)


def _grid(n: int = 20, ts: int = 100, **obs: np.ndarray):
    xy = np.array([[x * ts, y * ts] for y in range(n) for x in range(n)])
    return make_prediction_adata(xy, slide_id="S", tile_size_level0=ts, obs=obs), xy


def test_a_patch_belongs_to_a_region_when_its_centre_is_inside_holes_excluded():
    a, xy = _grid(10)
    outer = np.array([[0, 0], [1000, 0], [1000, 1000], [0, 1000]], float)
    hole = np.array([[300, 300], [700, 300], [700, 700], [300, 700]], float)
    reg = Region("ring", ((outer, hole),))
    inside = patches_in_region(a, reg)
    centres = xy + 50
    want = np.flatnonzero(~((centres[:, 0] > 300) & (centres[:, 0] < 700) & (centres[:, 1] > 300)
                            & (centres[:, 1] < 700)))
    assert inside.tolist() == want.tolist() and len(inside) == 100 - 16
    two = Region("two boxes", (Region.box("a", 0, 0, 200, 100).polygons[0],
                               Region.box("b", 800, 900, 1000, 1000).polygons[0]))
    assert patches_in_region(a, two).tolist() == [0, 1, 98, 99]


def test_bootstrap_intervals_cover_the_true_difference_at_the_promised_rate():
    rng = np.random.default_rng(0)
    covered, excluded_zero = [], []
    for sim in range(150):
        v = rng.normal(0.0, 1.0, 400)
        v[:200] += 0.4  # region A (first 10 rows of patches) is 0.4 higher on average
        a, _ = _grid(20, risk=v.astype(np.float32))
        top, bottom = Region.box("A", 0, 0, 2000, 1000), Region.box("B", 0, 1000, 2000, 2000)
        c = compare_regions(a, top, bottom, maps=["risk"], n_boot=400, seed=sim).iloc[0]
        assert (int(c.n_a), int(c.n_b)) == (200, 200)
        assert c.difference == pytest.approx(v[:200].mean() - v[200:].mean(), rel=1e-5)
        covered.append(c.ci_low <= 0.4 <= c.ci_high)
        excluded_zero.append(bool(c.excludes_zero))
    assert 0.90 <= np.mean(covered) <= 0.99  # 95 % promised
    assert np.mean(excluded_zero) > 0.9  # 0.4 = 4 standard errors (200 + 200 patches): power ~0.98


def test_region_table_means_and_intervals_per_map():
    v = np.arange(400, dtype=np.float32)
    a, _ = _grid(20, risk=v, attention=np.ones(400, np.float32))
    regs = [Region.box("top", 0, 0, 2000, 1000), Region.box("none", 5000, 5000, 6000, 6000)]
    t = region_table(a, regs, n_boot=500)
    top = t[(t.region == "top") & (t["map"] == "risk")].iloc[0]
    assert top.n_patches == 200 and top["mean"] == pytest.approx(v[:200].mean())
    assert top.sd == pytest.approx(v[:200].std(ddof=1), rel=1e-5) and top.ci_low < top["mean"] < top.ci_high
    att = t[(t.region == "top") & (t["map"] == "attention")].iloc[0]
    assert att["mean"] == 1.0 and att.ci_low == att.ci_high == 1.0
    assert t[t.region == "none"]["n_patches"].eq(0).all() and t[t.region == "none"]["mean"].isna().all()
    with pytest.raises(DataError, match="covers 0 patch"):
        compare_regions(a, regs[0], regs[1], maps=["risk"])


def test_qupath_geojson_round_trip_with_holes_multipolygons_and_classes(tmp_path):
    outer = np.array([[0, 0], [1000, 0], [1000, 1000], [0, 1000]], float)
    hole = np.array([[300, 300], [700, 300], [700, 700], [300, 700]], float)
    regs = [Region("tumour core", ((outer, hole), (outer + 2000,)), classification="Tumor", color=(200, 0, 0)),
            Region.polygon("stroma", [[0, 2000], [500, 2000], [250, 2600]])]
    p = write_qupath_geojson(regs, tmp_path / "r.geojson")
    doc = json.loads(p.read_text())
    assert [f["geometry"]["type"] for f in doc["features"]] == ["MultiPolygon", "Polygon"]
    assert doc["features"][0]["properties"]["classification"] == {"name": "Tumor", "color": [200, 0, 0]}
    assert all(f["properties"]["objectType"] == "annotation" for f in doc["features"])
    back = read_qupath_geojson(p)
    assert [r.name for r in back] == ["tumour core", "stroma"] and back[0].classification == "Tumor"
    assert back[0].color == (200, 0, 0) and len(back[0].polygons) == 2 and len(back[0].polygons[0]) == 2
    a, _ = _grid(30)
    for r0, r1 in zip(regs, back):
        assert patches_in_region(a, r0).tolist() == patches_in_region(a, r1).tolist()


def test_qupath_files_as_exported_and_bad_ones(tmp_path):
    # QuPath 0.4 writes a bare list of features; detections and points are not regions
    feats = [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [10, 0], [10, 10], [0, 0]]]},
         "properties": {"objectType": "annotation", "classification": {"name": "Stroma", "color": [0, 150, 0]}}},
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [5, 0], [5, 5], [0, 0]]]},
         "properties": {"objectType": "detection"}},
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [3, 3]}, "properties": {}},
    ]
    p = tmp_path / "qupath.geojson"
    p.write_text(json.dumps(feats))
    (r,) = read_qupath_geojson(p)
    assert r.name == "Stroma" and r.classification == "Stroma"
    bad = {"junk": "not json at all {", "empty": json.dumps({"type": "FeatureCollection", "features": []}),
           "nan": json.dumps({"type": "Feature", "properties": {},
                              "geometry": {"type": "Polygon", "coordinates": [[["a", 0], [1, 1], [2, 0]]]}})}
    for name, text in bad.items():
        f = tmp_path / f"{name}.geojson"
        f.write_text(text)
        with pytest.raises(DataError) as e:
            read_qupath_geojson(f)
        assert str(f) in str(e.value) and "\n" not in str(e.value)


def test_region_table_csv_is_written_whole(tmp_path):
    a, _ = _grid(5, risk=np.arange(25, dtype=np.float32))
    t = region_table(a, [Region.box("all", 0, 0, 500, 500)], n_boot=200)
    out = write_region_table(t, tmp_path / "regions.csv")
    assert pd.read_csv(out).equals(pd.read_csv(out)) and list(pd.read_csv(out)["region"]) == ["all"]
    assert not list(tmp_path.glob("*.tmp*"))
