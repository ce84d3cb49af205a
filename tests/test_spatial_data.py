"""Spatial data: Space Ranger import, spot positions on the image, normalisation, gene sets, bad
input (one-line errors naming the file), and no fitted statistic seeing the test sample."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from histoviz.data.spatial import (
    VISIUM_SPOT_UM,
    PatchSpec,
    SpotSample,
    SpotsSpec,
    align_genes,
    load_spot_sample,
    normalize_log1p,
    select_genes,
    spot_grid,
)
from histoviz.data.st_import import import_spaceranger
from histoviz.errors import ConfigError, DataError

ROOT = Path(__file__).resolve().parents[1]
VISIUM = ROOT / "sample_data" / "real" / "visium_mini"


@pytest.fixture(scope="module")
def visium(tmp_path_factory) -> Path:
    return import_spaceranger(VISIUM, tmp_path_factory.mktemp("st") / "visium_mini.h5ad")


def _positions() -> pd.DataFrame:
    return pd.read_csv(VISIUM / "spatial" / "tissue_positions_list.csv", header=None,
                       names=["barcode", "in_tissue", "row", "col", "pxl_row", "pxl_col"]).set_index("barcode")


def test_visium_imports_with_positions_scaled_to_its_image(visium):
    s = load_spot_sample(visium)
    sf = json.loads((VISIUM / "spatial" / "scalefactors_json.json").read_text())
    scale = sf["tissue_lowres_scalef"]  # the hi-res image of this test folder is blank, so low-res is used
    assert Path(s.slide_path).name == "tissue_lowres_image.png" and s.slide_dimensions == (600, 600)
    pos = _positions().loc[s.barcodes]
    np.testing.assert_allclose(s.centres[:, 0], pos["pxl_col"] * scale, rtol=1e-12)
    np.testing.assert_allclose(s.centres[:, 1], pos["pxl_row"] * scale, rtol=1e-12)
    assert s.spot_diameter_px == pytest.approx(sf["spot_diameter_fullres"] * scale)
    assert s.mpp == pytest.approx(VISIUM_SPOT_UM / s.spot_diameter_px)  # no mpp on a PNG: from the 55 um spot
    counts = ad.read_h5ad(visium).X
    assert len(s) == 100 and counts.shape == (100, 100) and s.counts.sum() == counts.sum()


def test_spot_circles_land_on_their_barcodes_and_on_the_tissue(visium):
    """Pixel check: each spot's circle, rasterised at the image's resolution, covers the pixel of its
    barcode's scaled position and nothing one radius beyond; the circles lie on tissue."""
    from PIL import Image

    from histoviz.viz.spots import spot_raster

    s = load_spot_sample(visium)
    img = np.asarray(Image.open(s.slide_path).convert("RGB")).astype(int)
    sat = img.max(axis=2) - img.min(axis=2)
    ras = spot_raster(s.centres, s.spot_diameter_px, np.arange(len(s)), sat.shape)
    scale = json.loads((VISIUM / "spatial" / "scalefactors_json.json").read_text())["tissue_lowres_scalef"]
    pos = _positions().loc[s.barcodes]
    r = s.spot_diameter_px / 2
    for i, (px, py) in enumerate(zip(pos["pxl_col"] * scale, pos["pxl_row"] * scale)):
        assert ras[int(py), int(px)] == i
        for ang in np.linspace(0, 2 * np.pi, 8, endpoint=False):
            x, y = px + 1.8 * r * np.cos(ang), py + 1.8 * r * np.sin(ang)
            assert ras[int(y), int(x)] != i
    disk_sat = np.array([sat[ras == i].mean() for i in range(len(s))])
    background = np.percentile(sat[5:60, 5:590], 99)  # the glass above the tissue and its fiducials
    assert np.median(disk_sat) > 4 * background
    assert (disk_sat > background).sum() >= 90  # every spot is in_tissue; a few sit on gaps in the muscle


def test_spot_patches_are_centred_on_the_spots(visium):
    s = load_spot_sample(visium)
    g = spot_grid(s, PatchSpec(size_um=112, mpp=0.5))
    assert g.tile_size == 224 and g.tile_size_level0 == round(112 / s.mpp)
    np.testing.assert_allclose(g.coords + g.tile_size_level0 / 2, s.centres, atol=0.5 + 1e-9)
    g2 = spot_grid(s, PatchSpec(size_um=None, tile_px=64))
    assert g2.tile_size == 64 and g2.tile_size_level0 == round(s.spot_diameter_px)


def test_normalisation_matches_scanpy_and_uses_each_spot_alone():
    import scanpy as sc

    rng = np.random.default_rng(0)
    x = sp.csr_matrix(rng.poisson(2.0, size=(30, 12)).astype(np.float32))
    a = ad.AnnData(x.copy())
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    got = normalize_log1p(x, target_sum=1e4)
    np.testing.assert_allclose(got, a.X.toarray(), rtol=1e-5, atol=1e-6)
    x2 = x.tolil()
    x2[5:, :] = 0  # other spots change: spot 0..4 unchanged
    np.testing.assert_allclose(normalize_log1p(x2.tocsr(), target_sum=1e4)[:5], got[:5], rtol=1e-6)


def test_hvg_and_heg_sets_follow_scanpy_on_training_spots():
    import scanpy as sc

    rng = np.random.default_rng(1)
    counts = rng.negative_binomial(5, 0.3, size=(200, 60)).astype(np.float32)
    counts[:, :10] *= rng.gamma(0.5, 4.0, size=(200, 1))  # 10 highly variable genes
    genes = [f"g{i}" for i in range(60)]
    x = normalize_log1p(counts)
    gs = select_genes(x, genes, n_genes=20, n_hvg=10, n_heg=5, markers=["g59", "nope"])
    a = ad.AnnData(x.copy(), var=pd.DataFrame(index=genes))
    sc.pp.highly_variable_genes(a, flavor="seurat", n_top_genes=10)
    assert set(gs.sets["hvg10"]) == set(a.var_names[a.var["highly_variable"]])
    assert gs.sets["heg5"] == list(pd.Series(x.mean(0), index=genes).sort_values(ascending=False).index[:5])
    assert gs.sets["markers"] == ["g59"] and "g59" in gs.targets
    np.testing.assert_allclose(gs.mean, x[:, [genes.index(g) for g in gs.targets]].mean(0), rtol=1e-6)


# ------------------------------------------------------------------------------------------------
# bad input: one line naming the file
# ------------------------------------------------------------------------------------------------
def _copy_visium(tmp_path: Path) -> Path:
    d = tmp_path / "sr"
    shutil.copytree(VISIUM, d)
    return d


def test_barcodes_without_positions_are_an_error_naming_the_files(tmp_path):
    d = _copy_visium(tmp_path)
    f = d / "spatial" / "tissue_positions_list.csv"
    lines = f.read_text().splitlines()
    f.write_text("\n".join(lines[3:]) + "\n")
    with pytest.raises(DataError, match=r"filtered_feature_bc_matrix\.h5: 3 of 100 barcodes match no row of .*tissue_positions_list\.csv"):
        import_spaceranger(d, tmp_path / "out.h5ad")


def test_missing_spot_diameter_in_scalefactors_is_an_error(tmp_path):
    d = _copy_visium(tmp_path)
    f = d / "spatial" / "scalefactors_json.json"
    sf = json.loads(f.read_text())
    del sf["spot_diameter_fullres"]
    f.write_text(json.dumps(sf))
    with pytest.raises(DataError, match=r"scalefactors_json\.json: spot_diameter_fullres is missing"):
        import_spaceranger(d, tmp_path / "out.h5ad")
    a = ad.read_h5ad(import_spaceranger(VISIUM, tmp_path / "ok.h5ad"))
    del a.uns["spatial_meta"]["spot_diameter_px"]
    del a.uns["spatial"]
    a.write_h5ad(tmp_path / "nodiam.h5ad")
    with pytest.raises(DataError, match=r"nodiam\.h5ad: the spot diameter is missing"):
        load_spot_sample(tmp_path / "nodiam.h5ad")


def test_spots_outside_the_slide_are_an_error(tmp_path, visium):
    a = ad.read_h5ad(visium)
    a.obsm["spatial"] = a.obsm["spatial"] * 10  # full-resolution positions on the low-res image
    a.uns["spatial_meta"]["slide_path"] = str(VISIUM / "spatial" / "tissue_lowres_image.png")
    a.write_h5ad(tmp_path / "outside.h5ad")
    with pytest.raises(DataError, match=r"outside\.h5ad: \d+ of 100 spots lie outside the slide \(600 x 600 px\)"):
        load_spot_sample(tmp_path / "outside.h5ad")
    d = _copy_visium(tmp_path)
    with pytest.raises(DataError, match=r"tissue_positions_list\.csv: \d+ of 100 spots lie outside the slide"):
        import_spaceranger(d, tmp_path / "o.h5ad", slide=VISIUM / "spatial" / "tissue_lowres_image.png")


def _sample(genes: list[str], name: str) -> SpotSample:
    return SpotSample(name, name, sp.csr_matrix(np.ones((4, len(genes)), np.float32)), genes,
                      [f"b{i}" for i in range(4)], np.zeros((4, 2)), 10.0, 0.5, "", path=f"{name}.h5ad")


def test_genes_differing_between_samples(caplog):
    a, b = _sample(["A", "B", "C", "D"], "s1"), _sample(["C", "A", "E"], "s2")
    with caplog.at_level(logging.WARNING, logger="histoviz.data.spatial"):
        assert align_genes([a, b]) == ["A", "C"]
    assert "keeping the 2 shared by all" in caplog.text and "s1.h5ad: 2" in caplog.text
    with pytest.raises(DataError, match=r"no gene is shared by all 2 samples \(s1\.h5ad: 4 genes.*s3\.h5ad: 2 genes"):
        align_genes([a, _sample(["ENSG1", "ENSG2"], "s3")])


def test_st_import_cli_bad_input_is_one_line_naming_the_file(tmp_path, capsys):
    from histoviz.cli import main

    d = _copy_visium(tmp_path)
    (d / "spatial" / "scalefactors_json.json").write_text("{}")
    assert main(["st-import", str(d), "--out", str(tmp_path / "x.h5ad")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("histoviz st-import: error: ")
    assert "scalefactors_json.json: spot_diameter_fullres is missing" in err[0]
    assert main(["st-import", str(VISIUM), "--out", str(tmp_path / "v.h5ad"), "--patient-id", "P1"]) == 0
    assert "visium_mini: 100 spots x 100 genes" in capsys.readouterr().out
    assert load_spot_sample(tmp_path / "v.h5ad").patient_id == "P1"


def test_spots_config_section_is_strict(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.spots: unknown key\(s\) \['sampels'\]"):
        SpotsSpec.from_dict({"sampels": "x", "features": "f"})
    with pytest.raises(ConfigError, match=r"data\.spots\.patch: unknown key\(s\) \['size'\]"):
        SpotsSpec.from_dict({"samples": "x", "features": "f", "patch": {"size": 3}})
    from histoviz.training.config import load_config

    base = {"data": {"spots": {"samples": str(tmp_path), "features": str(tmp_path)}}, "model": {"name": "cmrcnet"}}
    cfg = load_config(base)
    assert cfg.data.spots.patch == PatchSpec() and cfg.evaluation.spots.top_k == (50, 500)
    with pytest.raises(ConfigError, match=r"evaluation\.spots: unknown key\(s\) \['topk'\]"):
        load_config({**base, "evaluation": {"spots": {"topk": [5]}}})
    with pytest.raises(ConfigError, match=r"a spot experiment \(data\.spots\) takes no \['cohort'\]"):
        load_config({**base, "data": {**base["data"], "cohort": "c.csv"}})
    with pytest.raises(ConfigError, match="serves"):
        load_config({**base, "model": {"name": "abmil-grade"}})


# ------------------------------------------------------------------------------------------------
# honesty: scramble the test sample, nothing fitted changes
# ------------------------------------------------------------------------------------------------
def _toy_data(seed: int = 0, scramble: int | None = None):
    from histoviz.training.spots import SpotExperimentData

    rng = np.random.default_rng(seed)
    genes = [f"G{j}" for j in range(40)]
    load = rng.normal(size=(3, 40))
    samples, feats = [], []
    for i in range(4):
        z = rng.normal(size=(30, 3))
        counts = rng.poisson(np.exp(1.0 + z @ load * 0.5)).astype(np.float32)
        x = (z @ rng.normal(size=(3, 6)) + 0.3 * rng.normal(size=(30, 6))).astype(np.float32)
        if i == scramble:
            counts = rng.poisson(50.0, size=counts.shape).astype(np.float32)  # another sample entirely
            x = rng.normal(size=x.shape).astype(np.float32) * 100
        samples.append(SpotSample(f"S{i}", f"P{i}", sp.csr_matrix(counts), genes, [f"b{k}" for k in range(30)],
                                  rng.uniform(0, 1000, (30, 2)), 110.0, 0.5, "", path=f"S{i}.h5ad"))
        feats.append(x)
    return SpotExperimentData(samples, genes, {"toy": feats}, {"toy": {}}, "toy")


def test_no_gene_selection_or_fitted_statistic_sees_the_test_sample():
    from histoviz.training.config import load_config
    from histoviz.training.spots import fit_spot_model, prepare_fold

    cfg = load_config({"data": {"spots": {"samples": ".", "features": ".", "n_genes": 15,
                                          "markers": ["G3"]}},
                       "evaluation": {"spots": {"n_hvg": 5, "n_heg": 5}},
                       "model": {"name": "cmrcnet", "params": {"dim": 16, "n_image_tokens": 2, "n_gene_tokens": 2,
                                                                "cross_heads": 2, "fusion_heads": 2}},
                       "training": {"epochs": 2, "device": "cpu", "val_fraction": 0.25}})
    train = [0, 1, 2]
    fitted = []
    for scramble in (None, 3):
        data = _toy_data(scramble=scramble)
        prep = prepare_fold(cfg, data, train)
        m = fit_spot_model(cfg, data, prep, "cmrcnet", cfg.model.params, seed=0)
        fitted.append((prep, m.state()))
    (p0, (m0, a0)), (p1, (m1, a1)) = fitted
    assert p0.targets == p1.targets and p0.genes.sets == p1.genes.sets
    np.testing.assert_array_equal(p0.genes.mean, p1.genes.mean)
    np.testing.assert_array_equal(p0.genes.var, p1.genes.var)
    assert sorted(a0) == sorted(a1)
    for k in a0:
        np.testing.assert_array_equal(a0[k], a1[k], err_msg=k)
    # and the scrambled sample would have changed them had it been a training sample
    data = _toy_data(scramble=2)
    assert prepare_fold(cfg, data, train).genes.sets != p0.genes.sets


def test_hest_layout_imports_with_its_metadata(tmp_path):
    import tifffile

    from histoviz.data.st_import import import_hest

    root = tmp_path / "hest"
    for sub in ("st", "wsis", "metadata"):
        (root / sub).mkdir(parents=True)
    tifffile.imwrite(root / "wsis" / "TENX0.tif", np.full((500, 800, 3), 220, np.uint8))
    (root / "metadata" / "TENX0.json").write_text(json.dumps({"pixel_size_um_estimated": 0.25, "spot_diameter": 55.0,
                                                               "patient": "P7"}))
    a = ad.AnnData(np.ones((3, 4), np.float32), obs=pd.DataFrame(index=["a", "b", "c"]),
                   var=pd.DataFrame(index=["G1", "G2", "G3", "G4"]))
    a.obsm["spatial"] = np.array([[100.0, 100.0], [400.0, 250.0], [700.0, 400.0]])
    a.write_h5ad(root / "st" / "TENX0.h5ad")
    out = import_hest(root / "st" / "TENX0.h5ad", tmp_path / "TENX0.h5ad")
    s = load_spot_sample(out)
    assert (s.sample_id, s.patient_id, s.mpp) == ("TENX0", "P7", 0.25)
    assert s.spot_diameter_px == pytest.approx(55.0 / 0.25) and Path(s.slide_path).name == "TENX0.tif"
    np.testing.assert_allclose(s.centres, a.obsm["spatial"])
    a.obsm["spatial"] = a.obsm["spatial"] * 2
    a.write_h5ad(root / "st" / "TENX0.h5ad")
    with pytest.raises(DataError, match=r"TENX0\.h5ad: 2 of 3 spots lie outside the slide \(800 x 500 px\)"):
        import_hest(root / "st" / "TENX0.h5ad", tmp_path / "x.h5ad")


def test_gene_symbols_from_features_tsv_and_spots_back_on_the_full_resolution_image(tmp_path):
    """Issue 17.7: Visium genes showed as Ensembl ids; spots were 4-px dots on the low-res image."""
    import gzip

    import h5py
    from PIL import Image

    from histoviz.viz.spots import SpotView

    d = _copy_visium(tmp_path)
    with h5py.File(d / "filtered_feature_bc_matrix.h5") as f:
        ids = [x.decode() for x in f["matrix/features/id"][:]]
    (d / "filtered_feature_bc_matrix").mkdir()
    with gzip.open(d / "filtered_feature_bc_matrix" / "features.tsv.gz", "wt") as fh:  # Space Ranger's MEX table
        fh.writelines(f"{g}\tSYM{k}\tGene Expression\n" for k, g in enumerate(ids) if k != 7)
    a = ad.read_h5ad(import_spaceranger(d, tmp_path / "sym.h5ad"))
    want = [f"SYM{k}" if k != 7 else ids[7] for k in range(len(ids))]  # no symbol listed: the id stays
    assert list(a.var_names) == want and list(a.var["gene_ids"]) == ids
    assert a.uns["spatial_meta"]["image_scale"] == pytest.approx(
        json.loads((VISIUM / "spatial" / "scalefactors_json.json").read_text())["tissue_lowres_scalef"])
    # the full-resolution image of the section: the spots scale back up by the ratio of the widths
    view = SpotView.read(tmp_path / "sym.h5ad")
    assert view.genes[0] == "SYM0"
    small = Image.open(d / "spatial" / "tissue_lowres_image.png")
    full_path = tmp_path / "full.png"
    small.resize((small.width * 5, small.height * 5)).save(full_path)
    full = view.on_full_resolution(full_path)
    np.testing.assert_allclose(full.centres, view.centres * 5)
    assert full.diameter == pytest.approx(view.diameter * 5) and full.slide_path == str(full_path.resolve())
    small.resize((small.width * 5, small.height * 3)).save(tmp_path / "other.png")
    with pytest.raises(DataError, match="aspect ratio"):
        view.on_full_resolution(tmp_path / "other.png")
