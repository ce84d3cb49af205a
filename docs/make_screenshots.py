"""Screenshots of the napari plugin for the README, in a real viewer (run under Xvfb).

    xvfb-run -a -s "-screen 0 1920x1200x24" .venv/bin/python docs/make_screenshots.py

Writes, from napari's File > Open Sample > histoviz (maps of models trained here, see
:mod:`histoviz.samples`; the first run builds the sample, about a minute):

- ``docs/img/napari_synthetic_risk.png``: per-patch risk of the joint ABMIL grade + survival
  model, the riskiest patch selected (inspector: every output of that patch), the slide-level
  grade with its conformal set and risk with its conformal interval;
- ``docs/img/napari_synthetic_mki67.png``: CPNN's predicted MKI67, a patch selected;
- ``docs/img/napari_side_by_side.png``: P(grade = 4) beside the conformal grade set size (grid
  mode, one camera);
- ``docs/img/napari_real_simulated.png``: the real Aperio SVS with *simulated* maps (labelled
  so in the layer list and on the colour bar).
"""

from __future__ import annotations

import logging
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


def main() -> None:
    """All screenshots of the docs."""
    napari_screenshots()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
