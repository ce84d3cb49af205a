"""Screenshots of the napari plugin for the README (run under Xvfb).

    xvfb-run -a -s "-screen 0 1920x1200x24" .venv/bin/python docs/make_screenshots.py

Writes ``docs/img/napari_synthetic_mki67.png`` (synthetic slide, predicted MKI67, a patch
selected) and ``docs/img/napari_real_dominant_type.png`` (the real SVS, dominant cell type).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "img"


def _save(viewer, path: Path, width: int = 1200) -> None:
    from PIL import Image

    img = viewer.screenshot(canvas_only=False, flash=False)
    im = Image.fromarray(np.asarray(img)[..., :3])
    if im.width > width:
        im = im.resize((width, round(im.height * width / im.width)), Image.Resampling.LANCZOS)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE).save(
        path, optimize=True
    )
    logging.getLogger(__name__).info("wrote %s", path)


def _widget(viewer):
    return viewer.window.dock_widgets["Prediction maps (histoviz)"]


def main() -> None:
    import napari
    import napari._qt.qt_main_window as qmw
    from napari.settings import get_settings
    from qtpy.QtWidgets import QApplication

    get_settings().application.gui_notification_level = "none"  # no toasts on the canvas
    qmw.SHOW_QT_WARNING = False  # the PyQt5 deprecation toast would cover the canvas

    def settle(n: int = 20) -> None:
        for _ in range(n):
            QApplication.processEvents()

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1500, 1120)
    viewer.scale_bar.visible = True
    viewer.open_sample("histoviz", "synthetic")
    settle()
    w = _widget(viewer)
    w._auto_load()
    settle()
    w.show_map("gene:MKI67")
    viewer.reset_view()
    v = w.current.values
    w.select_patch(int(np.nanargmax(v)))
    settle()
    _save(viewer, OUT / "napari_synthetic_mki67.png")
    viewer.close()

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1500, 1120)
    viewer.scale_bar.visible = True
    viewer.open_sample("histoviz", "real")
    settle()
    w = _widget(viewer)
    w._auto_load()
    settle()
    w.show_map("dominant_type")
    viewer.reset_view()
    w.select_patch(len(w.layout) // 2)
    settle()
    _save(viewer, OUT / "napari_real_dominant_type.png")
    viewer.close()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
