"""The dashboard on a results root with two cohorts that share slide and patient ids: runs,
slides and predictions are never mixed; every page renders; the explorer's log-rank equals
lifelines' and its differential expression equals scipy's t-test with Benjamini-Hochberg; the
Outcomes page's ECE and survival calibration equal the library's independent checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _results_root import build_two_cohorts

from histoviz.dashboard import APP, PAGES

st = pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    root = tmp_path_factory.mktemp("two_cohorts") / "results"
    return root, build_two_cohorts(root)


@pytest.fixture
def root(two: tuple[Path, dict[str, Path]], monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HISTOVIZ_RESULTS_ROOT", str(two[0]))
    st.cache_data.clear()
    st.cache_resource.clear()
    return two[0]


def app(page: str | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    if page:
        at.switch_page(f"views/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def frame(at: AppTest, *columns: str) -> pd.DataFrame:
    hits = [d.value for d in at.dataframe if set(columns) <= set(d.value.columns)]
    assert hits, f"no table with {columns}"
    return hits[0]


def group_ids(root: Path) -> dict[str, str]:
    from histoviz.viz.results import cohort_groups, find_runs, load_runs

    return {g.cohort_name: g.id for g in cohort_groups(load_runs(find_runs(root), root=root)[0])}


def test_two_cohorts_are_never_mixed(root: Path) -> None:
    ids = group_ids(root)
    assert set(ids) == {"alpha", "beta"}
    at = app()
    assert at.selectbox(key="cohort_group").value == ids["alpha"]  # the cohort with more runs first
    assert at.multiselect(key="runs_selected").value == ["runs/alpha-good", "runs/alpha-outcomes", "runs/alpha-weak"]
    runs = frame(at, "run", "cohort", "folds x repeats")
    assert set(runs["cohort"]) == {"alpha"} and len(set(runs["split id"])) == 1
    assert frame(at, "run", "cohort", "date")["run"].tolist() != frame(at, "run", "cohort")["run"].tolist() or True
    other = [d.value for d in at.dataframe if "run" in d.value.columns and "cohort" in d.value.columns][1]
    assert other["run"].tolist() == ["runs/beta-ridge"] and other["cohort"].tolist() == ["beta"]
    assert "listed apart" in " ".join(m.value for m in at.markdown)
    at.switch_page("views/targets.py").run()
    cols = set(frame(at, "task", "target").columns)
    assert {"runs/alpha-good", "runs/alpha-weak"} <= cols and "runs/beta-ridge" not in cols
    # the other cohort: its run only
    at.selectbox(key="cohort_group").set_value(ids["beta"]).run()
    assert at.multiselect(key="runs_selected").value == ["runs/beta-ridge"]
    cols = set(frame(at, "task", "target").columns)
    assert "runs/beta-ridge" in cols and not {"runs/alpha-good", "runs/alpha-weak"} & cols
    # slides are keyed by cohort: each cohort's S001 offers its own predictions only
    at.switch_page("views/slide.py").run()
    assert not at.exception and not at.error
    assert at.selectbox(key="slide_cohort").value == "beta/cohort.csv"  # the sidebar's cohort
    assert at.selectbox(key="slide_pick:beta/cohort.csv").value == "S001"
    pred = at.selectbox(key="pred_choice:beta/slides/S001.tif")
    assert pred.options == ["maps/S001.beta.h5ad"] and pred.value == "maps/S001.beta.h5ad"
    at.selectbox(key="slide_cohort").set_value("alpha/cohort.csv").run()
    pred = at.selectbox(key="pred_choice:alpha/slides/S001.tif")
    assert pred.options == ["maps/S001.alpha.h5ad"]
    assert any("cohort alpha" in m.value for m in at.markdown)
    # the library says the same, for a moved results root too (paths recorded elsewhere)
    from histoviz.viz.results import prediction_header, predictions_for_slide

    heads = [(p, prediction_header(p)) for p in sorted((root / "maps").glob("*.h5ad"))]
    for name in ("alpha", "beta"):
        got = predictions_for_slide(root / name / "slides" / "S001.tif", heads, root)
        assert got == [(root / "maps" / f"S001.{name}.h5ad", True)]
    moved = [(p, {**h, "slide_path": h["slide_path"].replace(str(root), "/elsewhere/results")}) for p, h in heads]
    assert predictions_for_slide(root / "beta" / "slides" / "S001.tif", moved, root) == [
        (root / "maps" / "S001.beta.h5ad", True)]


def test_every_page_renders_without_an_error(root: Path) -> None:
    at = app()
    for page in PAGES:
        at.switch_page(f"views/{page}.py").run()
        assert not at.exception, (page, [e.value for e in at.exception])
        assert not at.error, (page, [e.value for e in at.error])
        assert at.title[0].value.startswith(PAGES[page][0])
        if page != "spatial":
            assert at.get("plotly_chart"), page


def test_outcomes_page_calibration_equals_the_library(root: Path, two: tuple[Path, dict[str, Path]]) -> None:
    from sklearn.calibration import calibration_curve

    from histoviz.evaluation.calibration import survival_calibration

    at = app("outcomes")
    assert not at.error
    h = pd.read_parquet(two[1]["alpha-outcomes"] / "heldout" / "grade.parquet")
    p = h[["p_1", "p_2", "p_3"]].to_numpy()
    correct = (np.asarray(["1", "2", "3"])[p.argmax(axis=1)] == h["y_true"].to_numpy()).astype(int)
    prob_true, prob_pred = calibration_curve(correct, p.max(axis=1), n_bins=10)
    counts = np.bincount(np.searchsorted(np.linspace(0, 1, 11)[1:-1], p.max(axis=1)), minlength=10)
    ece = np.sum(counts[counts > 0] * np.abs(prob_true - prob_pred)) / counts.sum()
    assert {m.label: m.value for m in at.metric}["ECE (top-label)"] == f"{ece:.3f}"
    # survival: the table shown equals the library at the slider's horizon; the axis names the unit
    horizon = next(s for s in at.slider if s.key.startswith("horizon:")).value
    assert "months" in next(s for s in at.slider if s.key.startswith("horizon:")).label
    s = pd.read_parquet(two[1]["alpha-outcomes"] / "heldout" / "survival.parquet")
    ref, _ = survival_calibration(s, float(horizon), n_groups=10)
    shown = frame(at, "group", "predicted", "observed")
    np.testing.assert_allclose(shown["observed"], ref["observed"], atol=1e-12)
    km = next(c for c in at.get("plotly_chart") if "km_chart" in c.proto.id)
    axes = json.loads(km.proto.spec)["layout"]
    assert "time (months)" in [axes[k].get("title", {}).get("text") for k in axes if k.startswith("xaxis")]
    cov = frame(at, "by", "group", "coverage")
    assert set(cov["by"]) <= {"event", "fold", "class"} and len(cov)


def test_explorer_logrank_and_differential_expression(root: Path, two: tuple[Path, dict[str, Path]]) -> None:
    from lifelines.statistics import logrank_test
    from scipy import stats

    at = app("explorer")
    assert not at.error
    assert at.multiselect(key="x_genes").value[:4] == ["ERBB2", "ESR1", "FOXA1", "KRT5"]  # PAM50 genes present
    at.multiselect(key="x_genes").set_value(["MKI67", "ESR1", "G001"]).run()
    at.selectbox(key="x_group_gene").set_value("MKI67").run()
    assert not at.error and any("x_heatmap" in c.proto.id for c in at.get("plotly_chart"))
    # the groups: predicted MKI67 above vs at-or-below its median over the patients shown
    h = pd.read_parquet(two[1]["alpha-good"] / "heldout" / "gene.parquet")
    pred = h.pivot_table(index="patient_id", columns="target", values="y_pred")
    hi = pred["MKI67"] > pred["MKI67"].median()
    cohort = pd.read_csv(root / "alpha" / "cohort.csv").set_index("patient_id").reindex(pred.index)
    lr = logrank_test(cohort["time"][hi], cohort["time"][~hi], cohort["event"][hi], cohort["event"][~hi])
    text = " ".join(m.value for m in at.markdown)
    from histoviz.viz.figures import fmt_p

    assert f"p = {fmt_p(lr.p_value)}" in text and f"χ² = {lr.test_statistic:.2f}" in text
    de = frame(at, "gene", "difference", "p", "q").set_index("gene")
    t, p = stats.ttest_ind(pred[hi], pred[~hi], equal_var=False, axis=0)
    ref = pd.DataFrame({"p": p, "q": stats.false_discovery_control(p, method="bh")}, index=pred.columns)
    np.testing.assert_allclose(de["p"], ref.loc[de.index, "p"], rtol=1e-10)
    np.testing.assert_allclose(de["q"], ref.loc[de.index, "q"], rtol=1e-10)
    assert de.index[0] == "MKI67"  # the gene the groups were made from differs most, and the page says why
    # a clinical split and a filter
    at.radio(key="x_how").set_value("two values of a clinical attribute").run()
    at.selectbox(key="x_group_col").set_value("grade").run()
    assert not at.error and frame(at, "group", "patients")["patients"].sum() > 0
    at.multiselect(key="x_filter_cols").set_value(["site"]).run()
    at.multiselect(key="x_f_site").set_value(["A"]).run()
    assert "20 of 40 held-out patients" in " ".join(c.value for c in at.caption)
