"""histoviz.data.synthetic: files, determinism, truth arithmetic and learnability."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from histoviz.data.synthetic import (
    CELL_TYPES,
    MODALITIES,
    TISSUE_TYPES,
    SyntheticConfig,
    load_synthetic_cohort,
    make_synthetic_cohort,
    render_synthetic_slide,
    simulated_labels_for_tiles,
    tile_composition,
    tile_truth,
)
from histoviz.errors import ConfigError, DataError

SMALL = {
    "n_slides": 10,
    "seed": 3,
    "slide_size": (1024, 1024),
    "n_genes": 60,
    "n_proteins": 12,
    "n_mirna": 10,
    "n_pathways": 8,
    "n_cells_reference": 300,
    "spatial_fraction": 0.2,
}
# Many patients, tiny slides: for statistics over patients (survival, omics read-outs).
BIG = {
    "n_slides": 110,
    "seed": 11,
    "slide_size": (256, 256),
    "n_genes": 40,
    "n_proteins": 10,
    "n_mirna": 12,
    "n_pathways": 14,
    "n_cells_reference": 60,
    "spatial_fraction": 0.0,
}
TINY = {
    "n_slides": 3,
    "slide_size": (512, 384),
    "n_genes": 20,
    "n_proteins": 4,
    "n_mirna": 4,
    "n_pathways": 3,
    "n_cells_reference": 30,
    "spatial_fraction": 0.34,
    "multi_slide_fraction": 0.5,
}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return make_synthetic_cohort(tmp_path_factory.mktemp("syn") / "small", **SMALL)


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    return make_synthetic_cohort(tmp_path_factory.mktemp("syn") / "big", **BIG)


def _spearman(a, b) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def _whole_slide_truth(c, sid: str) -> dict:
    w, h = c.config.slide_size
    return tile_truth(c, sid, [[0, 0]], (w, h))


def _patient_truth_expression(c) -> pd.DataFrame:
    table = c.cohort_table()
    genes = c.prototypes().columns
    rows = {}
    for pid, grp in table.groupby("patient_id", sort=True):
        rows[pid] = sum(_whole_slide_truth(c, s)["expression"][0] for s in grp["slide_id"])
    return pd.DataFrame(rows, index=genes).T


# ----------------------------------------------------------------------------------------------
def test_files_and_manifest(cohort):
    root = cohort.root
    man = json.loads((root / "manifest.json").read_text())
    assert man["config"] == SyntheticConfig(**SMALL).to_dict()
    assert man["tissue_types"] == list(TISSUE_TYPES) and man["cell_types"] == list(CELL_TYPES)
    for f in man["files"]:
        assert (root / f).is_file(), f
    assert len(cohort.slides) == 10 and all(p.is_file() for p in cohort.slides.values())
    assert set(cohort.omics) == set(MODALITIES)
    assert len(cohort.spatial) == 2
    # reload gives the same handle
    again = load_synthetic_cohort(root)
    assert again.slides == cohort.slides and again.config == cohort.config
    # truth npz holds no pickles
    with np.load(root / "truth" / "S001.npz", allow_pickle=False) as z:
        assert z["labels"].dtype == np.uint8 and int(z["downsample"]) == 4


def test_slides_open_with_both_backends(cohort):
    import openslide

    from histoviz.io import open_slide

    path = cohort.slides["S002"]
    r = open_slide(path)
    assert r.dimensions == (1024, 1024)
    assert r.level_count > 1
    assert r.mpp == pytest.approx(0.5, rel=1e-3)
    o = openslide.OpenSlide(str(path))
    try:
        assert o.level_count == r.level_count
        assert o.dimensions == (1024, 1024)
        assert float(o.properties["openslide.mpp-x"]) == pytest.approx(0.5, rel=1e-3)
        a = np.asarray(o.read_region((300, 200), 0, (256, 256)).convert("RGB"), dtype=float)
    finally:
        o.close()
    b = r.read_region((300, 200), 0, (256, 256)).astype(float)
    assert np.abs(a - b).mean() < 2.0  # same JPEG tiles, decoders may differ by rounding
    ro = open_slide(path, backend="openslide")
    assert ro.level_count == r.level_count and ro.mpp == pytest.approx(0.5, rel=1e-3)
    # level 1 is the 2x downsample of level 0
    lvl1 = r.read_region((0, 0), 1, (512, 512)).astype(float)
    lvl0 = r.read_region((0, 0), 0, (1024, 1024)).astype(float)
    assert np.abs(lvl0.reshape(512, 2, 512, 2, 3).mean(axis=(1, 3)) - lvl1).mean() < 3.0


def test_cohort_table(cohort):
    t = cohort.cohort_table()
    assert list(t.columns) == ["slide_id", "patient_id", "path", "time", "event", "grade"]
    assert t["slide_id"].is_unique
    assert all((cohort.cohort_csv.parent / p).is_file() for p in t["path"])
    assert not any(Path(p).is_absolute() for p in t["path"])
    n_pat = t["patient_id"].nunique()
    assert n_pat == cohort.config.n_patients == 8  # 10 slides, 2 patients with two
    multi = t.groupby("patient_id").filter(lambda g: len(g) == 2)
    assert len(multi) == 4
    assert (multi.groupby("patient_id")[["time", "event", "grade"]].nunique() == 1).all().all()
    assert set(t["grade"]) <= {1, 2, 3, 4} and set(t["event"]) <= {0, 1}
    assert (t["time"] > 0).all()


def test_determinism(tmp_path):
    import anndata
    import tifffile

    a = make_synthetic_cohort(tmp_path / "a", seed=5, **TINY)
    b = make_synthetic_cohort(tmp_path / "b", seed=5, **TINY)
    c = make_synthetic_cohort(tmp_path / "c", seed=6, **TINY)
    same = ["cohort.csv", "omics/gene.tsv", "truth/patients.csv", "truth/prototypes.csv"]
    for rel in same:
        assert (a.root / rel).read_bytes() == (b.root / rel).read_bytes(), rel
    for m in MODALITIES:
        xa, xb = anndata.read_h5ad(a.omics[m]), anndata.read_h5ad(b.omics[m])
        np.testing.assert_array_equal(xa.X, xb.X)
        assert list(xa.obs_names) == list(xb.obs_names)
    for sid in a.slides:
        np.testing.assert_array_equal(
            tifffile.imread(a.slides[sid]), tifffile.imread(b.slides[sid])
        )
        np.testing.assert_array_equal(a.truth(sid)["labels"], b.truth(sid)["labels"])
    assert a.spatial.keys() == b.spatial.keys()
    for sid in a.spatial:
        np.testing.assert_array_equal(a.spatial_adata(sid).X, b.spatial_adata(sid).X)
    # another seed: other pixels and other tables
    assert (a.root / "omics/gene.tsv").read_bytes() != (c.root / "omics/gene.tsv").read_bytes()
    assert not np.array_equal(tifffile.imread(a.slides["S001"]), tifffile.imread(c.slides["S001"]))
    # the number of threads does not change the output
    d = make_synthetic_cohort(tmp_path / "d", seed=5, n_jobs=1, progress=True, **TINY)
    assert (a.root / "cohort.csv").read_bytes() == (d.root / "cohort.csv").read_bytes()
    np.testing.assert_array_equal(
        tifffile.imread(a.slides["S002"]), tifffile.imread(d.slides["S002"])
    )


def test_index_offset_gives_new_patients_of_the_same_world(tmp_path):
    """A cohort with index_offset = n_slides of another (same seed) shares genes, prototypes and
    reference with it, and none of its ids, layouts or patient draws; an older manifest without
    the setting still reads as the default (the cohort is reused, not refused)."""
    import anndata
    import tifffile

    a = make_synthetic_cohort(tmp_path / "a", seed=5, **TINY)
    b = make_synthetic_cohort(tmp_path / "b", seed=5, index_offset=TINY["n_slides"], **TINY)
    ta, tb = a.cohort_table(), b.cohort_table()
    assert set(tb["slide_id"]) == {"S004", "S005", "S006"} and not set(ta["patient_id"]) & set(tb["patient_id"])
    pa, pb = pd.read_csv(a.root / "truth/patients.csv"), pd.read_csv(b.root / "truth/patients.csv")
    assert not set(np.round(pa["tumour_fraction"], 6)) & set(np.round(pb["tumour_fraction"], 6))
    assert (a.root / "truth/prototypes.csv").read_bytes() == (b.root / "truth/prototypes.csv").read_bytes()
    np.testing.assert_array_equal(anndata.read_h5ad(a.reference).X, anndata.read_h5ad(b.reference).X)
    first = tifffile.imread(a.slides["S001"])
    assert all(not np.array_equal(first, tifffile.imread(p)) for p in b.slides.values())
    m = json.loads((a.root / "manifest.json").read_text())
    del m["config"]["index_offset"]
    (a.root / "manifest.json").write_text(json.dumps(m))
    assert make_synthetic_cohort(tmp_path / "a", seed=5, **TINY).slides == a.slides


def test_rerun_is_noop_and_other_config_raises(cohort):
    files = sorted(p for p in cohort.root.rglob("*") if p.is_file())
    before = {p: p.stat().st_mtime_ns for p in files}
    again = make_synthetic_cohort(cohort.root, **SMALL)
    assert again.slides == cohort.slides
    assert {p: p.stat().st_mtime_ns for p in files} == before
    assert sorted(p for p in cohort.root.rglob("*") if p.is_file()) == files
    with pytest.raises(ConfigError, match="different configuration.*seed"):
        make_synthetic_cohort(cohort.root, **{**SMALL, "seed": 4})


def test_config_validation(tmp_path):
    with pytest.raises(ConfigError, match="missing_fraction"):
        SyntheticConfig(missing_fraction=1.0)
    with pytest.raises(ConfigError, match="slide_size"):
        SyntheticConfig(slide_size=(64, 64))
    with pytest.raises(ConfigError, match="n_slides"):
        SyntheticConfig(n_slides=0)
    with pytest.raises(ConfigError, match="tumour_fraction_range"):
        SyntheticConfig(tumour_fraction_range=(0.8, 0.2))
    with pytest.raises(ConfigError, match="unknown SyntheticConfig fields"):
        make_synthetic_cohort(tmp_path / "x", n_slide=3)
    with pytest.raises(DataError, match="no manifest"):
        load_synthetic_cohort(tmp_path)
    assert SyntheticConfig(slide_size=[512, 512]).slide_size == (512, 512)
    with pytest.raises(ConfigError, match="tumour_fraction"):
        render_synthetic_slide(np.random.default_rng(0), (256, 256), tumour_fraction=1.5)


def test_truth_tables(cohort):
    t2c = cohort.tissue_to_cell()
    assert list(t2c.index) == list(TISSUE_TYPES) and list(t2c.columns) == list(CELL_TYPES)
    np.testing.assert_allclose(t2c.sum(axis=1).to_numpy(), [0, 1, 1, 1, 1, 1])
    proto = cohort.prototypes()
    assert list(proto.index) == list(CELL_TYPES) and proto.shape == (6, 60)
    assert (proto.to_numpy() > 0).all()
    gene = cohort.omics_adata("gene")
    assert list(gene.var_names) == list(proto.columns)
    assert {"EPCAM", "KRT8", "COL1A1", "PTPRC", "CD3E", "CD68", "PECAM1", "MKI67"} <= set(
        gene.var_names
    )
    assert "G0001" in gene.var_names
    noise = ~gene.var["signal"].to_numpy()
    assert 0.15 <= noise.mean() <= 0.25
    # noise genes do not depend on the cell type; markers peak in their own cell type
    assert np.ptp(proto.to_numpy()[:, noise], axis=0).max() == 0
    assert proto["PTPRC"].idxmax() == "lymphocyte" and proto["COL1A1"].idxmax() == "fibroblast"
    pats = cohort.patients()
    assert len(pats) == 8
    comp = pats[[f"frac_{c}" for c in CELL_TYPES]].to_numpy()
    np.testing.assert_allclose(comp.sum(axis=1), 1.0, rtol=1e-5)  # CSV keeps 6 digits


def test_tile_composition_rows_and_exact_sums(cohort):
    sid = "S003"
    truth = cohort.truth(sid)
    ts = 128
    coords = np.array([(x, y) for y in range(0, 1024, ts) for x in range(0, 1024, ts)])
    comp = tile_composition(cohort, sid, coords, ts)
    tt = tile_truth(cohort, sid, coords, ts)
    np.testing.assert_array_equal(comp, tt["composition"])
    tissue = tt["tissue_fraction"] > 0
    assert tissue.any() and (~tissue).any()
    np.testing.assert_allclose(comp[tissue].sum(axis=1), 1.0)
    assert (comp[~tissue] == 0).all() and (comp >= 0).all()
    # by hand from the label map for grid-aligned tiles
    lab = truth["labels"]
    ds = truth["downsample"]
    dens = truth["cells_per_px2"][:, None] * truth["tissue_to_cell"]
    for (x, y), row, tf in zip(coords, comp, tt["tissue_fraction"]):
        block = lab[y // ds : (y + ts) // ds, x // ds : (x + ts) // ds]
        cells = dens[block].sum(axis=(0, 1))
        expect = cells / cells.sum() if cells.sum() > 0 else cells
        np.testing.assert_allclose(row, expect, atol=1e-9)
        assert tf == pytest.approx((block > 0).mean())
    # tiles straddling the slide edge: outside counts as background
    edge = tile_truth(truth, None, [[1024 - 64, 0]], 128)
    inner = tile_truth(truth, None, [[1024 - 64, 0]], (64, 128))
    assert edge["tissue_fraction"][0] == pytest.approx(inner["tissue_fraction"][0] / 2)
    # whole-slide expression is the sum of the tiles' expression (additivity)
    whole = _whole_slide_truth(cohort, sid)["expression"][0]
    np.testing.assert_allclose(tt["expression"].sum(axis=0), whole, rtol=1e-9)
    with pytest.raises(DataError):
        tile_composition(cohort, sid, np.zeros((3, 3)), 128)


def test_render_layout_matches_labels():
    rng = np.random.default_rng(0)
    rgb, lab = render_synthetic_slide(
        rng, (768, 512), 0.5, tissue_fraction=0.55, tumour_fraction=0.3, label_downsample=4
    )
    assert rgb.shape == (512, 768, 3) and rgb.dtype == np.uint8 and lab.shape == (128, 192)
    assert (lab > 0).mean() == pytest.approx(0.55, abs=0.01)
    assert (lab == 1).sum() / (lab > 0).sum() == pytest.approx(0.3, abs=0.01)
    from scipy.ndimage import binary_erosion

    deep_glass = binary_erosion(lab == 0, iterations=4)  # 16 px away from any tissue
    glass = rgb[np.repeat(np.repeat(deep_glass, 4, 0), 4, 1)]
    assert 236 <= glass.mean() <= 250 and glass.std() < 4
    # pixels that are not glass are where the label map says tissue
    tissue_px = rgb.min(axis=-1) < 228
    tissue_lab = np.repeat(np.repeat(lab > 0, 4, 0), 4, 1)
    assert (tissue_px == tissue_lab).mean() > 0.97
    assert abs(tissue_px.mean() - tissue_lab.mean()) < 0.02
    # each tissue type looks different: mean colour of pure regions
    means = {
        t: rgb[np.repeat(np.repeat(lab == t, 4, 0), 4, 1)].mean(axis=0) for t in np.unique(lab)
    }
    keys = list(means)
    for i in range(len(keys)):
        for j in range(i + 1, len(keys)):
            assert np.abs(means[keys[i]] - means[keys[j]]).max() > 8, (keys[i], keys[j])


def test_tile_tissue_fraction_matches_pixels(cohort):
    from histoviz.io import open_slide

    ts = 128
    for sid in ("S001", "S005"):
        r = open_slide(cohort.slides[sid])
        coords = np.array([(x, y) for y in range(0, 1024, ts) for x in range(0, 1024, ts)])
        tt = tile_truth(cohort, sid, coords, ts)
        measured = np.array(
            [
                (r.read_region((int(x), int(y)), 0, (ts, ts)).min(axis=-1) < 228).mean()
                for x, y in coords
            ]
        )
        assert np.corrcoef(measured, tt["tissue_fraction"])[0, 1] > 0.99
        assert np.abs(measured - tt["tissue_fraction"]).mean() < 0.03


def test_bulk_follows_tile_truth(big):
    gene = big.omics_adata("gene")
    truth = _patient_truth_expression(big).loc[gene.obs_names].to_numpy()
    signal = gene.var["signal"].to_numpy()
    x = np.asarray(gene.X, dtype=float)
    # per patient, across signal genes: bulk ranks genes as the summed tile truth does
    per_patient = np.array([_spearman(x[i, signal], truth[i, signal]) for i in range(len(x))])
    assert np.median(per_patient) > 0.9 and per_patient.min() > 0.8
    # per gene, across patients: signal genes track the truth, noise genes much less
    rho = np.array([_spearman(x[:, g], truth[:, g]) for g in range(x.shape[1])])
    assert np.median(rho[signal]) > 0.7
    assert np.median(rho[~signal]) < np.median(rho[signal]) - 0.15
    # the residual around truth x library factor is the configured NB noise (CV = noise)
    lib = big.patients().loc[gene.obs_names, "library_factor"].to_numpy()[:, None]
    high = signal & (truth.mean(axis=0) > 100)
    resid = np.log(x[:, high] / (truth[:, high] * lib))
    assert resid.std() == pytest.approx(big.config.noise, abs=0.06)
    assert abs(resid.mean()) < 0.1
    # counts are integers, the log1p-CPM layer is consistent with them
    assert np.array_equal(x, np.round(x)) and (x >= 0).all()
    cpm = np.log1p(x / x.sum(axis=1, keepdims=True) * 1e6)
    np.testing.assert_allclose(gene.layers["log1p_cpm"], cpm, rtol=1e-5, atol=1e-5)
    # patient table agrees with the per-slide truth
    pats = big.patients().loc[gene.obs_names]
    table = big.cohort_table()
    n_cells = table.groupby("patient_id")["slide_id"].apply(
        lambda s: sum(_whole_slide_truth(big, i)["n_cells"][0] for i in s)
    )
    np.testing.assert_allclose(pats["n_cells"], n_cells.loc[gene.obs_names], rtol=1e-6)


def test_xena_tsv_matches_h5ad(cohort):
    gene = cohort.omics_adata("gene")
    tsv = pd.read_csv(cohort.root / "omics" / "gene.tsv", sep="\t", index_col=0)
    assert list(tsv.index) == list(gene.var_names)
    assert list(tsv.columns) == list(gene.obs_names)
    np.testing.assert_array_equal(tsv.to_numpy().T, np.asarray(gene.X))


def test_derived_omics_layers(big):
    gene = big.omics_adata("gene")
    n_p = gene.n_obs
    logx = pd.DataFrame(gene.layers["log1p_cpm"], index=gene.obs_names, columns=gene.var_names)
    missing = {}
    for m in ("protein", "mirna", "pathway"):
        ad = big.omics_adata(m)
        assert set(ad.obs_names) < set(gene.obs_names)
        assert n_p - ad.n_obs == round(0.15 * n_p)
        missing[m] = set(gene.obs_names) - set(ad.obs_names)
        assert ad.var["signal"].any() and (~ad.var["signal"]).any()
        assert np.isfinite(ad.X).all()
    assert len({frozenset(v) for v in missing.values()}) == 3  # different patients per layer
    prot = big.omics_adata("protein")
    r_sig, r_noise = [], []
    for name, row in prot.var.iterrows():
        vals = prot[:, name].X.ravel()
        if row["signal"]:
            r_sig.append(_spearman(vals, logx.loc[prot.obs_names, row["source_gene"]]))
        else:
            r_noise.append(abs(_spearman(vals, logx.loc[prot.obs_names].iloc[:, 0])))
    assert np.median(r_sig) > 0.6 and np.median(r_noise) < 0.3
    # miRNA: signed read-outs of cell-type programmes (some anti-correlated)
    mir = big.omics_adata("mirna")
    markers = gene.var["marker_of"].astype(str)
    rs = []
    for name, row in mir.var.iterrows():
        if row["signal"]:
            prog = logx.loc[mir.obs_names, (markers == row["program"]).to_numpy()].mean(axis=1)
            rs.append(_spearman(mir[:, name].X.ravel(), prog) * row["sign"])
    assert np.min(rs) > 0 and np.median(rs) > 0.6 and (mir.var["sign"] == -1).any()
    # pathways: signal pathways follow their programme
    pw = big.omics_adata("pathway")
    assert "TGFb" in pw.var_names and pw.var.loc["TGFb", "program"] == "fibroblast"
    prog = logx.loc[pw.obs_names, (markers == "fibroblast").to_numpy()].mean(axis=1)
    assert _spearman(pw[:, "TGFb"].X.ravel(), prog) > 0.6


def test_survival_and_grade_follow_tumour(big):
    from lifelines import CoxPHFitter

    pats = big.patients()
    assert len(pats) == big.config.n_patients > 80
    cens = 1 - pats["event"].mean()
    assert 0.15 <= cens <= 0.45
    assert _spearman(pats["grade"], pats["tumour_fraction"]) > 0.7
    assert set(pats["grade"]) == {1, 2, 3, 4}
    cph = CoxPHFitter().fit(pats[["time", "event", "tumour_fraction"]], "time", "event")
    assert cph.params_["tumour_fraction"] > 0 and cph.summary.loc["tumour_fraction", "p"] < 0.01
    table = big.cohort_table().drop_duplicates("patient_id").set_index("patient_id")
    np.testing.assert_allclose(table.loc[pats.index, "time"], pats["time"])


def test_spatial_spots(cohort):
    sid = sorted(cohort.spatial)[0]
    ad = cohort.spatial_adata(sid)
    meta = ad.uns["spatial_meta"]
    assert meta["mpp"] == 0.5 and meta["spot_diameter_px"] == pytest.approx(110.0)
    assert (cohort.spatial[sid].parent / meta["slide_path"]).resolve() == cohort.slides[
        sid
    ].resolve()
    xy = ad.obsm["spatial"]
    r = meta["spot_diameter_px"] / 2
    assert (xy - r >= 0).all() and (xy + r <= 1024).all()
    d = np.sqrt(((xy[:, None] - xy[None]) ** 2).sum(-1)) + np.eye(len(xy)) * 1e9
    assert d.min(axis=1).max() == pytest.approx(200.0, rel=1e-6)  # 100 um centre spacing
    inside = ad.obs["in_tissue"].to_numpy() == 1
    assert inside.sum() >= 5
    # spot expression follows the local composition (truth from the label map, not the file)
    comp = tile_composition(cohort, sid, xy - r, 2 * r)[inside]
    x = np.asarray(ad.X, dtype=float)
    lib = x.sum(axis=1, keepdims=True)
    frac = (x / lib)[inside]
    markers = cohort.omics_adata("gene").var["marker_of"].astype(str).to_numpy()
    k = int(np.argmax(comp.var(axis=0)))  # the cell type that varies most over this slide
    sel = markers == CELL_TYPES[k]
    assert _spearman(frac[:, sel].sum(axis=1), comp[:, k]) > 0.6
    # each spot matches its own expected profile better than another spot's
    proto = cohort.prototypes().to_numpy()
    expect = comp @ proto
    expect /= expect.sum(axis=1, keepdims=True)
    lf, le = np.log1p(frac * 1e4), np.log1p(expect * 1e4)
    own = np.array([np.corrcoef(lf[i], le[i])[0, 1] for i in range(len(lf))])
    other = np.array([np.corrcoef(lf[i], le[(i + 1) % len(lf)])[0, 1] for i in range(len(lf))])
    assert np.median(own) > 0.8 and (own > other).mean() > 0.6
    if (~inside).any():
        assert lib[inside].mean() > 3 * lib[~inside].mean()


def test_reference_matches_prototypes(cohort):
    ref = cohort.reference_adata()
    proto = cohort.prototypes()
    assert ref.n_obs == 300 and list(ref.var_names) == list(proto.columns)
    assert list(ref.obs["cell_type"].cat.categories) == list(CELL_TYPES)
    assert np.array_equal(ref.layers["counts"], ref.X)
    x = np.asarray(ref.X, dtype=float)
    for ct in CELL_TYPES:
        m = x[(ref.obs["cell_type"] == ct).to_numpy()].mean(axis=0)
        assert np.corrcoef(np.log1p(m), np.log1p(proto.loc[ct]))[0, 1] > 0.9


def test_composition_is_learnable_from_pixels(cohort):
    """Mean colour + haematoxylin quantiles + ridge predict tile composition on held-out slides."""
    from skimage.color import rgb2hed
    from sklearn.linear_model import RidgeCV
    from sklearn.metrics import r2_score
    from sklearn.model_selection import GroupKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from histoviz.io import open_slide

    ts = 128
    feats, target, group = [], [], []
    for k, (sid, path) in enumerate(cohort.slides.items()):
        r = open_slide(path)
        coords = np.array([(x, y) for y in range(0, 1024, ts) for x in range(0, 1024, ts)])
        tt = tile_truth(cohort, sid, coords, ts)
        for (x, y), tf, comp in zip(coords, tt["tissue_fraction"], tt["composition"]):
            if tf < 0.5:
                continue
            im = r.read_region((int(x), int(y)), 0, (ts, ts))
            px = im.reshape(-1, 3).astype(float)
            h = rgb2hed(im)[..., 0].ravel()
            feats.append(np.r_[px.mean(0), px.std(0), np.quantile(h, [0.25, 0.5, 0.75, 0.9])])
            target.append(comp)
            group.append(k)
    x, y, g = np.array(feats), np.array(target), np.array(group)
    assert len(y) > 150
    model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13)))
    pred = cross_val_predict(model, x, y, groups=g, cv=GroupKFold(5))
    r2 = r2_score(y, pred, multioutput="variance_weighted")
    assert r2 > 0.65, r2
    # and the labels are not learnable from a constant: predicting the training mean scores ~0
    assert r2_score(y, np.broadcast_to(y.mean(0), y.shape)) == pytest.approx(0.0, abs=1e-9)


def test_simulated_labels_for_tiles(cohort, png_path):
    from histoviz.io import open_slide

    if png_path.exists():  # real H&E when sample_data ships it
        img = open_slide(png_path, mpp=0.5)
        w, h = img.dimensions
        tiles = np.stack(
            [
                img.read_region((x, y), 0, (96, 96))
                for y in range(0, h - 95, 96)
                for x in range(0, w - 95, 96)
            ]
        )
    else:
        r = open_slide(cohort.slides["S001"])
        tiles = np.stack(
            [
                r.read_region((x, y), 0, (96, 96))
                for y in range(0, 1024, 96)
                for x in range(0, 1024, 96)
            ]
        )
    labels, hd = simulated_labels_for_tiles(tiles, n_genes=12, seed=1)
    assert labels.shape == (len(tiles), 12) and hd.shape == (len(tiles),)
    assert labels.dtype == np.float32 and np.isfinite(labels).all()
    again, _ = simulated_labels_for_tiles(tiles, n_genes=12, seed=1)
    np.testing.assert_array_equal(labels, again)
    other, _ = simulated_labels_for_tiles(tiles, n_genes=12, seed=2)
    assert not np.array_equal(labels, other)
    rho = np.array([abs(_spearman(labels[:, g], hd)) for g in range(12)])
    assert (rho[:9] > 0.6).all()  # signal genes follow the haematoxylin density
    assert (rho[9:] < 0.4).all()  # the last quarter is pure noise
    with pytest.raises(DataError):
        simulated_labels_for_tiles(tiles[..., 0])
