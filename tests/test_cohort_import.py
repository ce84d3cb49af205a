"""``histoviz import`` piece by piece: TCGA barcodes, clinical formats (cBioPortal, GDC, plain
tables), grade and status strings, omics layouts and orientation, features made elsewhere
(TRIDENT), the checks before training, and bad input (one line naming the file and the fix,
nothing written)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from histoviz.errors import ConfigError, DataError


# ---- barcodes --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "patient", "sample", "tissue", "kind"), [
    ("TCGA-A1-A0SB-01Z-00-DX1.B34C267B-CAAA-4AB6-AD5C-276C26F997A1.svs", "TCGA-A1-A0SB", "TCGA-A1-A0SB-01",
     "tumour", "diagnostic"),
    ("TCGA-A1-A0SB-11A-01-TS1.uuid.svs", "TCGA-A1-A0SB", "TCGA-A1-A0SB-11", "normal", "frozen"),
    ("TCGA-A1-A0SB-06A-01-BS1.x.svs", "TCGA-A1-A0SB", "TCGA-A1-A0SB-06", "tumour", "frozen"),
    ("TCGA-A1-A0SB-01A-11R-A144-07", "TCGA-A1-A0SB", "TCGA-A1-A0SB-01", "tumour", None),
    ("TCGA-A1-A0SB-01", "TCGA-A1-A0SB", "TCGA-A1-A0SB-01", "tumour", None),
    ("tcga-a1-a0sb", "TCGA-A1-A0SB", None, None, None),
])
def test_barcodes(text, patient, sample, tissue, kind):
    from histoviz.data.tcga import parse_barcode

    b = parse_barcode(text)
    assert (b.patient, b.sample, b.tissue, b.slide_kind) == (patient, sample, tissue, kind)


def test_not_barcodes_and_type_choices():
    from histoviz.data.tcga import parse_barcode, parse_sample_types, parse_slide_types

    assert parse_barcode("slide_001.svs") is None and parse_barcode("TCGA-A1") is None
    assert parse_sample_types("tumour") == {f"{i:02d}" for i in range(1, 10)}
    assert parse_sample_types("01,6") == {"01", "06"} and parse_slide_types("diagnostic") == {"DX"}
    assert parse_slide_types("frozen,DX") == {"DX", "TS", "BS", "MS"}
    with pytest.raises(ConfigError, match="--sample-types 'tumor-ish'"):
        parse_sample_types("tumor-ish")


# ---- clinical --------------------------------------------------------------------------------------
def _write(p: Path, text: str) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


CBIO = """#Patient Identifier\tOverall Survival (Months)\tOverall Survival Status\tProgress Free Survival (Months)\tProgression Free Status\tGrade
#Identifier\tMonths\tStatus\tMonths\tStatus\tGrade
#STRING\tNUMBER\tSTRING\tNUMBER\tSTRING\tSTRING
#1\t1\t1\t1\t1\t1
PATIENT_ID\tOS_MONTHS\tOS_STATUS\tPFS_MONTHS\tPFS_STATUS\tGRADE
TCGA-AA-0001\t10.5\t1:DECEASED\t5\t1:PROGRESSION\tG1
TCGA-AA-0002\t20\t0:LIVING\t20\t0:CENSORED\tGrade 2
TCGA-AA-0003\t[Not Available]\t[Not Available]\t\t\tGX
TCGA-AA-0004\t7\t1:DECEASED\t3\t1:PROGRESSION\tGrade III
TCGA-AA-0005\t8\t0:LIVING\t8\t0:CENSORED\tHigh Grade
"""


def test_cbioportal_patient_file(tmp_path):
    from histoviz.data.clinical import ClinicalOptions, read_clinical

    c = read_clinical([_write(tmp_path / "data_clinical_patient.txt", CBIO)])
    per = c.patients
    assert list(per.index) == [f"TCGA-AA-000{i}" for i in range(1, 6)]
    np.testing.assert_allclose(per["time"].to_numpy(), [10.5, 20, np.nan, 7, 8])
    np.testing.assert_allclose(per["event"].to_numpy(), [1, 0, np.nan, 1, 0])
    np.testing.assert_allclose(per["pfs_time"].to_numpy(), [5, 20, np.nan, 3, 8])
    assert per["grade"].tolist()[:2] == ["1", "2"] and per["grade"].iloc[3] == "3"
    assert pd.isna(per["grade"].iloc[2]) and pd.isna(per["grade"].iloc[4])
    assert c.grades["unknown"] == {"High Grade": 1} and c.grades["not_assessed"] == 1
    assert c.sources[0]["format"] == "cbioportal" and c.sources[0]["survival"]["os"][2] == "months"
    # another pair as time / event, and a grade string mapped by the user
    c2 = read_clinical([tmp_path / "data_clinical_patient.txt"],
                       ClinicalOptions(survival="pfs", grade_map={"High Grade": "3"}))
    np.testing.assert_allclose(c2.patients["time"].to_numpy(), [5, 20, np.nan, 3, 8])
    assert c2.patients["grade"].iloc[4] == "3" and c2.grades["unknown"] == {}


def test_gdc_clinical_tsv_several_rows_per_case(tmp_path):
    from histoviz.data.clinical import read_clinical

    rows = ["cases.case_id\tcases.submitter_id\tdemographic.vital_status\tdemographic.days_to_death\t"
            "diagnoses.days_to_last_follow_up\tdiagnoses.tumor_grade\ttreatments.treatment_type",
            "u1\tTCGA-BB-0001\tDead\t365.25\t'--\tG3\tRadiation",
            "u1\tTCGA-BB-0001\tDead\t365.25\t'--\tGrade III\tChemotherapy",  # same case, same grade spelt apart
            "u2\tTCGA-BB-0002\tAlive\t'--\t730.5\tNot Reported\tSurgery"]
    c = read_clinical([_write(tmp_path / "clinical.tsv", "\n".join(rows) + "\n")])
    per = c.patients
    assert c.sources[0]["format"] == "gdc" and list(per.index) == ["TCGA-BB-0001", "TCGA-BB-0002"]
    np.testing.assert_allclose(per["time"].to_numpy(), [12.0, 24.0])  # days -> months (30.4375 days)
    np.testing.assert_allclose(per["event"].to_numpy(), [1, 0])
    assert per["grade"].iloc[0] == "3" and pd.isna(per["grade"].iloc[1])


def test_plain_table_with_declared_units(tmp_path):
    from histoviz.data.clinical import ClinicalOptions, read_clinical

    p = _write(tmp_path / "mine.csv", "case,years,dead,who\nA,1.5,yes,G2\nB,2,no,G4\n")
    c = read_clinical([p], ClinicalOptions(patient_column="case", time_column="years", event_column="dead",
                                           grade_column="who", time_unit="years"))
    np.testing.assert_allclose(c.patients["time"].to_numpy(), [18.0, 24.0])
    assert c.patients["event"].tolist() == [1, 0] and c.patients["grade"].tolist() == ["2", "4"]


@pytest.mark.parametrize(("value", "expected"), [
    ("G1", ("1", "ok")), ("g3", ("3", "ok")), ("Grade 2", ("2", "ok")), ("GRADE IV", ("4", "ok")),
    ("II", ("2", "ok")), ("2.0", ("2", "ok")), ("GX", (None, "not_assessed")), ("[Not Available]", (None, "missing")),
    ("G4", (None, "unknown")), ("Intermediate", (None, "unknown")), ("GB", (None, "unknown")),
])
def test_grade_strings_map_to_declared_classes_or_are_listed(value, expected):
    from histoviz.data.clinical import grade_label

    assert grade_label(value, ["1", "2", "3"] if value == "G4" else ["1", "2", "3", "4"]) == expected


def test_status_strings():
    from histoviz.data.clinical import parse_status

    assert [parse_status(v) for v in ("1:DECEASED", "0:LIVING", "Dead", "alive", "1", "0:DiseaseFree",
                                      "1:Recurred/Progressed", "'--")] == [1, 0, 1, 0, 1, 0, 1, None]
    with pytest.raises(ValueError, match="Deceased-ish"):
        parse_status("Deceased-ish")
    assert parse_status("Deceased-ish", {"Deceased-ish": 1}) == 1


# ---- omics -----------------------------------------------------------------------------------------
PATIENTS = ["TCGA-AA-0001", "TCGA-AA-0002", "TCGA-AA-0003"]


def _matcher():
    from histoviz.data.omics_import import IdMatcher

    return IdMatcher(PATIENTS)


def test_cbioportal_rsem_symbols_duplicates_and_blank_rows(tmp_path):
    from histoviz.data.omics_import import import_omics_table

    txt = ("Hugo_Symbol\tEntrez_Gene_Id\tTCGA-AA-0001-01\tTCGA-AA-0002-01\tTCGA-AA-0003-11\tTCGA-AA-0003-01\n"
           "TP53\t7157\t10\t20\t99\t30\n"
           "\t100\t1\t2\t99\t3\n"                  # no symbol: dropped
           "ESR1\t2099\t5\t6\t99\t7\n"
           "TP53\t99999\t30\t40\t99\t50\n")        # a duplicate symbol: mean of the two rows
    imp = import_omics_table(_write(tmp_path / "data_mrna_seq_v2_rsem.txt", txt), _matcher())
    a = imp.adata
    assert imp.modality == "gene" and list(a.obs_names) == PATIENTS and list(a.var_names) == ["TP53", "ESR1"]
    np.testing.assert_allclose(a.X[:, 0], [20, 30, 40])      # (10 + 30) / 2, ...; normal sample 11 dropped
    np.testing.assert_allclose(a.X[:, 1], [5, 6, 7])
    assert imp.info["rows_without_name"] == 1 and imp.info["duplicate_targets_collapsed"] == 1
    assert imp.info["annotation_columns"] == ["Entrez_Gene_Id"] and imp.info["orientation"] == "targets x samples"
    assert list(imp.info["samples_dropped"]) == ["sample type 11 (solid tissue normal) not kept"]
    assert a.obs["sample_id"].tolist() == ["TCGA-AA-0001-01", "TCGA-AA-0002-01", "TCGA-AA-0003-01"]


def test_samples_by_genes_parquet_and_transposed_h5ad_same_values(tmp_path):
    import anndata as ad

    from histoviz.data.omics_import import import_omics_table, value_scale

    rng = np.random.default_rng(0)
    x = rng.gamma(2.0, 50.0, (3, 4)).round()
    genes = ["G1", "G2", "G3", "G4"]
    df = pd.DataFrame(x, index=[f"{p}-01A" for p in PATIENTS], columns=genes)
    df.index.name = "sample"
    df.to_parquet(tmp_path / "expr.parquet")
    ad.AnnData(x.T, obs=pd.DataFrame(index=genes), var=pd.DataFrame(index=PATIENTS)).write_h5ad(tmp_path / "t.h5ad")
    pq = import_omics_table(tmp_path / "expr.parquet", _matcher(), modality="gene")
    h5 = import_omics_table(tmp_path / "t.h5ad", _matcher(), modality="gene")
    assert pq.info["orientation"] == "samples x targets" and h5.info["orientation"].startswith("targets x samples")
    np.testing.assert_allclose(pq.adata.X, x)
    np.testing.assert_allclose(h5.adata.X, x)
    assert value_scale(x) == "counts" and value_scale(np.log2(x + 1)) == "log" and value_scale(x + 0.5) == "linear"


def test_ids_on_neither_axis_is_a_clear_error(tmp_path):
    from histoviz.data.omics_import import import_omics_table

    p = _write(tmp_path / "expr.csv", "id,S1,S2\nTP53,1,2\nESR1,3,4\n")
    with pytest.raises(DataError, match=r"expr.csv: neither its columns .* nor its rows .* are samples or patients") as e:
        import_omics_table(p, _matcher())
    assert "\n" not in str(e.value)


def test_training_loader_says_transpose_for_a_samples_by_genes_table(tmp_path):
    """The training loader's own reader (Xena layout) on a samples x genes table points at the fix."""
    from histoviz.data.omics import OmicsSpec, align_to_cohort, read_omics_table

    p = _write(tmp_path / "sxg.tsv", "sample\tTP53\tESR1\nP1\t1\t2\nP2\t3\t4\n")
    with pytest.raises(DataError, match=r"samples x targets: transpose it"):
        align_to_cohort(read_omics_table(p), ["P1", "P2"], OmicsSpec(path=str(p)), source=str(p))
    q = _write(tmp_path / "xena.tsv", "sample\tTCGA-AA-0001-01\tTCGA-AA-0002-01\nTP53\t1\t2\n")
    with pytest.raises(DataError, match=r"set id_length: 12"):
        align_to_cohort(read_omics_table(q), PATIENTS, OmicsSpec(path=str(q)), source=str(q))


# ---- bad input: one line naming the file and the fix, nothing written --------------------------------
def _download(tmp_path: Path) -> dict[str, Path]:
    """Fake slides (never opened: --no-check-slides) in the GDC layout + a cBioPortal patient file."""
    gdc = tmp_path / "gdc"
    for i, p in enumerate(PATIENTS):
        d = gdc / f"uuid-{i}"
        (d / "logs").mkdir(parents=True)
        (d / f"{p}-01Z-00-DX1.ABC{i}.svs").write_bytes(b"")
    clin = _write(tmp_path / "data_clinical_patient.txt", "#a\tb\tc\n#a\tb\tc\n#S\tN\tS\n#1\t1\t1\n"
                  "PATIENT_ID\tOS_MONTHS\tOS_STATUS\n" + "".join(f"{p}\t{5 + i}\t{i % 2}:X\n"
                                                              for i, p in enumerate(PATIENTS)))
    clin.write_text(clin.read_text().replace(":X", ":DECEASED").replace("0:DECEASED", "0:LIVING"))
    return {"gdc": gdc, "clin": clin}


def _bad_cases(tmp_path: Path, d: dict[str, Path]) -> list[tuple[str, list[str], str]]:
    other = _write(tmp_path / "other_clinical.txt", "PATIENT_ID\tOS_MONTHS\tOS_STATUS\nTCGA-ZZ-0001\t5\t1:DECEASED\n")
    dup = _write(tmp_path / "dup_clinical.txt", d["clin"].read_text() + f"{PATIENTS[0]}\t99\t0:LIVING\n")
    plain = _write(tmp_path / "mine.csv", "patient,months,status\n" + "".join(f"{p},5,1\n" for p in PATIENTS))
    odd = _write(tmp_path / "odd_status.txt", d["clin"].read_text().replace("1:DECEASED", "Deceased?"))
    expr = _write(tmp_path / "expr.tsv", "gene\tS1\tS2\nTP53\t1\t2\n")
    (tmp_path / "empty").mkdir()
    base = ["--slides", str(d["gdc"]), "--no-check-slides"]
    return [
        ("other_clinical.txt", [*base, "--clinical", str(other)], "none of its 1 patients"),
        ("dup_clinical.txt", [*base, "--clinical", str(dup)], "conflicting os time"),
        ("mine.csv", [*base, "--clinical", str(plain), "--patient-column", "patient", "--time-column", "months",
                      "--event-column", "status"], "--time-unit"),
        ("odd_status.txt", [*base, "--clinical", str(odd)], "--event-values 'Deceased\\?=1'"),
        ("expr.tsv", [*base, "--clinical", str(d["clin"]), "--omics", str(expr)], "neither its columns"),
        ("empty", ["--slides", str(tmp_path / "empty"), "--clinical", str(d["clin"])], "point --slides at"),
    ]


def test_bad_input_is_one_line_naming_the_file_and_nothing_is_written(tmp_path, capsys):
    from histoviz.cli import main

    d = _download(tmp_path)
    for name, args, fix in _bad_cases(tmp_path, d):
        out = tmp_path / f"out_{name}"
        rc = main(["import", *args, "--out", str(out)])
        err = capsys.readouterr().err.strip()
        assert rc == 1, (name, err)
        assert err.count("\n") == 0 and err.startswith("histoviz import: error: ") and name in err, err
        assert pd.Series([err]).str.contains(fix).all(), (fix, err)
        assert not out.exists() and not list(tmp_path.glob(f".out_{name}*")), name


def test_import_without_clinical_rows_for_some_slides_and_a_rerun(tmp_path):
    from histoviz.data.cohort_import import ImportOptions, import_cohort

    d = _download(tmp_path)
    lines = d["clin"].read_text().splitlines()
    _write(d["clin"], "\n".join(lines[:-1]) + "\n")  # the last patient has no clinical row
    res = import_cohort(tmp_path / "c", slides=[d["gdc"]], clinical=[d["clin"]],
                        options=ImportOptions(check_slides=False, encoder="morphology"))
    assert res.report["slides"]["without_clinical_row"] == [f"{PATIENTS[-1]}-01Z-00-DX1"]
    assert set(res.report["configs"]["written"]) == {"survival"}
    assert "needs both grade and survival" in res.report["configs"]["not_written"]["grade_survival"]
    again = import_cohort(tmp_path / "c", slides=[d["gdc"]], clinical=[d["clin"]],
                          options=ImportOptions(check_slides=False, encoder="morphology"))
    assert again.unchanged
    with pytest.raises(ConfigError, match="imported from other inputs or options; use another --out, or --overwrite"):
        import_cohort(tmp_path / "c", slides=[d["gdc"]], clinical=[d["clin"]],
                      options=ImportOptions(check_slides=False, encoder="efficientnet-lite0"))


def test_slide_map_and_regex_for_other_naming(tmp_path):
    from histoviz.data.slide_files import find_slides, identify_slides, read_slide_map

    for n in ("P01_a.svs", "P01_b.svs", "P02_a.ndpi"):
        _write(tmp_path / "s" / n, "")
    _write(tmp_path / "s" / "thumb.png", "")
    paths = find_slides(tmp_path / "s")
    assert [p.name for p in paths] == ["P01_a.svs", "P01_b.svs", "P02_a.ndpi"]
    t = identify_slides(paths, patient_regex=r"^(P\d+)_")
    assert t["patient_id"].tolist() == ["P01", "P01", "P02"] and set(t["id_source"]) == {"regex"}
    sheet = _write(tmp_path / "gdc_sample_sheet.tsv", "File ID\tFile Name\tCase ID\tSample ID\n"
                   "u1\tP01_a.svs\tCASE-1\tCASE-1-S\nu2\tP01_b.svs\tCASE-1\tCASE-1-S\nu3\tP02_a.ndpi\tCASE-2\tCASE-2-S\n")
    t = identify_slides(paths, slide_map=read_slide_map(sheet))
    assert t["patient_id"].tolist() == ["CASE-1", "CASE-1", "CASE-2"] and t["sample_id"].iloc[2] == "CASE-2-S"
    with pytest.raises(DataError, match=r"cannot tell the patient of 3 slide\(s\).*--patient-regex"):
        identify_slides(paths)


# ---- features made elsewhere -------------------------------------------------------------------------
def _trident(folder: Path, slides: list[str], dim: int, seed: int = 0) -> Path:
    import h5py

    rng = np.random.default_rng(seed)
    out = folder / "20x_256px_0px_overlap" / "features_uni_v1"
    out.mkdir(parents=True)
    for s in slides:
        with h5py.File(out / f"{s}.h5", "w") as f:
            c = f.create_dataset("coords", data=rng.integers(0, 4000, (6, 2)))
            c.attrs.update({"patch_size": 256, "patch_size_level0": 512, "target_magnification": 20, "name": s})
            f.create_dataset("features", data=rng.normal(size=(6, dim)).astype(np.float32))
    return folder


def test_trident_folder_as_cohort_features(tmp_path, capsys):
    from histoviz.cli import main
    from histoviz.io.featurebag import FeatureBag

    d = _download(tmp_path)
    names = [f"{p}-01Z-00-DX1.ABC{i}" for i, p in enumerate(PATIENTS)]
    trident = _trident(tmp_path / "trident", names, 32)
    rc = main(["import", "--slides", str(d["gdc"]), "--no-check-slides", "--clinical", str(d["clin"]),
               "--features", str(trident), "--out", str(tmp_path / "c")])
    assert rc == 0, capsys.readouterr().err
    rep = json.loads((tmp_path / "c" / "import_report.json").read_text())
    assert rep["features"]["encoder"] == "uni_v1" and rep["features"]["linked"] == 3
    assert rep["features"]["mpp_source"] == {"estimated as 10 / target magnification": 3}
    bag = FeatureBag.from_h5(tmp_path / "c" / "features" / "uni_v1" / f"{PATIENTS[0]}-01Z-00-DX1.h5")
    assert (bag.embed_dim, bag.attrs["encoder"], bag.tile_size_level0, bag.attrs["mpp"]) == (32, "uni_v1", 512, 0.5)
    assert bag.attrs["tile_size"] == 256
    cfg = (tmp_path / "c" / "configs" / "survival.yaml").read_text()
    assert "features/uni_v1" in cfg and "embed:" not in cfg  # nothing to embed with: the bags are the features


def test_feature_dimension_mismatch_is_one_line(tmp_path):
    from histoviz.io.featurebag import FeatureBag
    from histoviz.predict import RunModel, predict_bag

    class _Pipe:  # what predict_bag reads before the model runs
        features = {"encoder": "uni_v1", "embed_dim": 1024}
        model = object()

    bag = FeatureBag(np.zeros((4, 2), np.int64), np.ones((4, 1536), np.float32),
                     {"encoder": "uni_v1", "slide_id": "S1", "tile_size_level0": 512})
    with pytest.raises(DataError, match=r"S1: 1536-d features \(uni_v1\), but .* was trained on 1024-d") as e:
        predict_bag(bag, RunModel(tmp_path, [_Pipe()], "final", {}))
    assert "\n" not in str(e.value)


# ---- checks before training --------------------------------------------------------------------------
def _tiny_config(tmp_path: Path, n: int = 30, events: int = 6, **evaluation) -> dict:
    rng = np.random.default_rng(1)
    ev = np.zeros(n, int)
    ev[rng.choice(n, events, replace=False)] = 1
    t = pd.DataFrame({"slide_id": [f"S{i:02d}" for i in range(n)], "patient_id": [f"P{i:02d}" for i in range(n)],
                      "path": [f"S{i:02d}.svs" for i in range(n)], "time": rng.uniform(1, 50, n), "event": ev,
                      "grade": rng.integers(1, 4, n)})
    t.to_csv(tmp_path / "cohort.csv", index=False)
    return {"name": "s", "data": {"cohort": str(tmp_path / "cohort.csv"), "features": str(tmp_path / "feats"),
                                  "embed": {"encoder": "morphology"},
                                  "outcomes": {"survival": {"time": "time", "event": "event"}}},
            "model": {"name": "abmil-survival"}, "training": {"final_model": True},
            "evaluation": {"n_folds": 3, "calibration_fraction": 0.4, **evaluation}}


def test_survival_calibration_counts_events_before_training(tmp_path, monkeypatch):
    """With the 4-bin risk interval (``survival: risk_bins``, censored excluded) the calibration
    patients that count are those with an event."""
    import histoviz.features.cohort as fc
    from histoviz.training.config import load_config
    from histoviz.training.data import calibration_split, patient_folds
    from histoviz.training.preflight import preflight
    from histoviz.training.runner import run_experiment

    monkeypatch.setattr(fc, "embed_cohort", lambda *a, **k: pytest.fail("embedding started before the checks"))
    # 30 patients, 3 folds, calibration 0.4: 8 calibration patients, enough for alpha 0.2 (needs 4), but
    # only 6 patients of 30 had an event
    bins = {"alpha": 0.2, "survival": "risk_bins"}
    cfg = load_config(_tiny_config(tmp_path, n=30, events=6, conformal=bins))
    with pytest.raises(DataError, match=r"holds \d patients with an event for 'survival'; alpha=0.2 needs at least 4 "
                                        r"\(the cohort has 6 patients with an event among 30 patients\)") as e:
        run_experiment(cfg, tmp_path / "run")
    assert "\n" not in str(e.value) and not (tmp_path / "run").exists()
    # the count is the events in the calibration split the runner would draw, fold by fold
    t = pd.read_csv(tmp_path / "cohort.csv")
    folds = patient_folds(30, 3, 0)
    counts = [int(t["event"].to_numpy()[calibration_split(np.flatnonzero(folds != k), 0.4, k)[1]].sum())
              for k in range(3)]
    assert f"holds {min(counts)} patients with an event" in str(e.value)
    # with every patient an event, the same split passes
    ok = preflight(load_config(_tiny_config(tmp_path, n=30, events=30, conformal=bins)))
    assert ok.smallest_calibration["survival"] >= 4 and ok.n_patients == 30


def test_survival_bound_calibration_counts_censored_patients_by_their_weight(tmp_path, monkeypatch):
    """With the default lower bound of survival time, censored patients followed past the horizon
    count too (weight 1) and early events with their censoring weight: the preflight's count equals
    a recount from :func:`sample_weights` over the runner's calibration splits."""
    import histoviz.features.cohort as fc
    from histoviz.data.outcomes import SurvivalBins, SurvivalBlock
    from histoviz.evaluation.survival import censoring_km
    from histoviz.evaluation.survival_conformal import sample_weights, survival_horizon
    from histoviz.training.config import load_config
    from histoviz.training.data import calibration_split, patient_folds
    from histoviz.training.preflight import preflight
    from histoviz.training.runner import run_experiment

    monkeypatch.setattr(fc, "embed_cohort", lambda *a, **k: pytest.fail("embedding started before the checks"))

    def recount(events: int) -> float:
        t = pd.read_csv(tmp_path / "cohort.csv")
        time, ev = t["time"].to_numpy(float), t["event"].to_numpy(int)
        tau = survival_horizon(SurvivalBins(4).fit(SurvivalBlock("s", time, ev, np.ones(len(t), bool))).edges_)
        w = sample_weights(time, ev, tau, censoring_km(time, ev))
        folds = patient_folds(30, 3, 0)
        cal = [calibration_split(np.flatnonzero(folds != k), 0.4, k)[1] for k in range(3)]
        cal.append(calibration_split(np.arange(30), 0.4, 1000)[1])  # the final model's
        return min(float(w[c].sum()) for c in cal)

    # 6 events of 30: too little weight for alpha 0.1 (needs 9) in 8-patient calibration splits
    cfg = load_config(_tiny_config(tmp_path, n=30, events=6, conformal={"alpha": 0.1}))
    with pytest.raises(DataError, match=r"patients whose survival up to the horizon is known \(censoring-weighted\) "
                                        r"for 'survival'; alpha=0.1 needs at least 9") as e:
        run_experiment(cfg, tmp_path / "run")
    assert f"holds {recount(6):.1f} patients" in str(e.value) and not (tmp_path / "run").exists()
    # at alpha 0.3 (needs 3) the censored patients followed past the horizon make up what 6 events cannot
    ok = preflight(load_config(_tiny_config(tmp_path, n=30, events=6, conformal={"alpha": 0.3})))
    assert ok.smallest_calibration["survival"] == int(np.floor(recount(6) + 1e-9)) >= 3
    ev = pd.read_csv(tmp_path / "cohort.csv")["event"].to_numpy()
    folds = patient_folds(30, 3, 0)
    events_only = min(int(ev[calibration_split(np.flatnonzero(folds != k), 0.4, k)[1]].sum()) for k in range(3))
    assert events_only < ok.smallest_calibration["survival"]  # the events alone would count less


def test_config_data_mismatch_fails_before_embedding(tmp_path, monkeypatch):
    import histoviz.features.cohort as fc
    from histoviz.training.config import load_config
    from histoviz.training.runner import run_experiment

    monkeypatch.setattr(fc, "embed_cohort", lambda *a, **k: pytest.fail("embedding started before the checks"))
    base = _tiny_config(tmp_path)
    no_col = {**base, "data": {**base["data"], "outcomes": {"survival": {"time": "os_days", "event": "event"}}}}
    with pytest.raises(DataError, match=r"cohort.csv: no column\(s\) \['os_days'\] for outcome 'survival'"):
        run_experiment(load_config(no_col), tmp_path / "r1")
    missing = {**base, "data": {**base["data"], "outcomes": {},
                                "omics": {"gene": {"path": str(tmp_path / "nope.h5ad")}}},
               "model": {"name": "multiomics"}, "evaluation": {"n_folds": 3}}
    with pytest.raises(DataError, match=r"nope.h5ad: omics table not found"):
        run_experiment(load_config(missing), tmp_path / "r2")
    sxg = _write(tmp_path / "sxg.tsv", "sample\tTP53\tESR1\n" + "".join(f"P{i:02d}\t1\t2\n" for i in range(30)))
    transposed = {**missing, "data": {**missing["data"], "omics": {"gene": {"path": str(sxg)}}}}
    with pytest.raises(DataError, match=r"sxg.tsv\): none of its 2 samples .* transpose it"):
        run_experiment(load_config(transposed), tmp_path / "r3")
    assert not any((tmp_path / f"r{i}").exists() for i in (1, 2, 3))


def test_train_and_predict_on_features_made_elsewhere(tmp_path, capsys):
    """TRIDENT bags -> import -> train (PCA + Cox) -> predict from the bags; bags of another encoder
    dimension are refused with one line."""
    import h5py

    from histoviz.cli import main

    pats = [f"TCGA-CC-{i:04d}" for i in range(1, 9)]
    gdc = tmp_path / "gdc"
    for i, p in enumerate(pats):
        _write(gdc / f"u{i}" / f"{p}-01Z-00-DX1.U{i}.svs", "")
    _write(tmp_path / "data_clinical_patient.txt", "PATIENT_ID\tOS_MONTHS\tOS_STATUS\n"
           + "".join(f"{p}\t{3 + 4 * i}\t{'1:DECEASED' if i % 3 else '0:LIVING'}\n" for i, p in enumerate(pats)))
    trident = _trident(tmp_path / "trident", [f"{p}-01Z-00-DX1.U{i}" for i, p in enumerate(pats)], 16)
    rc = main(["import", "--slides", str(gdc), "--no-check-slides", "--clinical",
               str(tmp_path / "data_clinical_patient.txt"), "--features", str(trident), "--out", str(tmp_path / "c")])
    assert rc == 0, capsys.readouterr().err
    rc = main(["train", str(tmp_path / "c/configs/survival.yaml"), "--out", str(tmp_path / "run"), "--set",
               "model.name=pca-cox", "--set", "model.params={}", "--set", "evaluation.n_folds=2", "--set",
               "evaluation.calibration_fraction=0", "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    rc = main(["predict", "--features", str(tmp_path / "c/features/uni_v1"), "--model", str(tmp_path / "run"),
               "--out", str(tmp_path / "preds"), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    t = pd.read_csv(tmp_path / "preds" / "predictions.csv")
    assert len(t) == 8 and t["survival_risk"].notna().all() and (t["status"] == "done").all()
    assert t["in_training_cohort"].all()
    capsys.readouterr()
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["coords"] = np.zeros((3, 2), np.int64)
        f["features"] = np.ones((3, 48), np.float32)
        f.attrs.update({"encoder": "uni_v1", "slide_id": "X1", "tile_size_level0": 512})
    rc = main(["predict", "--features", str(other), "--model", str(tmp_path / "run"), "--out", str(tmp_path / "x.h5ad")])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and "\n" not in err and "48-d features (uni_v1), but" in err and "trained on 16-d" in err
    assert not (tmp_path / "x.h5ad").exists()


def test_configs_are_the_shipped_ones_with_the_cohort_filled_in(tmp_path):
    import yaml

    from histoviz.data.cohort_configs import TASKS, CohortLayout, render_config, task_configs
    from histoviz.datasets import config_dir
    from histoviz.training.config import load_config

    lay = CohortLayout(root=tmp_path, cohort=tmp_path / "cohort.csv", features=tmp_path / "features/morphology",
                       encoder="morphology", grade_classes=["1", "2", "3"], grade_missing=True, survival=True,
                       omics={"gene": {"path": tmp_path / "omics/gene.h5ad", "scale": "linear", "missing": False},
                              "protein": {"path": tmp_path / "omics/protein.h5ad", "scale": "log", "missing": True},
                              "methylation": {"path": tmp_path / "omics/m.h5ad", "scale": "log", "missing": False}},
                       spots=tmp_path / "spots")
    cfgs = task_configs(lay)
    assert set(cfgs) == set(TASKS) and all(isinstance(c, dict) for c in cfgs.values())
    for task, cfg in cfgs.items():
        shipped = yaml.safe_load((config_dir() / TASKS[task]).read_text())
        p = tmp_path / f"{task}.yaml"
        p.write_text(render_config(cfg))
        mine = yaml.safe_load(p.read_text())
        for section in ("name", "model", "training") if task != "pathgen" else ("name", "training"):
            assert mine[section] == shipped[section], (task, section)
        load_config(p)  # valid as written
    om = cfgs["omics"]["data"]["omics"]
    assert om["gene"]["transform"] == "log10p1" and "normalize" not in om["gene"]     # RSEM-like, not counts
    assert om["protein"]["impute"] == "median" and "transform" not in om["protein"]  # log scale, missing values
    assert om["methylation"] == {"path": str(tmp_path / "omics/m.h5ad"), "standardize": True}
    assert cfgs["grade"]["data"]["outcomes"]["grade"] == {"column": "grade", "classes": ["1", "2", "3"],
                                                        "allow_missing": True}
    assert cfgs["pathgen"]["model"]["params"]["gene_groups"] == "mcat"
    assert cfgs["spots"]["data"]["spots"]["samples"] == str(tmp_path / "spots")
