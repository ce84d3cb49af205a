"""The Streamlit dashboard (app.py): every page with streamlit's AppTest, and once served and
screenshotted in headless Chromium.

Each test runs in a fresh working directory holding a link to ``sample_data/`` (the app's
default slide) and whatever ``demo_out/`` the test builds, so the app's default paths are the
ones exercised.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _runs import write_run

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app.py"
SVS_ID = "CMU-1-Small-Region"
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)

st = pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402


# ---- fixtures -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def svs_predictions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Simulated per-patch maps for the real SVS (48 patches of 224 px at 0.5 um/px)."""
    from histoviz.io import open_slide
    from histoviz.io.predictions import write_predictions
    from histoviz.tiling import TilingConfig, make_tile_grid
    from histoviz.viz.demo import simulated_predictions

    with open_slide(ROOT / "sample_data" / "real" / f"{SVS_ID}.svs") as r:
        adata = simulated_predictions(r, make_tile_grid(r, TilingConfig()), n_genes=8)
    return write_predictions(adata, tmp_path_factory.mktemp("pred") / f"{SVS_ID}.h5ad")


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "sample_data").symlink_to(ROOT / "sample_data", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    st.cache_data.clear()
    st.cache_resource.clear()
    return tmp_path


def with_maps(workdir: Path, pred: Path) -> Path:
    """Put the SVS predictions where the Slide page looks: ``demo_out/maps/<slide_id>.h5ad``."""
    dst = workdir / "demo_out" / "maps" / pred.name
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(pred, dst)
    return dst


def app(page: str | None = None, **query: str) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=90)
    for k, v in query.items():
        at.query_params[k] = v
    at.run()
    if page:
        at.switch_page(f"app_pages/{page}.py")
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def image_urls(at: AppTest) -> list[str]:
    return [img.url for el in at.image for img in el.proto.imgs]


def frame(at: AppTest, *columns: str) -> pd.DataFrame:
    """The first table shown with all of ``columns``."""
    tables = [d.value for d in at.dataframe]
    hits = [t for t in tables if set(columns) <= set(t.columns)]
    assert hits, f"no table with {columns}; have {[list(t.columns) for t in tables]}"
    return hits[0]


# ---- every page on the real SVS, no outputs yet ----------------------------------------------------
def test_pages_run_without_outputs(workdir: Path) -> None:
    at = app()
    assert not at.error
    meta = frame(at, "field", "value")
    assert dict(zip(meta["field"], meta["value"]))["vendor"] == "aperio"
    assert len(image_urls(at)) == 1  # the tissue grid preview
    from histoviz.io import open_slide
    from histoviz.tiling import make_tile_grid

    n = len(make_tile_grid(open_slide(ROOT / "sample_data" / "real" / f"{SVS_ID}.svs")))
    assert f"{n} tiles of 224 px" in at.image[0].proto.imgs[0].caption
    assert any("No prediction file" in i.value for i in at.info)

    at.switch_page("app_pages/cohort.py").run()
    assert not at.exception and not at.error
    assert any("No cohort table" in i.value for i in at.info)

    at.switch_page("app_pages/models.py").run()
    assert not at.exception and not at.error
    assert any("make demo" in i.value and "histoviz train" in i.value for i in at.info)


# ---- Slide page ---------------------------------------------------------------------------------------
def test_slide_page_overlay_follows_the_selected_gene(workdir: Path, svs_predictions: Path) -> None:
    with_maps(workdir, svs_predictions)
    at = app()
    assert not at.error
    pick = at.selectbox(key=f"pred_choice:sample_data/real/{SVS_ID}.svs")
    assert pick.value == f"demo_out/maps/{SVS_ID}.h5ad"  # found by slide id
    assert at.selectbox(key="map_kind").value == "gene"
    urls = image_urls(at)
    assert len(urls) == 3  # grid preview, overlay, colour bar
    assert "gene sim_gene_01" in at.image[1].proto.imgs[0].caption
    assert any("Simulated maps" in w.value for w in at.warning)

    at.selectbox(key="map_key_gene").select("sim_gene_05").run()
    assert not at.exception and not at.error
    after = image_urls(at)
    assert after[0] == urls[0]  # same slide, same grid
    assert after[1] != urls[1]  # another gene, another image
    assert "gene sim_gene_05" in at.image[1].proto.imgs[0].caption

    at.selectbox(key="map_kind").select("dominant_type").run()
    assert not at.exception and not at.error
    legend = " ".join(m.value for m in at.markdown)
    assert all(t in legend for t in ("tumour", "stroma", "lymphocyte"))
    assert len(image_urls(at)) == 2  # no colour bar for categories


def test_slide_picked_from_the_data_root(workdir: Path) -> None:
    slides = workdir / "demo_out" / "synth" / "slides"
    slides.mkdir(parents=True)
    (slides / "copy.svs").symlink_to(ROOT / "sample_data" / "real" / f"{SVS_ID}.svs")
    (slides / "notes.txt").write_text("not a slide")
    at = app()
    assert at.text_input(key="data_root").value == "demo_out/synth/slides"
    pick = at.selectbox(key="slide_pick")
    assert pick.options == ["(none)", "demo_out/synth/slides/copy.svs"]
    pick.select("demo_out/synth/slides/copy.svs").run()
    assert not at.exception and not at.error
    assert at.text_input(key="slide_path").value == "demo_out/synth/slides/copy.svs"
    meta = frame(at, "field", "value")
    assert dict(zip(meta["field"], meta["value"]))["path"] == "demo_out/synth/slides/copy.svs"
    assert any("**copy**" in m.value for m in at.markdown)


def test_slide_page_errors_are_messages(workdir: Path, svs_predictions: Path) -> None:
    from histoviz.io.predictions import make_prediction_adata, write_predictions

    at = app()
    at.text_input(key="slide_path").input("no/such/slide.svs").run()
    assert not at.exception
    assert [e.value for e in at.error] == ["no/such/slide.svs: slide file not found"]

    other = write_predictions(
        make_prediction_adata(np.array([[0, 0], [224, 0]]), slide_id="OTHER", tile_size_level0=224,
                              expression=np.ones((2, 1)), genes=["G"]),
        workdir / "other.h5ad",
    )
    at = app(pred_path=str(other))
    assert not at.exception
    assert len(at.error) == 1 and "for slide 'OTHER'" in at.error[0].value

    (workdir / "junk.h5ad").write_text("not hdf5")
    at.text_input(key="pred_path").input("junk.h5ad").run()
    assert not at.exception
    assert len(at.error) == 1 and "not a readable .h5ad" in at.error[0].value

    # a slide without microns per pixel: shown, with the reason there is no grid
    at.text_input(key="pred_path").input("")
    at.text_input(key="slide_path").input("sample_data/real/he_1000px.png").run()
    assert not at.exception and not at.error
    assert any("microns per pixel" in w.value for w in at.warning)


# ---- Cohort page ------------------------------------------------------------------------------------
def test_cohort_page_km_and_logrank(workdir: Path) -> None:
    from lifelines.datasets import load_gbsg2

    from histoviz.evaluation.survival import logrank

    d = load_gbsg2().head(150)
    synth = workdir / "demo_out" / "synth"
    feats = synth / "features" / "morphology"
    feats.mkdir(parents=True)
    cohort = pd.DataFrame({
        "slide_id": [f"S{i:03d}" for i in range(len(d))], "patient_id": [f"P{i:03d}" for i in range(len(d))],
        "path": [f"slides/S{i:03d}.tif" for i in range(len(d))], "time": d["time"], "event": d["cens"],
        "grade": d["tgrade"].map({"I": 1, "II": 2, "III": 3}),
    })
    cohort.to_csv(synth / "cohort.csv", index=False)
    pd.DataFrame({"slide_id": cohort["slide_id"], "status": "done", "path": "x", "n_tiles": 10,
                  "seconds": 0.1, "error": ""}).to_csv(feats / "embed_summary.csv", index=False)

    at = app("cohort")
    assert not at.error
    assert len(frame(at, "patient_id", "grade")) == len(d)
    assert at.selectbox(key="km_group").value == "grade"
    assert len(at.get("plotly_chart")) == 2  # KM curves, tiles per slide
    p = logrank(cohort, "grade")["p_value"]
    assert any(f"p = {p:.3g}" in m.value for m in at.markdown)
    assert {m.label: m.value for m in at.metric}["Tiles"] == str(10 * len(d))


# ---- Models page --------------------------------------------------------------------------------------
def test_models_page_table_equals_compare_runs(workdir: Path) -> None:
    from histoviz.evaluation.compare import compare_runs
    from histoviz.evaluation.metrics import OPTIMISTIC_LABEL
    from histoviz.viz.dashboard import per_target_summary, read_run_metrics

    runs = workdir / "demo_out" / "runs"
    dirs = [write_run(runs / "ridge", "ridge", seed=1), write_run(runs / "mtl", "mtl", seed=2)]
    at = app("models")
    assert not at.error
    assert at.text_area(key="run_dirs").value == "demo_out/runs/mtl\ndemo_out/runs/ridge"
    shown = frame(at, "view", "mean")
    ref = compare_runs(sorted(dirs), topk=(50, 500))
    assert len(shown) == len(ref) and len(ref) > 0
    for col in ("model", "task", "metric", "subset", "axis", "selection"):
        assert shown[col].astype(str).tolist() == ref[col].astype(str).tolist()
    for col in ("n_targets", "n_folds", "mean", "std", "n_undefined"):
        np.testing.assert_allclose(shown[col].to_numpy(float), ref[col].to_numpy(float), rtol=1e-12)
    optimistic = (ref["selection"] == OPTIMISTIC_LABEL).to_numpy()
    assert optimistic.any()
    assert shown["view"].str.contains("OPTIMISTIC").to_numpy().tolist() == optimistic.tolist()
    assert any("OPTIMISTIC" in w.value for w in at.warning)
    assert len(at.get("plotly_chart")) == 1

    at.text_input(key="target_query").input("G007").run()
    assert not at.exception
    genes = frame(at, "run", "target", "pearson_mean")
    expect = per_target_summary(read_run_metrics([runs / "mtl", runs / "ridge"]), "G007")
    assert genes["target"].tolist() == ["G007", "G007"]
    np.testing.assert_allclose(genes["pearson_mean"].to_numpy(float), expect["pearson_mean"].to_numpy(float))

    write_run(runs / "knn", "knn", seed=3)  # a run finished after the page was opened
    at.button(key="find_runs").click().run()
    assert at.text_area(key="run_dirs").value.splitlines() == [f"demo_out/runs/{n}" for n in ("knn", "mtl", "ridge")]
    assert set(frame(at, "view", "mean")["model"].astype(str)) == {"knn", "mtl", "ridge"}

    at.text_area(key="run_dirs").input("demo_out/runs/ridge").run()
    assert set(frame(at, "view", "mean")["model"].astype(str)) == {"ridge"}
    at.text_area(key="run_dirs").input("demo_out/runs/ridge\nnot/a/run").run()
    assert not at.exception
    assert any("not/a/run" in e.value and "run directory" in e.value for e in at.error)


# ---- served, in a real browser --------------------------------------------------------------------------
_READY_JS = """(() => {
  const q = (id) => document.querySelector(`[data-testid="${id}"]`);
  if (!q('stApp') || !q('stSidebarNav')) return 'loading app';
  if (q('stAppSkeleton') || q('stSkeleton')) return 'skeleton';
  if (q('stStatusWidgetRunningIcon') || q('stStatusWidgetRunningManIcon')) return 'running';
  const imgs = [...document.querySelectorAll('[data-testid="stImage"] img')];
  if (imgs.length < %d) return 'images: ' + imgs.length;
  return imgs.every(i => i.complete && i.naturalWidth > 0) ? 'ready' : 'loading images';
})()"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, timeout: float) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")


def chromium_screenshot(url: str, png: Path, profile: Path, *, min_images: int, timeout: float = 60) -> str:
    """Load ``url`` in headless Chromium, wait until the app has rendered, save a screenshot.

    ``chromium --screenshot --virtual-time-budget`` captures Streamlit's loading skeleton: the app
    renders over a websocket, which virtual time does not wait for. So the same headless Chromium
    is driven over the DevTools protocol until the script has finished and its images have loaded.
    Returns the last readiness state.
    """
    from websockets.sync.client import connect

    proc = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", "--window-size=1400,1000", "--hide-scrollbars",
         "--remote-debugging-port=0", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        t0 = time.monotonic()
        ws_url = None
        while ws_url is None and time.monotonic() - t0 < 30:
            line = proc.stderr.readline()
            if not line and proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {proc.returncode}")
            m = re.search(r"DevTools listening on (ws://\S+)", line)
            ws_url = m.group(1) if m else None
        assert ws_url, "chromium did not open its DevTools port"
        port = re.search(r":(\d+)/", ws_url).group(1)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            page = next(t for t in json.load(r) if t["type"] == "page")
        ids = itertools.count(1)
        with connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=10) as ws:
            def call(method: str, **params):
                i = next(ids)
                ws.send(json.dumps({"id": i, "method": method, "params": params}))
                while True:
                    msg = json.loads(ws.recv(timeout=30))
                    if msg.get("id") == i:
                        return msg.get("result", {})

            call("Emulation.setDeviceMetricsOverride", width=1400, height=1000, deviceScaleFactor=1,
                 mobile=False)
            call("Page.navigate", url=url)
            state, streak = "", 0
            while time.monotonic() - t0 < timeout and streak < 4:  # ready for 4 polls in a row
                res = call("Runtime.evaluate", expression=_READY_JS % min_images, returnByValue=True)
                state = res.get("result", {}).get("value", "")
                streak = streak + 1 if state == "ready" else 0
                time.sleep(0.25)
            time.sleep(0.5)  # let the layout settle (fonts, image sizes)
            data = call("Page.captureScreenshot", format="png")["data"]
        png.write_bytes(base64.b64decode(data))
        return state
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.mark.gui
@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (apt-get install chromium) for a browser screenshot")
def test_served_app_screenshot(workdir: Path, svs_predictions: Path, tmp_path: Path) -> None:
    from PIL import Image

    with_maps(workdir, svs_predictions)
    port = _free_port()
    env = {**os.environ, "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(APP), "--server.headless", "true",
         "--server.port", str(port), "--server.fileWatcherType", "none"],
        cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    png = tmp_path / "dashboard.png"
    try:
        _wait_http(f"http://localhost:{port}/_stcore/health", timeout=60)
        state = chromium_screenshot(f"http://localhost:{port}/", png, tmp_path / "chromium-profile",
                                    min_images=3)
    finally:
        server.terminate()
        try:
            out, _ = server.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            out, _ = server.communicate()
    assert state == "ready", f"the page did not finish rendering ({state}); server log:\n{out[-3000:]}"
    assert "Traceback" not in out, out[-3000:]
    assert png.is_file() and png.stat().st_size > 10_000
    img = np.asarray(Image.open(png).convert("RGB"), dtype=np.float32)
    assert img.shape[:2] == (1000, 1400)
    assert img.std() > 20, f"screenshot looks blank (pixel std {img.std():.1f})"
    # the overlay colours the right third of the page (inferno on tissue)
    right = img[:, 950:]
    saturation = right.max(axis=2) - right.min(axis=2)
    assert (saturation > 80).mean() > 0.02
    if os.environ.get("HISTOVIZ_SAVE_SCREENSHOTS"):
        dst = ROOT / "docs" / "img" / "dashboard.png"
        dst.parent.mkdir(parents=True, exist_ok=True)
        Image.open(png).convert("RGB").save(dst, optimize=True)
