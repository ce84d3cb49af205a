"""Omics import, validation, matching to the cohort, fold-fitted preprocessing, pathways."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from histoviz.data.omics import (
    OmicsSpec,
    TargetPreprocessor,
    load_omics,
    pathway_activity,
    read_network,
    read_omics_table,
)
from histoviz.errors import ConfigError, DataError

ROOT = Path(__file__).resolve().parents[1]
PROGENY = ROOT / "sample_data" / "progeny_human_top100.csv"
PATIENTS = [f"P{i}" for i in range(6)]


def _write_h5ad(path: Path, x: np.ndarray, samples: list[str], targets: list[str]) -> Path:
    ad.AnnData(X=x.astype(np.float32), obs=pd.DataFrame(index=samples), var=pd.DataFrame(index=targets)).write_h5ad(path)
    return path


def _write_xena(path: Path, x: np.ndarray, samples: list[str], targets: list[str]) -> Path:
    pd.DataFrame(x.T, index=pd.Index(targets, name="gene"), columns=samples).to_csv(path, sep="\t")
    return path


@pytest.fixture
def counts():
    rng = np.random.default_rng(0)
    x = rng.poisson(50, size=(6, 5)).astype(float)
    x[:, 4] = 0
    x[:2, 4] = 7  # median over all patients is zero
    return x


def test_h5ad_and_xena_agree(tmp_path, counts):
    g = ["A", "B", "C", "D", "E"]
    a = read_omics_table(_write_h5ad(tmp_path / "g.h5ad", counts, PATIENTS, g))
    b = read_omics_table(_write_xena(tmp_path / "g.tsv", counts, PATIENTS, g))
    assert list(a.obs_names) == list(b.obs_names) == PATIENTS
    np.testing.assert_allclose(a.X, b.X)


def test_duplicate_ids_are_errors(tmp_path, counts):
    p = tmp_path / "dup.tsv"
    _write_xena(p, counts, ["P0", "P1", "P2", "P3", "P4", "P1"], list("ABCDE"))
    with pytest.raises(DataError, match=r"duplicate sample id.*P1"):
        read_omics_table(p)
    p2 = _write_xena(tmp_path / "dupt.tsv", counts, PATIENTS, ["A", "B", "A", "D", "E"])
    with pytest.raises(DataError, match=r"duplicate target id.*A"):
        read_omics_table(p2)


def test_nan_only_where_allowed(tmp_path, counts):
    x = counts.copy()
    x[2, 1] = np.nan
    p = _write_h5ad(tmp_path / "p.h5ad", x, PATIENTS, list("ABCDE"))
    with pytest.raises(DataError, match=r"missing value.*impute: median"):
        load_omics(PATIENTS, {"protein": OmicsSpec(path=str(p))})
    om = load_omics(PATIENTS, {"protein": OmicsSpec(path=str(p), impute="median")})
    prep = TargetPreprocessor(om["protein"].spec).fit(om["protein"].values[:4], om["protein"].targets)
    out = prep.transform(om["protein"].values)
    assert not np.isnan(out).any()
    assert out[2, 1] == pytest.approx(np.median(counts[[0, 1, 3], 1]))  # training-patient median


def test_unmatched_and_no_overlap(tmp_path, counts):
    p = _write_h5ad(tmp_path / "g.h5ad", counts, ["P0", "P1", "P2", "P3", "P4", "X9"], list("ABCDE"))
    with pytest.raises(DataError, match=r"match no slide.*X9"):
        load_omics(PATIENTS, {"gene": OmicsSpec(path=str(p))})
    om = load_omics(PATIENTS, {"gene": OmicsSpec(path=str(p), unmatched_samples="drop")})
    assert om["gene"].present.tolist() == [True] * 5 + [False]
    assert np.isnan(om["gene"].values[5]).all()
    q = _write_h5ad(tmp_path / "none.h5ad", counts, [f"Q{i}" for i in range(6)], list("ABCDE"))
    with pytest.raises(DataError, match="none of its 6 samples"):
        load_omics(PATIENTS, {"gene": OmicsSpec(path=str(q))})


def test_tcga_barcodes_and_duplicate_patients(tmp_path, counts):
    samples = [f"{p}-01A-11R" for p in PATIENTS[:5]] + ["P0-11A-11R"]  # P0: tumour + normal sample
    p = _write_h5ad(tmp_path / "g.h5ad", counts, samples, list("ABCDE"))
    with pytest.raises(DataError, match=r"several samples for patient.*P0"):
        load_omics(PATIENTS, {"gene": OmicsSpec(path=str(p), id_length=2)})
    om = load_omics(PATIENTS, {"gene": OmicsSpec(path=str(p), id_length=2, duplicate_patients="mean")})
    np.testing.assert_allclose(om["gene"].values[0], (counts[0] + counts[5]) / 2)
    assert not om["gene"].present[5]


def test_log_of_negative_values_is_an_error(tmp_path):
    x = np.array([[1.0, -2.0], [0.5, 3.0], [2.0, 1.0]])
    p = _write_h5ad(tmp_path / "rppa.h5ad", x, PATIENTS[:3], ["a", "b"])
    with pytest.raises(DataError, match="negative values"):
        load_omics(PATIENTS, {"protein": OmicsSpec(path=str(p), transform="log10p1")})


def test_normalise_and_log10(tmp_path, counts):
    p = _write_h5ad(tmp_path / "g.h5ad", counts, PATIENTS, list("ABCDE"))
    om = load_omics(PATIENTS, {"gene": OmicsSpec(path=str(p), normalize="total", target_sum=100, transform="log10p1")})
    g = om["gene"]
    expected = np.log10(1 + counts / counts.sum(1, keepdims=True) * 100)
    np.testing.assert_allclose(g.values, expected)
    np.testing.assert_allclose(g.counts, counts)
    np.testing.assert_allclose(g.library, counts.sum(1))


def test_median_zero_filter_is_fitted_on_training_patients_only(tmp_path, counts):
    """The filter must not look at test patients: changing them changes nothing."""
    p = _write_h5ad(tmp_path / "g.h5ad", counts, PATIENTS, list("ABCDE"))
    spec = OmicsSpec(path=str(p), drop_median_zero=True, standardize=True)
    g = load_omics(PATIENTS, {"gene": spec})["gene"]
    train, test = np.array([0, 1, 2]), np.array([3, 4, 5])
    prep = TargetPreprocessor(spec).fit(g.values[train], g.targets)
    # E is non-zero in 2 of the 3 training patients: kept, although its all-patient median is 0
    assert prep.targets_ == list("ABCDE")
    # a leaky implementation (fit on all patients) would drop E
    leaky = TargetPreprocessor(spec).fit(g.values, g.targets)
    assert "E" not in leaky.targets_
    vals = g.values.copy()
    vals[test] = 1e6 * np.random.default_rng(1).random((3, 5))
    prep2 = TargetPreprocessor(spec).fit(vals[train], g.targets)
    assert prep2.targets_ == prep.targets_
    np.testing.assert_allclose(prep2.mean_, prep.mean_)
    np.testing.assert_allclose(prep2.std_, prep.std_)


def test_preprocessor_state_round_trip(tmp_path, counts):
    p = _write_h5ad(tmp_path / "g.h5ad", counts, PATIENTS, list("ABCDE"))
    spec = OmicsSpec(path=str(p), normalize="total", transform="log1p", drop_median_zero=True, standardize=True)
    g = load_omics(PATIENTS, {"gene": spec})["gene"]
    prep = TargetPreprocessor(spec).fit(g.values, g.targets)
    meta, arrays = prep.to_state()
    back = TargetPreprocessor.from_state(meta, arrays)
    np.testing.assert_allclose(back.transform(g.values), prep.transform(g.values))
    out = prep.output_transform()
    # the output transform maps normalised values to the same processed space
    norm = g.counts / g.counts.sum(1, keepdims=True) * spec.target_sum
    np.testing.assert_allclose(out.apply(norm[:, prep.keep_]), prep.transform(g.values), atol=1e-9)


def test_config_errors():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['tranform'\]"):
        OmicsSpec.from_dict({"path": "x.h5ad", "tranform": "log10p1"}, where="data.omics.gene")
    with pytest.raises(ConfigError, match="transform"):
        OmicsSpec(path="x", transform="log7")


def test_progeny_network_reproduces_the_r_package():
    """Our extracted PROGENy model + decoupler give the R package's regression-test scores."""
    net = read_network(PROGENY)
    assert net["source"].nunique() == 14
    assert (net.groupby("source").size() == 100).all()
    x = pd.read_csv(ROOT / "sample_data/progeny_test/human_input.csv", index_col=0).T
    expected = pd.read_csv(ROOT / "sample_data/progeny_test/human_def_expected.csv", index_col=0)
    top10 = net.groupby("source").head(10)  # the R test uses top = 10
    s = pathway_activity(x, top10, method="wsum", min_targets=1)
    z = (s - s.mean()) / s.std()  # progeny(scale = TRUE)
    np.testing.assert_allclose(z[expected.columns].to_numpy(), expected.to_numpy(), atol=1e-4)


def test_pathway_from_expression_modality(tmp_path):
    rng = np.random.default_rng(0)
    genes = [f"G{i}" for i in range(40)]
    act = rng.normal(size=20)
    x = rng.normal(size=(20, 40)) * 0.3
    x[:, :10] += act[:, None]  # pathway "up" targets
    net = pd.DataFrame({"source": "PW", "target": genes[:10], "weight": 1.0})
    net_path = tmp_path / "net.csv"
    net.to_csv(net_path, index=False)
    pats = [f"P{i}" for i in range(20)]
    p = _write_h5ad(tmp_path / "g.h5ad", x + 5, pats, genes)
    om = load_omics(pats, {"gene": OmicsSpec(path=str(p)),
                           "pathway": OmicsSpec(from_modality="gene", network=str(net_path))})
    pw = om["pathway"]
    assert pw.targets == ["PW"]
    assert np.corrcoef(pw.values[:, 0], act)[0, 1] > 0.9
    with pytest.raises(DataError, match="gene symbols must match"):
        pathway_activity(pd.DataFrame(x, columns=[f"X{i}" for i in range(40)]), net)
