"""The Streamlit dashboard (histoviz.dashboard): every page with streamlit's AppTest on an empty results
root, on fake results (structure) and on real runs of the session cohorts (the numbers a page
shows equal what histoviz computes directly); bad input (paths outside the root, a corrupt
run, a truncated CSV, no held-out predictions, unknown panel genes); and every page served by
``histoviz dashboard`` and screenshotted in headless Chromium.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _runs import write_heldout_run, write_outcome_run

from histoviz.dashboard import APP

ROOT = Path(__file__).resolve().parents[1]
SVS_ID = "CMU-1-Small-Region"
PAGES = ("models", "targets", "outcomes", "cohort", "explorer", "slide")

st = pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402


# ---- helpers -------------------------------------------------------------------------------------------
@pytest.fixture
def results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty results root (``$HISTOVIZ_RESULTS_ROOT``); the working directory is elsewhere."""
    root = tmp_path / "results"
    root.mkdir()
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setenv("HISTOVIZ_RESULTS_ROOT", str(root))
    st.cache_data.clear()
    st.cache_resource.clear()
    return root


def app(page: str | None = None, **query: str) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=120)
    for k, v in query.items():
        at.query_params[k] = v
    at.run()
    if page:
        at.switch_page(f"views/{page}.py")
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def frame(at: AppTest, *columns: str) -> pd.DataFrame:
    """The first table shown with all of ``columns``."""
    tables = [d.value for d in at.dataframe]
    hits = [t for t in tables if set(columns) <= set(t.columns)]
    assert hits, f"no table with {columns}; have {[list(t.columns) for t in tables]}"
    return hits[0]


def charts(at: AppTest) -> list:
    return at.get("plotly_chart")


def figure(at: AppTest, key: str) -> dict:
    """The plotly figure (JSON) of the chart with ``key``."""
    el = next(c for c in charts(at) if c.proto.id.endswith(key) or key in c.proto.id)
    return json.loads(el.proto.spec)


def texts(at: AppTest) -> str:
    parts = [*at.markdown, *at.caption, *at.code, *at.subheader, *at.header]
    return "\n".join(str(p.value) for p in parts)


def fake_results(root: Path) -> dict[str, Path]:
    """Two regression runs and two outcome runs (metrics computed from their held-out tables)."""
    rng = np.random.default_rng(0)
    y = rng.normal(size=(60, 30))
    folds = np.arange(60) % 5
    names = ["ESR1", "MKI67", "ERBB2", "PGR", *[f"G{j:03d}" for j in range(26)]]
    out = {
        "good": write_heldout_run(root / "runs" / "good", "good", y, y + 0.7 * rng.normal(size=y.shape), folds,
                                  targets=names),
        "weak": write_heldout_run(root / "runs" / "weak", "weak", y, y + 2.0 * rng.normal(size=y.shape), folds,
                                  targets=names),
    }
    n = 160
    of = np.arange(n) % 4
    z = rng.normal(size=n)
    time = rng.exponential(np.exp(-z)) * 10 + 0.1
    event = (rng.random(n) < 0.7).astype(int)
    codes = np.digitize(z, [-0.5, 0.5])
    s = z[:, None] * np.array([-1.0, 0.0, 1.0]) + 0.5 * rng.normal(size=(n, 3))
    proba = np.exp(s) / np.exp(s).sum(axis=1, keepdims=True)
    out["outcome"] = write_outcome_run(root / "runs" / "outcome", "outcome", of, time=time, event=event, risk=z,
                                       codes=codes, proba=proba)
    return out


@pytest.fixture(scope="module")
def svs_predictions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Simulated per-patch maps for the real SVS."""
    from histoviz.demo.simulated import simulated_maps
    from histoviz.io import open_slide
    from histoviz.io.predictions import write_predictions
    from histoviz.tiling import TilingConfig, make_tile_grid

    with open_slide(ROOT / "sample_data" / "real" / f"{SVS_ID}.svs") as r:
        adata = simulated_maps(r, make_tile_grid(r, TilingConfig()), n_genes=8)
    return write_predictions(adata, tmp_path_factory.mktemp("pred") / f"{SVS_ID}.h5ad")


def with_svs(root: Path, pred: Path | None = None) -> None:
    """The real SVS (a copy) at ``sample_data/real/`` and its maps at ``maps/`` under the root."""
    d = root / "sample_data" / "real"
    d.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "sample_data" / "real" / f"{SVS_ID}.svs", d)
    if pred is not None:
        (root / "maps").mkdir(exist_ok=True)
        shutil.copy(pred, root / "maps" / pred.name)


# ---- every page, empty root and fake results ------------------------------------------------------------
def test_every_page_on_an_empty_root(results: Path) -> None:
    at = app()
    for page in PAGES:
        at.switch_page(f"views/{page}.py").run()
        assert not at.exception, (page, [e.value for e in at.exception])
        assert not at.error, (page, [e.value for e in at.error])
        assert at.info, page  # says what to do
    assert any("histoviz dashboard" in i.value for i in at.info)


def test_every_page_on_fake_results(results: Path, svs_predictions: Path) -> None:
    fake_results(results)
    with_svs(results, svs_predictions)
    at = app()
    assert at.multiselect(key="runs_selected").value == ["runs/good", "runs/outcome", "runs/weak"]
    for page in PAGES:
        at.switch_page(f"views/{page}.py").run()
        assert not at.exception, (page, [e.value for e in at.exception])
        assert not at.error, (page, [e.value for e in at.error])
        if page != "cohort":  # no cohort table under this root
            assert charts(at), page
    # Models: fold sizes, distributions, the paired comparison with its verdict, CSV downloads
    at.switch_page("views/models.py").run()
    sizes = frame(at, "run", "held-out per fold")
    assert sizes.set_index("run").loc["runs/good", "held-out per fold"] == "12, 12, 12, 12, 12"
    assert at.selectbox(key="pair_a").value == "runs/good" and at.selectbox(key="pair_b").value == "runs/weak"
    m = {x.label: x.value for x in at.metric}
    assert m["Verdict"] == "runs/good better"
    assert len(at.get("download_button")) >= 6


def test_targets_panel_unknown_genes_and_missing_heldout(results: Path) -> None:
    runs = fake_results(results)
    (runs["weak"] / "heldout" / "gene.parquet").unlink()
    (runs["weak"] / "predictions.parquet").unlink()
    at = app("targets")
    assert not at.error
    table = frame(at, "task", "target", "runs/good", "runs/weak")
    assert len(table) == 30
    at.radio(key="t_view").set_value("pam50").run()
    table = frame(at, "task", "target", "runs/good")
    assert set(table["target"]) == {"ESR1", "MKI67", "ERBB2", "PGR"}
    warn = " ".join(w.value for w in at.warning)
    assert "46 of 50 panel genes are not among the runs' targets" in warn and "FOXA1" in warn
    at.radio(key="t_view").set_value("pasted list").run()
    at.text_area(key="t_pasted").input("MKI67, ESR1\nNOTAGENE1 FAKE2").run()
    assert set(frame(at, "task", "target")["target"]) == {"MKI67", "ESR1"}
    assert any("2 of 4 panel genes are not among the runs' targets: NOTAGENE1, FAKE2" in w.value for w in at.warning)
    at.selectbox(key="t_pick").select("gene/ESR1").run()
    assert not [w for w in at.warning if "runs/weak" in w.value]  # named in a caption, not warned about
    assert any("Not in the scatter: runs/weak (no held-out gene predictions saved" in x.value for x in at.caption)
    assert len(charts(at)) == 1  # the good run's scatter is still drawn


# ---- bad input --------------------------------------------------------------------------------------------
def test_paths_outside_the_root_are_refused(results: Path, tmp_path: Path) -> None:
    (tmp_path / "secret.csv").write_text("slide_id,patient_id,path\nA,B,C\n")
    for typed in ("/etc/group", str(tmp_path / "secret.csv"), "../secret.csv", "../no-such-file.csv"):
        at = app("slide", slide_path=typed)
        assert [e.value for e in at.error] == [
            f"{typed}: outside the results root {results}; the dashboard reads only files under it "
            "(start it with `histoviz dashboard ROOT` to choose another root)"]
        assert not at.dataframe and not charts(at)
        at = app("cohort")
        at.text_input(key="cohort_path").input(typed).run()
        assert len(at.error) == 1 and "outside the results root" in at.error[0].value
        assert not at.dataframe
    with_svs(results)
    at = app("slide", slide_path=f"sample_data/real/{SVS_ID}.svs", pred_path="/etc/passwd")
    assert len(at.error) == 1 and at.error[0].value.startswith("/etc/passwd: outside the results root")
    assert frame(at, "field", "value") is not None  # the slide itself is shown


@pytest.mark.parametrize("case", ["cohort file link", "slide file link", "slide folder link", "link to /etc/passwd"])
def test_links_out_of_the_root_are_never_followed(results: Path, tmp_path: Path, case: str) -> None:
    """Issue 20's dashboard cases: a file link, a folder link and a link to /etc/passwd placed in the
    root lead nowhere: not listed, refused when typed or linked, nothing of the target shown."""
    outside = tmp_path / "outside"
    (outside / "slides").mkdir(parents=True)
    shutil.copy(ROOT / "sample_data" / "real" / f"{SVS_ID}.svs", outside / "slides" / "secret.svs")
    (outside / "secret.csv").write_text("slide_id,patient_id,path\nSECRET1,PSECRET,slides/secret.svs\n")
    link, typed, page, key = {
        "cohort file link": (results / "cohort_link.csv", "cohort_link.csv", "cohort", "cohort_path"),
        "slide file link": (results / "slide_link.svs", "slide_link.svs", "slide", "slide_path"),
        "slide folder link": (results / "elsewhere", "elsewhere/slides/secret.svs", "slide", "slide_path"),
        "link to /etc/passwd": (results / "passwd.csv", "passwd.csv", "cohort", "cohort_path"),
    }[case]
    target = {"cohort file link": outside / "secret.csv", "slide file link": outside / "slides" / "secret.svs",
              "slide folder link": outside, "link to /etc/passwd": Path("/etc/passwd")}[case]
    link.symlink_to(target, target_is_directory=target.is_dir())
    at = app(page)
    shown = " ".join(str(x.value) for x in [*at.markdown, *at.caption, *at.info, *at.error]) + " ".join(
        d.value.to_csv() for d in at.dataframe)
    assert "SECRET1" not in shown and "secret.svs" not in shown and "root:x:0" not in shown
    if page == "cohort":
        assert not at.selectbox(key="cohort_pick").options or typed not in at.selectbox(key="cohort_pick").options
        at.text_input(key="cohort_path").input(typed).run()
    else:
        at = app(page, slide_path=typed)
    assert [e.value for e in at.error] == [
        f"{typed}: outside the results root {results}; the dashboard reads only files under it "
        "(start it with `histoviz dashboard ROOT` to choose another root)"]
    assert not at.dataframe and not charts(at) and not at.image


def test_a_corrupt_run_is_named_and_the_others_still_show(results: Path) -> None:
    runs = fake_results(results)
    (runs["weak"] / "metrics.parquet").write_bytes(b"PAR1 garbage")
    at = app()
    errs = [e.value for e in at.error]
    assert errs and all(str(runs["weak"] / "metrics.parquet") in e for e in errs)
    assert set(frame(at, "run", "held-out per fold")["run"]) == {"runs/good", "runs/outcome"}
    assert charts(at)
    at.switch_page("views/targets.py").run()
    assert not at.exception and "runs/good" in frame(at, "task", "target").columns


def test_a_truncated_cohort_csv_is_named(results: Path) -> None:
    d = results / "cohort"
    d.mkdir()
    rows = "\n".join(f"S{i},P{i},slides/S{i}.tif,{i + 1},1,{i % 3 + 1}" for i in range(9))
    (d / "cohort.csv").write_text(f"slide_id,patient_id,path,time,event,grade\n{rows}\nS9,P9,slid")
    at = app("cohort")
    assert not at.error
    assert any(str(d / "cohort.csv") in w.value and "looks truncated" in w.value for w in at.warning)
    assert {m.label: m.value for m in at.metric}["Patients"] == "9"
    assert "S9" not in set(frame(at, "slide_id", "path")["slide_id"])


def test_slide_page_hover_map_and_napari_command(results: Path, svs_predictions: Path) -> None:
    with_svs(results, svs_predictions)
    at = app("slide")
    assert not at.error
    pred = results / "maps" / svs_predictions.name
    assert at.selectbox(key=f"pred_choice:sample_data/real/{SVS_ID}.svs").value == f"maps/{svs_predictions.name}"
    fig = figure(at, "map_chart")
    heat = next(t for t in fig["data"] if t["type"] == "heatmap")
    assert "sim_gene_01" in heat["hovertemplate"] and "colorbar" in heat
    assert any(w.value.startswith("Simulated maps") for w in at.warning)
    code = texts(at)
    assert f"napari --plugin histoviz {pred}" in code
    assert 'w.show_map("gene:sim_gene_01")' in code and f'v.open("{results}/sample_data/real/{SVS_ID}.svs"' in code
    at.selectbox(key="map_key_gene").select("sim_gene_05").run()
    assert not at.exception and not at.error
    heat2 = next(t for t in figure(at, "map_chart")["data"] if t["type"] == "heatmap")
    assert "sim_gene_05" in heat2["hovertemplate"] and heat2["z"] != heat["z"]
    assert 'w.show_map("gene:sim_gene_05")' in texts(at)
    at.selectbox(key="map_kind").select("dominant_type").run()
    heat3 = next(t for t in figure(at, "map_chart")["data"] if t["type"] == "heatmap")
    assert set(heat3["colorbar"]["ticktext"]) >= {"tumour", "stroma", "lymphocyte"}


def test_a_synthetic_model_on_a_real_slide_warns(results: Path, svs_predictions: Path) -> None:
    import anndata as ad

    from histoviz.io.predictions import write_predictions

    synth = results / "synth"
    synth.mkdir()
    (synth / "manifest.json").write_text(json.dumps({"generator": "histoviz.data.synthetic"}))
    a = ad.read_h5ad(svs_predictions)
    info = dict(a.uns["histoviz"])
    info.update(model="ridge", trained_on=json.dumps({"synthetic": True, "cohort": str(synth / "cohort.csv")}))
    a.uns["histoviz"] = info
    with_svs(results)
    write_predictions(a, results / "maps" / f"{SVS_ID}.ridge.h5ad")
    at = app("slide")
    assert any("trained on synthetic slides" in w.value and f"{SVS_ID} is not a synthetic slide" in w.value
               for w in at.warning)


def test_cli_dashboard_serves_localhost(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from histoviz.cli import main

    assert main(["dashboard", str(tmp_path), "--print-command", "--port", "8999"]) == 0
    out = capsys.readouterr().out
    assert f"HISTOVIZ_RESULTS_ROOT={tmp_path.resolve()}" in out
    assert "--server.address localhost" in out and "--server.port 8999" in out and str(APP) in out
    assert main(["dashboard", str(tmp_path / "missing")]) == 1
    assert "not a folder" in capsys.readouterr().err
    # serving to the network says so, in one line, before anything starts
    assert main(["dashboard", str(tmp_path), "--print-command", "--host", "0.0.0.0"]) == 0
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "warning: --host 0.0.0.0 serves to the network" in err and str(tmp_path.resolve()) in err
    assert main(["dashboard", str(tmp_path), "--print-command"]) == 0
    assert capsys.readouterr().err == ""  # localhost: no warning
    cfg = (ROOT / ".streamlit" / "config.toml").read_text()
    assert 'address = "localhost"' in cfg  # streamlit run app.py from the checkout binds localhost too


# ---- real runs: the numbers a page shows equal histoviz's -------------------------------------------------
def build_real_results(root: Path, mc, oc) -> Path:
    """Runs of two cohorts under ``root``: ridge and knn (omics, ``mc``), PCA outcome baselines
    and their shuffled control (grade + survival, Mondrian coverage by site, ``oc``), and one
    slide's maps; ``root/synth`` holds the omics cohort (hard links)."""
    from histoviz.io.predictions import write_predictions
    from histoviz.predict import predict_slide
    from histoviz.training.config import load_config
    from histoviz.training.runner import run_experiment

    # the cohort is placed under the root (hard links: no copy of the slides); a symbolic link out of
    # the root would be refused, as the dashboard reads nothing outside it
    shutil.copytree(mc.root, root / "synth", copy_function=os.link)
    mc = type(mc)(root / "synth", root / "synth" / "features" / "morphology")
    for name, model, params in (("ridge", "ridge", {"n_components": 32}), ("knn", "knn", {})):
        run_experiment(load_config(mc.config(name, model, params=params, modalities=("gene", "protein"))),
                       root / "runs" / name)
    cohort = pd.read_csv(oc.cohort_csv)
    cohort["site"] = np.where(cohort["patient_id"].str[1:].astype(int) % 2, "A", "B")
    cohort["path"] = [str(oc.root / p) for p in cohort["path"]]
    (root / "outcome").mkdir()
    cohort.to_csv(root / "outcome" / "cohort.csv", index=False)
    for name, extra in (("pca-outcomes", {}), ("pca-shuffled", {"shuffle_labels": True})):
        cfg = oc.config(name, "pca-outcomes", params={"n_components": 16, "cox_components": 4, "penalizer": 0.1},
                        evaluation={"calibration_fraction": 0.3, "conformal": {"alpha": 0.1, "group": "site"}},
                        **extra)
        cfg["data"]["cohort"] = str(root / "outcome" / "cohort.csv")
        run_experiment(load_config(cfg), root / "runs" / name)
    a = predict_slide(mc.root / "slides" / "S001.tif", root / "runs" / "ridge", progress=False)
    write_predictions(a, root / "maps" / "S001.ridge.h5ad")
    return root


@pytest.fixture(scope="module")
def real_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """:func:`build_real_results` of the session cohorts."""
    from _model_fixtures import model_cohort, outcome_cohort

    return build_real_results(tmp_path_factory.mktemp("real_results"), model_cohort(tmp_path_factory),
                              outcome_cohort(tmp_path_factory))


@pytest.mark.slow
def test_pages_show_what_histoviz_computes(real_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from histoviz.evaluation.metrics import columnwise_pearson
    from histoviz.evaluation.paired import compare_paired
    from histoviz.evaluation.report import km_by_risk
    from histoviz.evaluation.survival import concordance_index
    from histoviz.io.rundir import RunDir

    monkeypatch.setenv("HISTOVIZ_RESULTS_ROOT", str(real_root))
    st.cache_data.clear()
    st.cache_resource.clear()
    # Targets: a gene's Pearson = mean over folds of histoviz's Pearson of its held-out values (the
    # run scored the unstandardised values, the held-out table keeps the float32 standardised
    # ones: equal up to float32 rounding)
    # the omics runs and the outcome runs were trained on two cohorts: two groups, never mixed
    from histoviz.viz.results import cohort_groups, find_runs, load_runs

    groups = {g.cohort_name: g for g in cohort_groups(load_runs(find_runs(real_root), root=real_root)[0])}
    assert {r.label for r in groups["synth"].runs} == {"runs/knn", "runs/ridge"}
    assert {r.label for r in groups["outcome"].runs} == {"runs/pca-outcomes", "runs/pca-shuffled"}
    assert all(r.identity.recorded for g in groups.values() for r in g.runs)
    at = app()
    at.selectbox(key="cohort_group").set_value(groups["synth"].id).run()
    at.switch_page("views/targets.py").run()
    assert not at.error
    at.text_input(key="t_query").input("MKI67").run()
    table = frame(at, "task", "target", "runs/ridge", "runs/knn").set_index("target")
    for run in ("ridge", "knn"):
        h = RunDir(real_root / "runs" / run).heldout("gene")
        h = h[h["target"] == "MKI67"]
        direct = np.mean([columnwise_pearson(g["y_true"].to_numpy(), g["y_pred"].to_numpy())[0]
                          for _, g in h.groupby("fold")])
        assert table.loc["MKI67", f"runs/{run}"] == pytest.approx(direct, abs=1e-6)
    assert len(charts(at)) >= 1 and "MKI67" in texts(at)
    # Models: the paired difference and its interval = compare_paired run directly
    at.switch_page("views/models.py").run()
    assert not at.error
    assert at.selectbox(key="pair_a").value == "runs/knn" and at.selectbox(key="pair_b").value == "runs/ridge"
    assert at.selectbox(key="pair_task").value == "gene"
    [ref] = compare_paired(real_root / "runs" / "knn", real_root / "runs" / "ridge", metric="pearson", task="gene",
                           n_boot=1000, labels=("runs/knn", "runs/ridge"))
    m = {x.label: x.value for x in at.metric}
    assert m["runs/knn − runs/ridge"] == f"{ref.difference:+.3f}"
    assert m["95% interval"] == f"[{ref.ci_low:+.3f}, {ref.ci_high:+.3f}]"
    assert m["Verdict"] == ref.verdict
    units = frame(at, "fold", "mean_a", "mean_b", "difference")
    np.testing.assert_allclose(units["difference"], ref.per_unit["difference"], atol=1e-12)
    assert set(frame(at, "run", "cohort")["cohort"]) == {"synth"}
    at.selectbox(key="cohort_group").set_value(groups["outcome"].id).run()
    assert at.multiselect(key="runs_selected").value == ["runs/pca-outcomes", "runs/pca-shuffled"]
    # Outcomes: the log-rank p of the risk groups and the c-index per fold
    at.switch_page("views/outcomes.py").run()
    assert not at.error
    at.selectbox(key="km_run").select("runs/pca-outcomes · survival").run()
    h = RunDir(real_root / "runs" / "pca-outcomes").heldout("survival")
    _, test = km_by_risk(h, n_groups=2)
    from histoviz.viz.figures import fmt_p

    assert f"p = {fmt_p(test['p_value'])}" in texts(at) and test["p_value"] < 0.05
    ci = frame(at, "run", "c_index_mean").set_index("run")
    direct = [concordance_index(g["time"], g["risk"], g["event"]) for _, g in h.groupby("fold")]
    assert ci.loc["runs/pca-outcomes", "c_index_mean"] == pytest.approx(np.mean(direct), abs=1e-12)
    assert ci.loc["runs/pca-outcomes", "c_index_std"] == pytest.approx(np.std(direct, ddof=1), abs=1e-12)
    assert ci.loc["runs/pca-outcomes", "c_index_mean"] > ci.loc["runs/pca-shuffled", "c_index_mean"] + 0.05
    cov = frame(at, "subset", "coverage", "target_coverage")
    assert cov["subset"].tolist() == ["all", "site=A", "site=B"]
    assert cov["target_coverage"].tolist() == pytest.approx([0.9] * 3)


# ---- served, in a real browser -----------------------------------------------------------------------------
@pytest.mark.gui
@pytest.mark.slow
def test_every_page_served_and_screenshotted(real_root: Path, tmp_path: Path) -> None:
    from _browser import CHROMIUM, chromium, save_small, screenshot, serve_dashboard
    from PIL import Image

    if CHROMIUM is None:
        pytest.skip("needs chromium (apt-get install chromium) for browser screenshots")
    log: list[str] = []
    shots = {}
    with serve_dashboard(real_root, log=log) as url, chromium(tmp_path / "profile") as call:
        port = int(url.rsplit(":", 1)[1])
        # bound to localhost: another address of this machine does not answer
        other = _non_loopback_address()
        if other is not None:
            with socket.socket() as s:
                s.settimeout(2)
                assert s.connect_ex((other, port)) != 0, f"the dashboard answers on {other}"
        from histoviz.viz.results import cohort_groups, find_runs, load_runs

        ids = {g.cohort_name: g.id for g in cohort_groups(load_runs(find_runs(real_root), root=real_root)[0])}
        for page in PAGES:
            q = f"?cohort_group={ids['outcome' if page == 'outcomes' else 'synth']}"
            q += "&slide_path=synth/slides/S001.tif&pred_path=maps/S001.ridge.h5ad" if page == "slide" else ""
            png = tmp_path / f"dashboard_{page}.png"
            shots[page] = (screenshot(call, f"{url}/{'' if page == 'models' else page}{q}", png), png)
    assert "Traceback" not in "".join(log), "".join(log)[-3000:]
    for page, (shot, png) in shots.items():
        assert shot.state == "ready", (page, shot)
        assert shot.charts >= 1 and not shot.errors and not shot.exceptions, (page, shot)
        assert shot.title.lower() == page, (page, shot.title)
        img = np.asarray(Image.open(png).convert("RGB"), dtype=np.float32)
        assert img.shape[1] == 1400 and img.std() > 20, page
        if os.environ.get("HISTOVIZ_SAVE_SCREENSHOTS"):  # docs/img holds the demo's pages (make demo)
            save_small(png, ROOT / "docs" / "img" / f"dashboard_{page}.png")


def _non_loopback_address() -> str | None:
    try:
        out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=5, check=False).stdout
    except OSError:
        return None
    addrs = [a for a in out.split() if "." in a and not a.startswith("127.")]
    return addrs[0] if addrs else None





@pytest.mark.gui
@pytest.mark.slow
def test_the_napari_command_opens_the_same_map(svs_predictions: Path) -> None:
    """The Python command the Slide page prints, run as printed (napari.run made a no-op so it
    returns): napari shows the slide and the chosen map."""
    import shlex

    from histoviz.viz.dashboard import napari_command

    if not os.environ.get("DISPLAY"):
        pytest.skip("needs an X display (run under xvfb-run)")
    pytest.importorskip("napari")
    svs = ROOT / "sample_data" / "real" / f"{SVS_ID}.svs"
    _, python = napari_command(svs, svs_predictions, "gene:sim_gene_05")
    argv = shlex.split(python)
    assert argv[:2] == ["python", "-c"] and len(argv) == 3
    probe = ("import napari; napari.run = lambda *a, **k: None\n" + argv[2]
             + "\nimport json; print('LAYERS', json.dumps([l.name for l in v.layers])); v.close()")
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=240, cwd=ROOT,
                         check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    layers = json.loads(next(ln for ln in res.stdout.splitlines() if ln.startswith("LAYERS"))[7:])
    # the real sample's maps are simulated and say so in the layer name
    assert any(n.startswith("map:") and n.endswith("gene sim_gene_05") for n in layers), layers
    assert any(SVS_ID in name for name in layers), layers
