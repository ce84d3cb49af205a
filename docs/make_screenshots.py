"""Screenshots for the README: the napari plugin in a real viewer (run under Xvfb) and the
dashboard in headless Chromium.

    xvfb-run -a -s "-screen 0 1920x1200x24" .venv/bin/python docs/make_screenshots.py

Writes, from napari's File > Open Sample > histoviz (maps of models trained here, see
:mod:`histoviz.demo.samples`; the first run builds the sample in its own process, about a minute):

- ``docs/img/napari_synthetic_risk.png``: per-patch risk of the joint ABMIL grade + survival
  model, the riskiest patch selected (inspector: every output of that patch), the slide-level
  grade with its conformal set and risk with its conformal interval;
- ``docs/img/napari_synthetic_mki67.png``: CPNN's predicted MKI67, a patch selected;
- ``docs/img/napari_side_by_side.png``: P(grade = 4) beside the conformal grade set size (grid
  mode, one camera);
- ``docs/img/napari_real_simulated.png``: the real Aperio SVS with *simulated* maps (labelled
  so in the layer list and on the colour bar).

Dashboard (served on localhost by ``histoviz dashboard ROOT``, captured in headless Chromium)::

    .venv/bin/python docs/make_screenshots.py --dashboard demo_out

writes ``docs/img/dashboard_<page>.png`` for every page and fails when a page shows an error
box or draws no plot.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "img"


def _save(viewer, path: Path, width: int = 1400) -> None:
    from PIL import Image

    img = viewer.screenshot(canvas_only=False, flash=False)
    im = Image.fromarray(np.asarray(img)[..., :3])
    if im.width > width:
        im = im.resize((width, round(im.height * width / im.width)), Image.Resampling.LANCZOS)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE).save(path, optimize=True)
    logging.getLogger(__name__).info("wrote %s", path)


def _viewer(sample: str):
    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1600, 1150)
    viewer.canvas.overlays.scale_bar.visible = True
    viewer.open_sample("histoviz", sample)
    w = viewer.window.dock_widgets["Prediction maps (histoviz)"]
    for _ in range(50):
        QApplication.processEvents()
        if w.adata is not None:
            break
    return viewer, w


def _settle(n: int = 30) -> None:
    from qtpy.QtWidgets import QApplication

    for _ in range(n):
        QApplication.processEvents()


def napari_screenshots() -> None:
    """Write the napari screenshots (see the module docstring)."""
    import napari._qt.qt_main_window as qmw
    from napari.settings import get_settings

    get_settings().application.gui_notification_level = "none"  # no toasts on the canvas
    qmw.SHOW_QT_WARNING = False  # the PyQt5 deprecation toast would cover the canvas

    viewer, w = _viewer("synthetic")
    w.show_map("risk")
    viewer.reset_view()
    w.select_patch(int(np.nanargmax(w.current.values)))
    _settle()
    _save(viewer, OUT / "napari_synthetic_risk.png")

    w.show_map("gene:MKI67")
    w.select_patch(int(np.nanargmax(w.current.values)))
    _settle()
    _save(viewer, OUT / "napari_synthetic_mki67.png")

    w.select_patch(None)
    w.show_map("grade_proba:4")
    w.compare("grade_set_size")
    _settle()
    _save(viewer, OUT / "napari_side_by_side.png")
    viewer.close()

    viewer, w = _viewer("real")
    w.show_map("dominant_type")
    viewer.reset_view()
    w.select_patch(len(w.layout) // 2)
    _settle()
    _save(viewer, OUT / "napari_real_simulated.png")
    viewer.close()


#: dashboard pages and the URL of each (query parameters pick what the Slide page shows)
DASHBOARD_PAGES = ("models", "targets", "outcomes", "cohort", "slide")


def dashboard(root: str | Path, out: Path = OUT, *, slide: str = "", predictions: str = "") -> dict[str, object]:
    """Serve the dashboard over ``root`` and save ``dashboard_<page>.png`` of every page.

    Returns ``{page: PageShot}``; raises ``RuntimeError`` when a page did not render, showed an
    error box or an exception, or drew no plot.
    """
    from urllib.parse import urlencode

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from _browser import chromium, save_small, screenshot, serve_dashboard

    out.mkdir(parents=True, exist_ok=True)
    shots: dict[str, object] = {}
    log: list[str] = []
    with tempfile.TemporaryDirectory() as tmp, serve_dashboard(root, log=log) as url, \
            chromium(Path(tmp) / "profile") as call:
        for page in DASHBOARD_PAGES:
            q = {k: v for k, v in (("slide_path", slide), ("pred_path", predictions)) if v} if page == "slide" else {}
            target = f"{url}/{'' if page == 'models' else page}" + (f"?{urlencode(q)}" if q else "")
            png = Path(tmp) / f"dashboard_{page}.png"
            shot = screenshot(call, target, png)
            shots[page] = shot
            logging.getLogger(__name__).info("%s: %s", page, shot)
            if shot.state == "ready" and not shot.errors and not shot.exceptions and shot.charts:
                save_small(png, out / f"dashboard_{page}.png")
    bad = {p: s for p, s in shots.items()
           if s.state != "ready" or s.errors or s.exceptions or s.charts == 0}  # type: ignore[attr-defined]
    if bad:
        raise RuntimeError(f"pages that did not render cleanly: {bad}\nserver log:\n{''.join(log)[-3000:]}")
    return shots


def main() -> None:
    """All screenshots of the docs."""
    napari_screenshots()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dashboard", metavar="ROOT", help="screenshot the dashboard served over ROOT")
    ap.add_argument("--slide", default="", help="Slide page: slide path under ROOT")
    ap.add_argument("--predictions", default="", help="Slide page: prediction file under ROOT")
    a = ap.parse_args()
    if a.dashboard:
        dashboard(a.dashboard, slide=a.slide, predictions=a.predictions)
    else:
        main()
