"""histoviz.viz.results and histoviz.viz.figures: the results root, run loading that survives a
corrupt run, the pages' tables (checked against the metric files and lifelines), gene panels,
truncated CSVs, and the figures' content."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _runs import write_heldout_run, write_outcome_run, write_run

from histoviz.errors import DataError
from histoviz.viz import figures as fg
from histoviz.viz import results as rs


# ---- the results root -------------------------------------------------------------------------------
def test_paths_resolve_under_the_root_and_nothing_else(tmp_path: Path) -> None:
    root = tmp_path / "results"
    (root / "runs").mkdir(parents=True)
    (root / "runs" / "a.csv").write_text("x")
    assert rs.resolve_under(root, "runs/a.csv") == root / "runs" / "a.csv"
    assert rs.resolve_under(root, str(root / "runs")) == root / "runs"
    assert rs.resolve_under(root, "runs/../runs/./a.csv") == root / "runs" / "a.csv"
    assert rs.resolve_under(root, "") == root
    (tmp_path / "secret.txt").write_text("s")
    messages = set()
    for bad in ("/etc/group", "../secret.txt", "../nothing-here.txt", "runs/../../secret.txt", str(tmp_path),
                "~/.ssh/id_rsa", "a\x00b", f"{root}-sibling/x"):
        if bad.startswith("~"):  # not expanded: a folder named "~" under the root is allowed
            assert rs.resolve_under(root, bad) == root / "~" / ".ssh" / "id_rsa"
            continue
        with pytest.raises(rs.OutsideRootError) as e:
            rs.resolve_under(root, bad)
        assert str(e.value).count("\n") == 0 and "outside the results root" in str(e.value)
        messages.add(str(e.value).split(": ", 1)[1])  # the same text whether the file exists or not
    assert len(messages) == 1
    # links that stay inside the root are followed; links out of it are refused like any other
    # path outside (a folder link, a file link, a link to /etc/passwd), with the same message
    (root / "inner").symlink_to(root / "runs", target_is_directory=True)
    assert rs.resolve_under(root, "inner/a.csv") == root / "inner" / "a.csv"
    (root / "linked").symlink_to(tmp_path, target_is_directory=True)
    (root / "secret_link.txt").symlink_to(tmp_path / "secret.txt")
    (root / "passwd").symlink_to("/etc/passwd")
    for bad in ("linked/secret.txt", "linked", "secret_link.txt", str(root / "passwd"), "passwd"):
        with pytest.raises(rs.OutsideRootError) as e:
            rs.resolve_under(root, bad)
        messages.add(str(e.value).split(": ", 1)[1])
    assert len(messages) == 1


def test_results_root_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert rs.results_root({}) == tmp_path
    (tmp_path / "x").mkdir()
    assert rs.results_root({rs.RESULTS_ROOT_ENV: str(tmp_path / "x")}) == tmp_path / "x"
    with pytest.raises(DataError, match="not a folder"):
        rs.results_root({rs.RESULTS_ROOT_ENV: str(tmp_path / "missing")})


def test_find_runs_and_files(tmp_path: Path) -> None:
    write_run(tmp_path / "runs" / "b", "b")
    write_run(tmp_path / "deep" / "x" / "runs" / "a", "a")
    write_run(tmp_path / "runs" / "c.partial", "c")  # interrupted: not listed
    write_run(tmp_path / "runs" / "b" / "checkpoints" / "inner", "inner")  # inside a run: not listed
    write_run(tmp_path / "runs" / "spatial", "st")  # a run is found whatever its folder is called
    assert [p.relative_to(tmp_path).as_posix() for p in rs.find_runs(tmp_path)] == [
        "deep/x/runs/a", "runs/b", "runs/spatial"]
    assert rs.find_runs(tmp_path / "runs" / "b") == [tmp_path / "runs" / "b"]
    (tmp_path / "synth" / "slides").mkdir(parents=True)
    (tmp_path / "synth" / "cohort.csv").write_text("a")
    (tmp_path / "synth" / "slides" / "S1.tif").write_text("a")
    assert rs.find_files(tmp_path, (".csv",), names=("cohort",)) == [tmp_path / "synth" / "cohort.csv"]
    assert tmp_path / "synth" / "slides" / "S1.tif" in rs.find_files(tmp_path, (".tif",))


def test_nothing_reached_through_a_link_out_of_the_root_is_listed(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    write_run(outside / "runs" / "x", "x")
    (outside / "secret.csv").write_text("slide_id,patient_id,path\nA,B,C\n")
    (outside / "slide.tif").write_text("t")
    write_run(root / "runs" / "mine", "mine")
    (root / "cohort").mkdir()
    (root / "cohort" / "cohort.csv").write_text("slide_id,patient_id,path\nS,P,s.tif\n")
    (root / "cohort_link.csv").symlink_to(outside / "secret.csv")  # a file link out
    (root / "elsewhere").symlink_to(outside, target_is_directory=True)  # a folder link out
    (root / "slide_link.tif").symlink_to(outside / "slide.tif")
    (root / "passwd.csv").symlink_to("/etc/passwd")
    (root / "inside").symlink_to(root / "cohort", target_is_directory=True)  # a link that stays in
    (root / "cohort" / "loop").symlink_to(root / "cohort", target_is_directory=True)  # a loop
    assert [p.relative_to(root).as_posix() for p in rs.find_runs(root)] == ["runs/mine"]
    csvs = [p.relative_to(root).as_posix() for p in rs.find_files(root, (".csv",))]
    assert csvs == ["cohort/cohort.csv"]  # the folder reached again through "inside" and "loop": once
    assert rs.find_files(root, (".tif",)) == []
    cohorts, errors = rs.find_cohorts(root)
    assert [c.path.relative_to(root).as_posix() for c in cohorts] == ["cohort/cohort.csv"]
    assert rs.resolve_under(root, "inside/cohort.csv") == root / "inside" / "cohort.csv"
    assert not errors


def test_one_corrupt_run_is_named_and_the_others_load(tmp_path: Path) -> None:
    good = write_run(tmp_path / "runs" / "good", "good")
    bad = write_run(tmp_path / "runs" / "bad", "bad")
    (bad / "metrics.parquet").write_bytes(b"PAR1 this is not parquet")
    runs, errors = rs.load_runs([bad, good, tmp_path / "runs" / "missing"], root=tmp_path)
    assert [r.label for r in runs] == ["runs/good"]
    assert len(errors) == 2
    assert str(bad / "metrics.parquet") in errors[0] and "unreadable" in errors[0]
    assert "missing" in errors[1] and "\n" not in "".join(errors)
    assert len(runs[0].table) == 3 * 68 * 2 and runs[0].metrics.empty  # per-target rows stay in the table
    assert runs[0].blocks == {"gene": "regression", "protein": "regression"} and runs[0].path == good


def test_scores_targets_table_and_fold_sizes(tmp_path: Path) -> None:
    runs, _ = rs.load_runs([write_run(tmp_path / "a", "a", seed=1), write_run(tmp_path / "b", "b", seed=2)])
    s = rs.per_target_scores(runs, "pearson")
    m = pd.read_parquet(tmp_path / "a" / "metrics.parquet")
    ref = m[(m["metric"] == "pearson") & (m["target"] == "G007")]["value"]
    row = s[(s["run"] == "a") & (s["target"] == "G007")].iloc[0]
    assert row["mean"] == pytest.approx(ref.mean()) and row["std"] == pytest.approx(ref.std())
    assert row["n_folds"] == 3 and row["n"] == 8
    t = rs.targets_table(s)
    assert list(t.columns) == ["task", "target", "a", "b", "best"] and len(t) == 68
    best = np.nanmax(t[["a", "b"]].to_numpy(), axis=1)
    assert (np.diff(best) <= 1e-12).all()  # sorted by the best score
    assert (t["best"] == np.where(t["a"] >= t["b"], "a", "b")).all()
    assert set(rs.targets_table(s, query="g00, p001")["target"]) == {f"G00{j}" for j in range(10)} | {"P001"}
    assert set(rs.targets_table(s, targets=["g001", "P002"])["target"]) == {"G001", "P002"}
    f = rs.runs_table(runs)
    assert f["held-out per fold"].tolist() == ["8, 8, 8"] * 2 and f["folds x repeats"].tolist() == ["3 x 1"] * 2


def test_gene_panels() -> None:
    assert "pam50" in rs.list_panels()
    pam = rs.gene_panel("pam50")
    assert len(pam) == 50 and pam["symbol"].is_unique
    assert {"ESR1", "ERBB2", "MKI67", "PGR", "FOXA1", "KRT5", "ORC6"} <= set(pam["symbol"])
    found, unknown = rs.match_panel(pam, ["esr1", "MKI67", "ORC6L", "KRT5", "NOTAGENE"])
    assert found == ["esr1", "KRT5", "MKI67", "ORC6L"]  # case-insensitive; previous symbols count
    assert len(unknown) == 46 and "ERBB2" in unknown and "ORC6" not in unknown
    assert rs.parse_gene_list("ESR1, pgr;MKI67\n\nESR1  FOXA1") == ["ESR1", "pgr", "MKI67", "FOXA1"]
    f, u = rs.match_panel(["ESR1", "FAKE1"], ["ESR1"])
    assert f == ["ESR1"] and u == ["FAKE1"]
    with pytest.raises(DataError, match="no gene panel"):
        rs.gene_panel("nope")


def test_truncated_csv_is_named_and_its_half_row_left_out(tmp_path: Path) -> None:
    p = tmp_path / "embed_summary.csv"
    p.write_text("slide_id,status,n_tiles,seconds\nS1,done,10,1.0\nS2,done,12,1.5\nS3,do")
    assert "fewer fields than the header's 4 (the last row)" in rs.check_csv(p)
    assert "looks truncated" in rs.check_csv(p) and str(p) in rs.check_csv(p)
    df, warning = rs.read_csv_checked(p)
    assert df["slide_id"].tolist() == ["S1", "S2"] and warning
    ok = tmp_path / "ok.csv"
    ok.write_text("a,b\n1,2\n3,4\n")
    assert rs.check_csv(ok) is None and rs.read_csv_checked(ok)[1] is None
    mid = tmp_path / "mid.tsv"
    mid.write_text("a\tb\tc\n1\t2\t3\n4\n5\t6\t7\n")
    assert "(row 2)" in rs.check_csv(mid) and "looks truncated" not in rs.check_csv(mid)
    assert rs.read_csv_checked(mid)[0]["a"].tolist() == [1, 5]
    from histoviz.viz.dashboard import embed_summary

    table, totals = embed_summary(p)
    assert len(table) == 2 and totals["tiles"] == 22 and "looks truncated" in totals["warning"]


def test_outcome_tables_equal_the_metric_rows(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 80
    folds = np.arange(n) % 4
    z = rng.normal(size=n)
    proba = rng.dirichlet(np.ones(3), n)
    run = write_outcome_run(tmp_path / "o", "o", folds, time=rng.exponential(5, n) + 0.1,
                            event=rng.integers(0, 2, n), risk=z, codes=rng.integers(0, 3, n), proba=proba,
                            alpha=0.2)
    [r], _ = rs.load_runs([run])
    m = pd.read_parquet(run / "metrics.parquet")
    fv = rs.fold_values([r], "c_index")
    np.testing.assert_allclose(fv["value"], m[m["metric"] == "c_index"]["value"])
    auc = rs.auc_per_class(r, "grade").set_index("class")
    ref = m[m["metric"] == "auc"].groupby("target")["value"]
    np.testing.assert_allclose(auc["auc_mean"], ref.mean().reindex(auc.index))
    np.testing.assert_allclose(auc["auc_std"], ref.std().reindex(auc.index))
    cov = rs.coverage_table(r, "grade")
    assert cov["subset"].tolist() == ["all", "site=A", "site=B"]
    assert cov["coverage"].tolist() == pytest.approx([0.915] * 3) and cov["size"].tolist() == pytest.approx([1.65] * 3)
    assert cov["target_coverage"].tolist() == pytest.approx([0.8] * 3) and r.conformal_group == "site"
    assert cov["n_patients"].tolist() == [80, 40, 40] and cov["size_metric"].iloc[0] == "set_size"


# ---- figures ----------------------------------------------------------------------------------------
def test_numbers_at_risk_and_km_figure_parts() -> None:
    from lifelines.datasets import load_gbsg2

    from histoviz.evaluation.survival import km_curves, logrank

    d = load_gbsg2().rename(columns={"cens": "event"})
    d["risk_group"] = np.where(d["pnodes"] > 3, "high", "low")
    curves = km_curves(d, "risk_group", unit=None)
    ticks = [0.0, 500.0, 1000.0, 1500.0, 2000.0, 2500.0, 3000.0]
    nar = fg.numbers_at_risk(curves, ticks)
    for g, sub in d.groupby("risk_group"):  # subjects with time >= t
        assert nar.loc[g].tolist() == [int((sub["time"] >= t).sum()) for t in ticks]
    test = logrank(d, "risk_group", unit=None)
    fig = fg.km_risk_figure(curves, test, title="t")
    names = [t.name for t in fig.data if t.name]
    n = d["risk_group"].value_counts()
    assert names == [f"high risk (n={n['high']})", f"low risk (n={n['low']})"]
    ticks_traces = [t for t in fig.data if t.mode == "markers"]
    assert len(ticks_traces) == 2 and all(t.marker.symbol == "line-ns-open" for t in ticks_traces)
    text_rows = [t for t in fig.data if t.mode == "text"]
    assert len(text_rows) == 2 and list(text_rows[0].text)[0] == str(n["high"])
    assert f"p = {fg.fmt_p(test['p_value'])}" in fig.layout.title.text
    assert fg.fmt_p(0.04213) == "0.042" and fg.fmt_p(3.1e-5) == "3.1e-05" and fg.fmt_p(float("nan")) == "n/a"


def test_distribution_scatter_and_paired_figures(tmp_path: Path) -> None:
    from histoviz.evaluation.paired import compare_paired

    rng = np.random.default_rng(0)
    y = rng.normal(size=(40, 20))
    folds = np.arange(40) % 4
    a = write_heldout_run(tmp_path / "a", "a", y, y + rng.normal(size=y.shape), folds)
    b = write_heldout_run(tmp_path / "b", "b", y, y + 2 * rng.normal(size=y.shape), folds)
    runs, _ = rs.load_runs([a, b])
    s = rs.per_target_scores(runs)
    for style, kind in (("box", "box"), ("violin", "violin")):
        fig = fg.distribution_figure(s, style=style)
        assert [t.type for t in fig.data] == [kind, kind] and len(fig.data[0].y) == 20
    h = runs[0].heldout_target("gene", "G003")
    assert len(h) == 40 and set(h["target"]) == {"G003"}
    fig = fg.scatter_figure(h.assign(run="a"), target="G003")
    fit = next(t for t in fig.data if t.name == "least-squares fit")
    slope, icpt = np.polyfit(y[:, 3], h.set_index("patient_id").loc[[f"P{i:03d}" for i in range(40)],
                                                                     "y_pred"].to_numpy(), 1)
    assert fit.y[1] - fit.y[0] == pytest.approx(slope * (fit.x[1] - fit.x[0]))
    [pc] = compare_paired(a, b, n_boot=100)
    fig = fg.paired_figure(pc)
    assert fig.data[0].type == "histogram" and len(fig.data[0].x) == 20


def test_hover_map_figure_places_values_on_their_patches() -> None:
    import anndata as ad

    from histoviz.io.predictions import make_prediction_adata
    from histoviz.viz.maps import PatchLayout, map_values

    coords = np.array([[0, 0], [224, 0], [448, 224]])
    adata = make_prediction_adata(coords, slide_id="S", tile_size_level0=224, expression=np.array([[1.0], [2.0], [3.0]]),
                                  genes=["G"])
    assert isinstance(adata, ad.AnnData)
    lay = PatchLayout.from_adata(adata)
    mv = map_values(adata, "gene:G")
    fig = fg.hover_map_figure(np.zeros((50, 70, 3), np.uint8), lay, mv, (700, 500))
    img, heat = fig.data
    assert img.type == "image" and img.x0 == pytest.approx(5.0) and img.dx == pytest.approx(10.0)
    z = np.asarray(heat.z, float)
    for i, (x, y) in enumerate(coords):  # each value sits at its patch centre
        c, r = list(heat.x).index(x + 112), list(heat.y).index(y + 112)
        assert z[r, c] == i + 1 and heat.customdata[r][c] == i
    assert "G" in heat.colorbar.title.text and mv.unit in heat.colorbar.title.text
    assert "%{z:.3g}" in heat.hovertemplate


def test_page_summaries_equal_scipy_and_pandas():
    from scipy import stats

    from histoviz.evaluation.report import km_by_risk
    from histoviz.viz.results import fold_summary, pooled_by_run, risk_group_sizes

    rng = np.random.default_rng(0)
    yt = rng.normal(size=60)
    pts = pd.DataFrame({"run": ["a"] * 30 + ["b"] * 30, "fold": np.tile(np.repeat([0, 1, 2], 10), 2), "y_true": yt,
                        "y_pred": yt + rng.normal(0, [0.3] * 30 + [2.0] * 30)})
    pts.loc[3, "y_pred"] = np.nan  # dropped, not propagated
    got = pooled_by_run(pts).set_index("run")
    ok = pts.loc[:29].dropna()
    assert got.loc["a", "pooled_pearson"] == pytest.approx(stats.pearsonr(ok["y_true"], ok["y_pred"])[0], abs=1e-12)
    assert got.loc["a", "n"] == 29 and got.loc["b", "n"] == 30 and got.loc["a", "folds"] == 3
    assert got.loc["a", "per_fold"] == pytest.approx(10) and got.loc["a", "pooled_pearson"] > got.loc["b", "pooled_pearson"]
    vals = pd.DataFrame({"run": ["a"] * 3 + ["b"] * 2, "task": "survival", "fold": [0, 1, 2, 0, 1],
                         "value": [0.6, 0.7, 0.8, 0.5, 0.55]})
    fs = fold_summary(vals, "c_index").set_index("run")
    assert fs.loc["a", "c_index_mean"] == pytest.approx(0.7) and fs.loc["a", "c_index_std"] == pytest.approx(0.1)
    assert list(fs["folds"]) == [3, 2]
    h = pd.DataFrame({"fold": np.repeat([0, 1], 20), "risk": rng.normal(size=40), "time": rng.uniform(1, 50, 40),
                      "event": rng.integers(0, 2, 40).astype(bool)})
    curves, _ = km_by_risk(h, n_groups=2)
    sizes = risk_group_sizes(curves)
    assert sizes["patients"].sum() == 40 and sizes["events"].sum() == int(h["event"].sum())


def test_seen_in_training_by_fold_and_slide_copies(tmp_path: Path) -> None:
    """A slide is "unseen" only when the model that made the maps did not train on its patient:
    found by file or byte-identical copy in the run's cohort table, then by the fold's split."""
    run = write_run(tmp_path / "runs" / "r", "r")
    pd.DataFrame({"fold": [0, 0, 1, 1], "patient_id": ["P1", "P2", "P1", "P2"],
                  "split": ["test", "fit", "fit", "test"]}).to_parquet(run / "splits.parquet")
    [r], _ = rs.load_runs([run])
    assert r.seen("P1", "fold0")[0] is False and "held out in fold 0" in r.seen("P1", "fold0")[1]
    assert r.seen("P1", "fold1")[0] is True and r.seen("P1", "final")[0] is True
    assert r.seen("P9", "final")[0] is False
    slides = tmp_path / "c" / "slides"
    slides.mkdir(parents=True)
    (slides / "S1.tif").write_bytes(b"A" * 3000 + b"tail1")
    (slides / "S2.tif").write_bytes(b"B" * 3000 + b"tail2")
    table = pd.DataFrame({"slide_id": ["S1", "S2"], "patient_id": ["P1", "P2"],
                          "path": [str(slides / "S1.tif"), str(slides / "S2.tif")]})
    other = tmp_path / "other"
    other.mkdir()
    (other / "S1.tif").write_bytes((slides / "S1.tif").read_bytes())  # a copy, as the PathGen cohort's
    (other / "S1b.tif").write_bytes(b"A" * 3000 + b"tailX")  # same size, other bytes
    assert rs.slide_row(table, slides / "S2.tif")["patient_id"] == "P2"
    assert rs.slide_row(table, other / "S1.tif")["patient_id"] == "P1"
    assert rs.slide_row(table, other / "S1b.tif") is None
