"""Prediction maps without Qt: lattices, rasters, placement, picking, map values, summaries."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from histoviz.errors import DataError
from histoviz.io.predictions import make_prediction_adata
from histoviz.viz.colors import apply_colormap, category_colors, colorbar_image, label_color_dict
from histoviz.viz.maps import (
    MapSpec,
    PatchLayout,
    PredictionMaps,
    available_maps,
    check_predictions_match_slide,
    level0_to_world,
    map_values,
    world_to_level0,
)
from histoviz.viz.summary import patch_summary, top_genes

TS = 224


def lattice(cols: int = 5, rows: int = 4, x0: int = 448, y0: int = 224, drop=()) -> np.ndarray:
    """Top-left corners of a cols x rows block of 224-px patches, minus ``drop`` (row, col)."""
    return np.array([[x0 + c * TS, y0 + r * TS] for r in range(rows) for c in range(cols)
                     if (r, c) not in drop])


@pytest.fixture
def adata():
    rng = np.random.default_rng(0)
    coords = lattice(drop={(1, 2)})
    n = len(coords)
    ct = pd.DataFrame(rng.dirichlet(np.ones(3), n), columns=["tumour", "stroma", "immune"])
    ct.iloc[4] = [0.1, 0.1, 0.8]
    gp = pd.DataFrame(rng.dirichlet(np.ones(3), n), columns=["G1", "G2", "G3"])
    co = pd.DataFrame(rng.random((n, 2)), columns=["immune response", "proliferation"])
    expr = rng.random((n, 4)).astype(np.float32)
    expr[7] = [0.1, 5.0, 3.0, np.nan]
    a = make_prediction_adata(
        coords, slide_id="S1", tile_size_level0=TS, expression=expr,
        genes=["CD3E", "MKI67", "COL1A1", "EPCAM"],
        obs={"risk": rng.standard_normal(n), "attention": rng.dirichlet(np.ones(n)),
             "grade_pred": pd.Categorical(gp.idxmax(axis=1).to_numpy(), categories=["G1", "G2", "G3"]),
             "grade_set_size": np.full(n, 2.0), "risk_width": np.full(n, 1.5), "purity": rng.random(n)},
        obsm={"cell_type_weights": ct, "grade_proba": gp, "coattention": co},
        meta={"slide_dimensions": [2000, 1500], "mpp": 0.5, "model": "test"},
    )
    a.uns["slide_prediction"] = {
        "gene": {"kind": "regression", "targets": np.array(["CD3E", "MKI67"]), "values": np.array([0.1, 0.2])},
        "grade": {"kind": "classification", "targets": np.array(["G1", "G2", "G3"]),
                  "values": np.array([0.2, 0.5, 0.3]), "predicted": "G2", "set": np.array(["G2", "G3"]),
                  "alpha": 0.1, "uncertainty": 0.25},
        "survival": {"kind": "survival", "targets": np.array(["S_0", "S_1", "S_2", "S_3"]),
                     "values": np.array([0.9, 0.7, 0.5, 0.2]), "risk": -2.3, "lo": -3.0, "hi": -1.5, "alpha": 0.1},
    }
    return a


# ---- lattice ------------------------------------------------------------------------------------
def test_layout_places_each_patch_in_its_own_cell():
    coords = lattice(drop={(1, 2), (3, 0)})
    lay = PatchLayout.from_coords(coords, TS)
    assert lay.shape == (4, 5) and lay.cell_size == TS and lay.origin == (448.0, 224.0)
    assert not lay.snapped
    r = lay.raster(np.arange(len(coords), dtype=float))
    assert np.isnan(r[1, 2]) and np.isnan(r[3, 0])
    for i, (x, y) in enumerate(coords):
        assert r[(y - 224) // TS, (x - 448) // TS] == i
    assert lay.values_from_raster(r) == pytest.approx(np.arange(len(coords)))
    labels = lay.label_raster(np.array([-1] + [2] * (len(coords) - 1)))
    assert labels.dtype == np.int32 and labels[0, 0] == 0 and labels[0, 1] == 3 and labels[1, 2] == 0


def test_stride_inference_gaps_overlap_and_irregular():
    # only every other tile kept: lattice is still the tile size
    gaps = np.array([[0, 0], [448, 0], [0, 448], [896, 896]])
    assert PatchLayout.from_coords(gaps, TS).cell_size == TS
    # 50 % overlap: cells of the stride, centred in their patch
    ov = np.array([[x, y] for y in range(0, 560, 112) for x in range(0, 560, 112)])
    lay = PatchLayout.from_coords(ov, TS)
    assert lay.cell_size == 112 and lay.origin == (56.0, 56.0) and lay.shape == (5, 5)
    # the centre of each patch is inside its own cell
    for i, (x, y) in enumerate(ov):
        assert lay.patch_at_level0(x + TS / 2, y + TS / 2) == i
    # coordinates off the lattice are snapped, with a flag
    odd = np.array([[0, 0], [230, 0], [448, 3]])
    lay = PatchLayout.from_coords(odd, TS)
    assert lay.snapped and lay.shape == (1, 3)
    # an explicit stride wins
    assert PatchLayout.from_coords(gaps, TS, stride_level0=448).shape == (3, 3)


def test_layout_rejects_bad_input():
    with pytest.raises(DataError, match="no patches"):
        PatchLayout.from_coords(np.zeros((0, 2)), TS)
    with pytest.raises(DataError, match=r"\(N, 2\)"):
        PatchLayout.from_coords(np.zeros((3, 3)), TS)
    with pytest.raises(DataError, match="tile_size_level0"):
        PatchLayout.from_coords(np.zeros((1, 2)), 0)
    with pytest.raises(DataError, match="lattice"):
        PatchLayout.from_coords(np.array([[0, 0], [224 * 20000, 224 * 20000]]), TS)


# ---- placement and picking -------------------------------------------------------------------
@pytest.mark.parametrize(("scale", "translate"), [((1.0, 1.0), (0.0, 0.0)), ((0.25, 0.25), (10.0, -3.0))])
def test_placement_puts_raster_pixels_exactly_over_their_patches(scale, translate):
    lay = PatchLayout.from_coords(lattice(), TS)
    pl = lay.placement(scale, translate)
    assert pl.scale == pytest.approx((TS * scale[0], TS * scale[1]))
    for (r, c), (x, y) in zip(lay.index, lay.coords, strict=True):
        # raster pixel (r, c) spans [c - 0.5, c + 0.5] in its data coordinates
        left = pl.translate[1] + pl.scale[1] * (c - 0.5)
        top = pl.translate[0] + pl.scale[0] * (r - 0.5)
        right = pl.translate[1] + pl.scale[1] * (c + 0.5)
        # ... which must be the world position of the patch's level-0 edges
        assert (top, left) == pytest.approx(level0_to_world((x, y), scale, translate))
        assert right == pytest.approx(level0_to_world((x + TS, y), scale, translate)[1])


def test_world_level0_round_trip():
    xy = (1234.5, 987.25)
    w = level0_to_world(xy, (0.5, 0.5), (3.0, 4.0))
    assert world_to_level0(w, (0.5, 0.5), (3.0, 4.0)) == pytest.approx(xy)
    # nD world positions use their last two axes
    assert world_to_level0((7.0, *w), (0.5, 0.5), (3.0, 4.0)) == pytest.approx(xy)


def test_click_at_patch_centre_and_boundaries():
    coords = lattice(drop={(1, 2)})
    lay = PatchLayout.from_coords(coords, TS)
    scale, translate = (0.5, 0.5), (0.0, 0.0)
    for i, (x, y) in enumerate(coords):
        assert lay.patch_at_world(level0_to_world((x + TS / 2, y + TS / 2), scale, translate),
                                  scale, translate) == i
    i = int(np.flatnonzero((coords == [448, 224]).all(axis=1))[0])
    right = int(np.flatnonzero((coords == [448 + TS, 224]).all(axis=1))[0])
    below = int(np.flatnonzero((coords == [448, 224 + TS]).all(axis=1))[0])
    # a boundary belongs to the right / lower neighbour
    assert lay.patch_at_level0(448 + TS, 300) == right
    assert lay.patch_at_level0(448 + TS - 1e-6, 300) == i
    assert lay.patch_at_level0(500, 224 + TS) == below
    # the hole at (row 1, col 2) and everything off the lattice is no patch
    assert lay.patch_at_level0(448 + 2 * TS + 5, 224 + TS + 5) is None
    assert lay.patch_at_level0(447.9, 300) is None
    assert lay.patch_at_level0(448 + 5 * TS, 300) is None
    assert lay.patch_bounds(i) == (448, 224, 448 + TS, 224 + TS)


# ---- maps ------------------------------------------------------------------------------------------
def test_available_maps_lists_what_the_file_has(adata):
    m = available_maps(adata)
    assert list(m) == ["gene", "cell_type", "dominant_type", "grade_proba", "grade_class", "grade_set_size",
                       "risk", "risk_width", "coattention", "attention", "obs"]
    assert m["gene"] == ["CD3E", "MKI67", "COL1A1", "EPCAM"]
    assert m["obs"] == ["purity"]
    bare = make_prediction_adata(lattice(), slide_id="S", tile_size_level0=TS)
    assert available_maps(bare) == {}


def test_map_values_of_every_kind(adata):
    g = map_values(adata, "gene:MKI67")
    assert g.values == pytest.approx(np.asarray(adata[:, "MKI67"].X).ravel())
    assert not g.categorical and g.label == "gene MKI67" and g.colormap == "inferno"
    lo, hi = g.contrast_limits
    assert lo < hi and lo >= np.nanmin(g.values) and hi <= np.nanmax(g.values)
    assert map_values(adata, "cell_type:immune").values[4] == pytest.approx(0.8)
    assert map_values(adata, "cell_type:immune").contrast_limits == (0.0, 1.0)
    dom = map_values(adata, "dominant_type")
    assert dom.categorical and dom.categories == ("tumour", "stroma", "immune")
    assert (dom.values == adata.obsm["cell_type_weights"].to_numpy().argmax(1)).all()
    assert dom.category_names()[4] == "immune"
    grade = map_values(adata, "grade_class")
    assert (grade.values == adata.obsm["grade_proba"].to_numpy().argmax(1)).all()
    assert map_values(adata, "grade_proba:G3").label == "P(grade = G3)"
    assert map_values(adata, "risk").values == pytest.approx(adata.obs["risk"].to_numpy())
    assert map_values(adata, "risk").unit == "-sum S (higher = worse)"
    assert map_values(adata, "grade_proba:G1").is_probability and not map_values(adata, "risk").is_probability
    assert map_values(adata, "coattention:proliferation").values == pytest.approx(
        adata.obsm["coattention"]["proliferation"].to_numpy())
    assert map_values(adata, "attention").values.sum() == pytest.approx(1.0, rel=1e-5)
    assert map_values(adata, "obs:purity").values == pytest.approx(adata.obs["purity"].to_numpy())
    # a cached wrapper gives the same values
    pm = PredictionMaps(adata)
    assert map_values(pm, "cell_type:stroma").values == pytest.approx(
        map_values(adata, "cell_type:stroma").values)


def test_grade_class_from_predicted_labels(adata):
    adata.obs["grade_pred"] = pd.Categorical(["G1", "G3"] * (adata.n_obs // 2) + ["G3"] * (adata.n_obs % 2))
    adata.obs.loc[adata.obs_names[0], "grade_pred"] = np.nan
    mv = map_values(adata, "grade_class")
    assert mv.categories == ("G1", "G2", "G3")
    assert mv.values[0] == -1 and mv.values[1] == 2 and mv.values[2] == 0
    assert "grade_pred" not in available_maps(adata).get("obs", [])


def test_unknown_maps_and_keys_are_clear_errors(adata):
    with pytest.raises(DataError, match=r"unknown gene 'MKI6'; did you mean MKI67\?"):
        map_values(adata, "gene:MKI6")
    with pytest.raises(DataError, match="unknown cell-type weight 'fibroblast'"):
        map_values(adata, "cell_type:fibroblast")
    with pytest.raises(DataError, match="unknown map kind 'genes'"):
        map_values(adata, "genes:MKI67")
    with pytest.raises(DataError, match="needs a key"):
        MapSpec("gene")
    bare = make_prediction_adata(lattice(), slide_id="S", tile_size_level0=TS)
    with pytest.raises(DataError, match="no risk map"):
        map_values(bare, "risk")


def test_map_spec_round_trip():
    for text in ("gene:CD3E", "risk", "cell_type:immune cells", "coattention:a:b"):
        assert str(MapSpec.parse(text)) == text
    assert MapSpec.parse("coattention:a:b").key == "a:b"


# ---- one patch ---------------------------------------------------------------------------------------
def test_patch_summary_lists_every_registered_output(adata):
    from histoviz.outputs import get_output

    s = patch_summary(adata, 7, n_genes=3)
    x, y = (int(v) for v in adata.obs[["x", "y"]].iloc[7])
    assert (s["x"], s["y"], s["size"]) == (x, y, TS)
    assert s["centre"] == (x + 112.0, y + 112.0)
    assert s["centre_um"] == pytest.approx(((x + 112) * 0.5, (y + 112) * 0.5))
    assert s["top_genes"] == [("MKI67", 5.0), ("COL1A1", 3.0), ("CD3E", pytest.approx(0.1))]
    # single-valued outputs: registry names, labels and units, in registry order
    rows = {r["name"]: r for r in s["rows"]}
    assert list(rows) == ["dominant_type", "grade_class", "grade_set_size", "risk", "risk_width", "attention"]
    assert rows["risk"]["value"] == pytest.approx(adata.obs["risk"].iloc[7])
    assert rows["risk"]["label"] == get_output("risk").label and rows["risk"]["unit"] == get_output("risk").unit
    assert rows["grade_class"]["value"] == adata.obsm["grade_proba"].iloc[7].idxmax()
    assert rows["dominant_type"]["value"] == adata.obsm["cell_type_weights"].iloc[7].idxmax()
    assert s["outputs"]["Grade set size (conformal)"] == 2.0
    # multi-valued outputs as frames with their columns
    frames = {f["name"]: f for f in s["frames"]}
    assert list(frames) == ["cell_type", "grade_proba", "coattention"]
    assert frames["cell_type"]["values"] == pytest.approx(adata.obsm["cell_type_weights"].iloc[7].to_dict())
    assert frames["grade_proba"]["kind"] == "probability" and frames["grade_proba"]["label"] == "Grade probability"
    assert set(frames["coattention"]["values"]) == {"immune response", "proliferation"}
    assert patch_summary(adata, 4)["outputs"]["Dominant cell type"] == "immune"
    # a new output declared in the registry shows up without any change here
    adata.obsm["pred_protein"] = pd.DataFrame(np.ones((adata.n_obs, 2)), index=adata.obs_names, columns=["TP53", "MYC"])
    assert "Other modality (protein, miRNA, pathway): protein" in [f["label"] for f in patch_summary(adata, 0)["frames"]]
    with pytest.raises(DataError, match="out of range"):
        patch_summary(adata, adata.n_obs)


def test_slide_predictions_say_grade_set_and_risk_interval(adata):
    from histoviz.viz.summary import slide_predictions

    rows = {r["block"]: r for r in slide_predictions(adata)}
    assert rows["grade"]["line"] == ("grade: G2 (p = 0.50); conformal set {G2, G3} (alpha 0.1: covers the truth "
                                     "90% of the time)")
    assert rows["grade"]["set"] == ["G2", "G3"] and rows["grade"]["uncertainty"] == 0.25
    assert rows["survival"]["line"].startswith("survival: risk -2.300 (-sum S over 4 time bins); conformal "
                                               "interval [-3.000, -1.500]")
    assert (rows["survival"]["lo"], rows["survival"]["hi"]) == (-3.0, -1.5)
    assert rows["gene"]["line"] == "gene: 2 targets predicted for the slide"
    del adata.uns["slide_prediction"]
    assert slide_predictions(adata) == []


def test_simulated_values_say_so_in_every_label(adata):
    from histoviz.viz.maps import is_simulated

    assert not is_simulated(adata) and map_values(adata, "risk").label == "risk"
    adata.uns["histoviz"]["simulated"] = True
    mv = map_values(adata, "gene:MKI67")
    assert mv.label == "simulated gene MKI67" and mv.title == "simulated gene MKI67 (target space)"
    assert map_values(adata, "dominant_type").label == "simulated dominant cell type"
    adata.uns["histoviz"]["simulated"] = False
    adata.uns["histoviz"]["model"] = "simulated: anything"
    assert not is_simulated(adata)  # the explicit flag wins
    del adata.uns["histoviz"]["simulated"]
    assert is_simulated(adata)


def test_top_genes_skips_nan(adata):
    assert [g for g, _ in top_genes(adata, 7, 10)] == ["MKI67", "COL1A1", "CD3E"]


# ---- slide checks ------------------------------------------------------------------------------------
def test_predictions_for_another_slide_are_refused(adata):
    check_predictions_match_slide(adata, slide_id="S1", dimensions=(2000, 1500))
    with pytest.raises(DataError, match="for slide 'S1', but the open slide is 'S2'"):
        check_predictions_match_slide(adata, slide_id="S2", dimensions=(2000, 1500))
    check_predictions_match_slide(adata, slide_id="S2", dimensions=(2000, 1500), allow_other_id=True)
    with pytest.raises(DataError, match="2000 x 1500 px slide, but the open slide is 2001 x 1500"):
        check_predictions_match_slide(adata, slide_id="S1", dimensions=(2001, 1500))
    del adata.uns["histoviz"]["slide_dimensions"]
    with pytest.raises(DataError, match="outside the open 1000 x 1000 px slide"):
        check_predictions_match_slide(adata, dimensions=(1000, 1000))


# ---- colours -----------------------------------------------------------------------------------------
def test_colours():
    rgba = apply_colormap(np.array([0.0, 0.5, 1.0, 2.0, np.nan]), "gray", (0.0, 1.0))
    assert rgba[:, 0].tolist() == [0, 128, 255, 255, 0] and rgba[4, 3] == 0
    cols = category_colors(30)
    assert cols.shape == (30, 4) and len({tuple(c) for c in cols}) == 30
    d = label_color_dict(3)
    assert d[0][3] == 0 and d[None][3] == 0 and d[1] == tuple(category_colors(3)[0])
    bar = colorbar_image("viridis", 100, 5)
    assert bar.shape == (5, 100, 3) and (bar[0] == bar[4]).all() and not (bar[:, 0] == bar[:, -1]).all()
    with pytest.raises(ValueError, match="unknown colormap"):
        apply_colormap(np.zeros(2), "no-such-map", (0, 1))


# ---- display pyramid and demo predictions -------------------------------------------------------------
def test_display_levels_read_lazily_what_is_asked(svs_path):
    from histoviz.io import open_slide
    from histoviz.io.pyramid import display_levels

    r = open_slide(svs_path)
    levels = display_levels(r)
    assert [lv.shape for lv in levels] == [(2967, 2220, 3), (1483, 1110, 3), (741, 555, 3)]
    assert np.array_equal(levels[0][100:140:2, 50:90, 1], r.read_region((50, 100), 0, (40, 40))[::2, :, 1])
    assert levels[0][5, 7].shape == (3,) and levels[0][-1, -1].shape == (3,)
    coarse = np.asarray(levels[2])
    assert coarse.shape == (741, 555, 3) and coarse.dtype == np.uint8
    want = r.read_region_downsample((0, 0), (555, 741), 4)
    assert np.array_equal(coarse, want)


def test_simulated_maps_are_flagged_and_simulate_no_outcome(svs_path):
    from histoviz.demo.simulated import simulated_maps
    from histoviz.io import open_slide
    from histoviz.tiling.grid import TilingConfig, make_tile_grid
    from histoviz.viz.maps import is_simulated

    r = open_slide(svs_path)
    grid = make_tile_grid(r, TilingConfig(tile_size=224, mpp=0.5))
    a = simulated_maps(r, grid, n_genes=5)
    assert a.n_obs == len(grid) and a.n_vars == 5
    # no grade, risk, attention or uncertainty is ever simulated: those come from models only
    assert set(available_maps(a)) == {"gene", "cell_type", "dominant_type"}
    assert np.allclose(a.obsm["cell_type_weights"].sum(axis=1), 1.0, atol=1e-5)
    assert is_simulated(a) and "simulated" in a.uns["histoviz"]["model"]
    assert all(map_values(a, s).label.startswith("simulated ") for s in ("gene:sim_gene_01", "dominant_type"))
    check_predictions_match_slide(a, slide_id=r.slide_id, dimensions=r.dimensions)


def test_other_modalities_are_maps(adata):
    adata.obsm["pred_protein"] = pd.DataFrame(np.arange(adata.n_obs * 2).reshape(-1, 2) * 1.0,
                                              index=adata.obs_names, columns=["TP53", "ERBB2"])
    assert available_maps(adata)["modality"] == ["protein/TP53", "protein/ERBB2"]
    mv = map_values(adata, "modality:protein/ERBB2")
    assert mv.label == "protein ERBB2" and mv.values == pytest.approx(np.arange(adata.n_obs) * 2 + 1.0)
    with pytest.raises(DataError, match="unknown target 'protein/MYC'"):
        map_values(adata, "modality:protein/MYC")
