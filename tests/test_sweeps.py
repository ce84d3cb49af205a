"""Mechanism sweeps: each generator knob does what it says (its oracle, a simple model given the
planted quantity, moves the right way along the knob, at small scale), the sweep's differences and
intervals equal an independent recomputation, and the shipped sweep files load. No test here asserts
that a paper's claim holds: the sweeps report whichever way it falls."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from histoviz.errors import ConfigError
from histoviz.evaluation.sweeps import combine_cohorts, summarise_sweep

ROOT = Path(__file__).resolve().parents[1]
TINY = {"seed": 3, "mpp": 2.0, "multi_slide_fraction": 0.0, "spatial_fraction": 0.0, "n_genes": 40,
        "n_proteins": 8, "n_mirna": 2, "n_pathways": 2, "n_cells_reference": 300, "n_jobs": 1}


# ---- the interval ---------------------------------------------------------------------------------
def test_combined_interval_equals_a_hand_computation() -> None:
    from scipy import stats

    d1, d2 = np.array([0.02, 0.05, -0.01, 0.04, 0.03]), np.array([0.01, 0.00, 0.06, 0.02])
    got = combine_cohorts([d1, d2], [np.full(5, 20.0), np.full(4, 25.0)], [np.full(5, 80.0), np.full(4, 75.0)])
    # by hand: cohort variances (1/J + n_test/n_train) s^2, mean of the two means, var = sum / 4
    v1 = (1 / 5 + 20 / 80) * d1.var(ddof=1)
    v2 = (1 / 4 + 25 / 75) * d2.var(ddof=1)
    mean = (d1.mean() + d2.mean()) / 2
    var = (v1 + v2) / 4
    df = var ** 2 / ((v1 / 4) ** 2 / 4 + (v2 / 4) ** 2 / 3)  # Welch-Satterthwaite
    half = stats.t.ppf(0.975, df) * np.sqrt(var)
    assert got["difference"] == pytest.approx(mean, abs=1e-15)
    assert got["df"] == pytest.approx(df, rel=1e-12)
    assert (got["ci_low"], got["ci_high"]) == (pytest.approx(mean - half, abs=1e-12), pytest.approx(mean + half, abs=1e-12))
    assert got["sd_cohorts"] == pytest.approx(np.std([d1.mean(), d2.mean()], ddof=1))
    assert got["n_cohorts"] == 2 and got["n_folds"] == 9


def test_summary_rows_and_verdicts_from_a_long_table() -> None:
    rows = []
    for level, shift in ((0.0, 0.0), (1.0, 0.2)):
        for r in range(2):
            for f in range(5):
                d = shift + 0.01 * ((f + r) % 3 - 1)
                rows.append({"sweep": "s", "kind": "difference", "level": level, "level_label": str(level),
                             "repeat": r, "comparison": "a − b", "a": "a", "b": "b", "task": "grade",
                             "metric": "auc_macro", "fold": f, "value_a": 0.7 + d, "value_b": 0.7,
                             "difference": d, "n_test": 20.0, "n_train": 80.0})
    s = summarise_sweep(pd.DataFrame(rows)).set_index("level_label")
    assert s.loc["0.0", "verdict"] == "within noise" and s.loc["1.0", "verdict"] == "a better"
    assert s.loc["1.0", "difference"] == pytest.approx(0.2 + 0.01 * np.mean([(f + r) % 3 - 1 for r in range(2)
                                                                              for f in range(5)]))
    assert s.loc["1.0", "n_folds"] == 10 and s.loc["1.0", "n_cohorts"] == 2


# ---- the files ------------------------------------------------------------------------------------
def test_every_shipped_sweep_loads_and_bad_files_are_refused(tmp_path: Path) -> None:
    from histoviz.training.sweep import load_sweep

    files = sorted((ROOT / "training" / "sweeps").glob("*.yaml"))
    names = {load_sweep(f).name for f in files}
    assert {"attention", "pathgen", "mtl", "mtl_shared", "cpnn", "spots", "spots_density"} <= names
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nknob: {field: not_a_knob, levels: [1, 2]}\ncohort: {}\noracle: focal\nmodels: {}\n"
                   "compare: []\ntasks: {}\n")
    with pytest.raises(ConfigError, match="not generator fields"):
        load_sweep(bad)
    bad.write_text("name: x\nknob: {field: focal_share, levels: [1.0]}\ncohort: {}\noracle: focal\nmodels: {}\n"
                   "compare: []\ntasks: {}\n")
    with pytest.raises(ConfigError, match="at least two levels"):
        load_sweep(bad)
    bad.write_text("name: x\nknob: {field: focal_share, levels: [1.0, 0.1]}\ncohort: {}\noracle: nope\nmodels: {}\n"
                   "compare: []\ntasks: {}\n")
    with pytest.raises(ConfigError, match="unknown 'nope'"):
        load_sweep(bad)


# ---- the knobs work: oracles along each knob ------------------------------------------------------
def _cohort(root: Path, **kw):
    from histoviz.data.synthetic import make_synthetic_cohort

    return make_synthetic_cohort(root, **{**TINY, **kw})


def test_composition_and_modality_oracles_move_along_their_knobs(tmp_path: Path) -> None:
    from histoviz.data.synthetic.oracles import run_oracle

    kw = {"n_slides": 40, "slide_size": (192, 192)}
    comp = {lab: run_oracle("composition", _cohort(tmp_path / lab, composition_signal=c, reference_mismatch=m, **kw))
            ["value"] for lab, c, m in (("full", 1.0, 0.0), ("mismatch", 1.0, 1.0), ("half", 0.5, 0.0),
                                        ("none", 0.0, 0.0))}
    print("composition oracle:", comp)
    assert comp["full"] > comp["half"] > comp["none"] and comp["full"] > comp["mismatch"] + 0.1
    assert abs(comp["none"]) < 0.15
    mod = {m: run_oracle("modality", _cohort(tmp_path / f"m{m}", missing_fraction=m, **kw))["value"]
           for m in (0.1, 0.8)}
    print("modality oracle:", mod)
    assert mod[0.1] > mod[0.8] + 0.2
    shared = {v: run_oracle("modality", _cohort(tmp_path / f"x{v}", missing_fraction=0.1, modality_shared=v, **kw))
              ["value"] for v in (1.0, 0.0)}
    print("modality oracle along modality_shared:", shared)
    assert shared[1.0] > shared[0.0] + 0.3


def test_spots_oracle_rises_with_the_interface_programme(tmp_path: Path) -> None:
    from histoviz.data.synthetic.oracles import run_oracle

    kw = {"n_slides": 3, "slide_size": (512, 512), "mpp": 1.0, "spatial_fraction": 1.0}
    miss = {e: run_oracle("spots", _cohort(tmp_path / f"s{e}", spot_interface=e, **kw))["value"] for e in (0.0, 1.0, 2.0)}
    print("spots oracle:", miss)
    assert miss[0.0] < 0.05 < miss[1.0] + 0.05 < miss[2.0] + 0.05 and miss[2.0] > 0.3



def test_spots_per_sample_grow_with_the_slide_and_the_interface_share_does_not(tmp_path: Path) -> None:
    """spots_density.yaml's knob: the slide's side sets the spots per sample (a fixed 100-um grid);
    the non-linear share its oracle measures stays put (only the sample size changes)."""
    from histoviz.data.synthetic.oracles import run_oracle

    kw = {"n_slides": 3, "mpp": 1.0, "spatial_fraction": 1.0, "spot_interface": 1.0}
    got = {n: run_oracle("spots", _cohort(tmp_path / f"d{n}", slide_size=(n, n), **kw)) for n in (512, 1024)}
    print("spots per sample / interface share:", {n: (g["n_spots_per_sample"], g["value"]) for n, g in got.items()})
    assert got[1024]["n_spots_per_sample"] > 2.5 * got[512]["n_spots_per_sample"]
    assert abs(got[1024]["value"] - got[512]["value"]) < 0.25

@pytest.mark.slow
def test_focal_and_hidden_oracles_move_along_their_knobs(tmp_path: Path) -> None:
    from histoviz.data.cohort import read_cohort
    from histoviz.data.synthetic.oracles import run_oracle
    from histoviz.features.cohort import embed_cohort

    def embedded(name: str, **kw):
        c = _cohort(tmp_path / name, n_slides=48, slide_size=(384, 384), **kw)
        f = tmp_path / name / "features"
        embed_cohort(read_cohort(c.cohort_csv), f, encoder="morphology", encoder_kwargs={"input_size": 32},
                     tiling={"tile_size": 32, "mpp": 2.0}, workers=0, progress=False)
        return c, f

    focal = {s: run_oracle("focal", *embedded(f"f{s}", focal_share=s)) for s in (1.0, 0.05)}
    print("focal oracle:", focal)
    assert abs(focal[1.0]["value"]) < 0.05  # diffuse: the focal patches are all patches
    assert focal[0.05]["value"] > 0.15 and focal[0.05]["focal_pool_auc"] > 0.6
    hidden = {v: run_oracle("hidden", *embedded(f"h{v}", gene_groups=True, hidden_factor=1.0, hidden_visibility=v))
              for v in (0.0, 1.0)}
    print("hidden oracle:", hidden)
    assert hidden[1.0]["value"] > hidden[0.0]["value"] + 0.3 and hidden[0.0]["value"] < 0.15


# ---- a sweep end to end: the reported numbers equal a recomputation from its runs -----------------
@pytest.mark.slow
def test_a_small_sweep_reports_what_its_runs_hold(tmp_path: Path) -> None:
    import json

    from histoviz.evaluation.resampled import corrected_resampled_t
    from histoviz.io.rundir import RunDir
    from histoviz.training.sweep import run_sweep

    spec = tmp_path / "tiny.yaml"
    spec.write_text(f"""
name: tiny
title: two Cox baselines
knob: {{field: focal_share, levels: [1.0, 0.05], log: true, label: focal share}}
repeats: 2
cohort: {{n_slides: 60, seed: 5, slide_size: [256, 256], mpp: 2.0, multi_slide_fraction: 0.0, spatial_fraction: 0.0,
         n_genes: 24, n_proteins: 2, n_mirna: 2, n_pathways: 2, n_cells_reference: 60}}
embed: {{encoder: morphology, tile_size: 32, mpp: 2.0, input_size: 32}}
oracle: focal
models:
  wide: {{config: {ROOT / 'training/configs/outcome_baselines.yaml'}, set: [model.params.cox_components=6]}}
  narrow: {{config: {ROOT / 'training/configs/outcome_baselines.yaml'}, set: [model.params.cox_components=1]}}
compare: [[wide, narrow]]
tasks: {{survival: c_index}}
evaluation: {{n_folds: 3, calibration_fraction: 0.45}}
training: {{final_model: false}}
""")
    res = run_sweep(spec, tmp_path / "out")
    assert (tmp_path / "out" / "sweep.png").stat().st_size > 1000
    s = res.summary.set_index("level_label")
    for lab in ("1.0", "0.05"):
        diffs, nt, nr = [], [], []
        for r in range(2):
            m = {k: RunDir(tmp_path / "out" / "cells" / f"{lab}-r{r}" / "runs" / k).metrics() for k in ("wide", "narrow")}
            per = {k: v[(v["task"] == "survival") & (v["metric"] == "c_index")].set_index("fold") for k, v in m.items()}
            d = (per["wide"]["value"] - per["narrow"]["value"]).sort_index()
            n = per["wide"]["n"].sort_index().astype(float)
            diffs.append(d.to_numpy())
            nt.append(n.to_numpy())
            nr.append(n.sum() - n.to_numpy())
        cis = [corrected_resampled_t(d, n_test=a, n_train=b) for d, a, b in zip(diffs, nt, nr)]
        assert s.loc[lab, "difference"] == pytest.approx(np.mean([c.mean for c in cis]), abs=1e-12)
        se = np.sqrt(sum(c.se ** 2 for c in cis) / 4)
        assert s.loc[lab, "ci_high"] - s.loc[lab, "difference"] == pytest.approx(
            se * __import__("scipy").stats.t.ppf(0.975, s.loc[lab, "df"]), rel=1e-9)
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert {r["level_label"] for r in saved["summary"]} == {"1.0", "0.05"}
    # a rerun reuses every finished cell
    again = run_sweep(spec, tmp_path / "out")
    pd.testing.assert_frame_equal(again.summary, res.summary)
