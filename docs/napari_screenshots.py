"""README pictures of the napari plugin for pathologists (issue 17), from the synthetic sample.

    xvfb-run -a -s "-screen 0 1920x1200x24" .venv/bin/python docs/napari_screenshots.py

Uses the "synthetic" napari sample (built once, :func:`histoviz.demo.samples.build_sample`: CPNN
and the joint ABMIL grade + survival model trained on 66 synthetic patients, a slide of a
patient outside that cohort) and writes to ``docs/img/``:

- ``napari_survival_months.png``: the first map the widget shows (survival probability at a
  horizon, in the training data's months), the slide-level survival with its median and cohort
  percentile, a patch selected;
- ``napari_regions.png``: two regions drawn on the slide (the highest and lowest predicted tumour
  weight), their means with bootstrap intervals and their difference;
- ``napari_two_models.png``: predicted MKI67 of CPNN beside a ridge model trained here on the same
  cohort, one camera, each with its title and colour bar, one colour scale;
- ``napari_finer_contours.png``: CPNN's tumour weight predicted on tiles overlapping by half,
  averaged into a finer map, smoothed, with the contour at the threshold;
- ``napari_mpp_warning.png``: a resolution entered for the SVS that differs from its own.

The numbers shown in those pictures are printed and written to ``docs/results/napari.json``.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "img"


def _save(viewer, name: str, width: int = 1400) -> None:
    from PIL import Image

    img = viewer.screenshot(canvas_only=False, flash=False)
    im = Image.fromarray(np.asarray(img)[..., :3])
    if im.width > width:
        im = im.resize((width, round(im.height * width / im.width)), Image.Resampling.LANCZOS)
    im.quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE).save(OUT / name, optimize=True)
    print(f"wrote docs/img/{name}")


def _settle(n: int = 40) -> None:
    from qtpy.QtWidgets import QApplication

    for _ in range(n):
        QApplication.processEvents()


def _viewer():
    import napari

    from napari_plugin._widget import PredictionWidget

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1600, 1150)
    viewer.scale_bar.visible = True
    widget = PredictionWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Prediction maps", area="right")
    return viewer, widget


def _fresh(viewer, widget) -> None:
    widget.end_compare()
    viewer.layers.clear()
    _settle()


def _scroll_to(widget, panel) -> None:
    from qtpy.QtWidgets import QScrollArea

    scroll = widget.findChild(QScrollArea)
    scroll.ensureWidgetVisible(panel, 0, 0)
    _settle()


def _ridge_run(sample, work: Path) -> Path:
    """A ridge run (HEST protocol) on the sample's training cohort, with CPNN's gene preprocessing,
    to compare with CPNN on one slide."""
    from histoviz.training.config import load_config
    from histoviz.training.runner import run_experiment

    train = Path(sample.runs["cpnn"]).parents[1] / "train"
    feats = next(p for p in (train / "features").iterdir() if p.is_dir())
    cfg = {"name": "sample-ridge", "seed": 0,
           "data": {"cohort": str(train / "cohort.csv"), "features": str(feats),
                    "omics": {"gene": {"path": str(train / "omics" / "gene.h5ad"), "normalize": "total",
                                       "transform": "log10p1", "drop_median_zero": True, "standardize": True}}},
           "model": {"name": "ridge", "params": {"n_components": 32}},
           "training": {"val_fraction": 0.0, "final_model": True},
           "evaluation": {"n_folds": 2}}
    out = work / "ridge"
    run_experiment(load_config(cfg), out)
    return out


def main() -> int:
    logging.basicConfig(level=logging.WARNING)
    from napari.settings import get_settings

    from histoviz.demo.samples import build_sample
    from histoviz.io.predictions import write_predictions
    from histoviz.predict import predict_slide

    get_settings().application.gui_notification_level = "none"  # no toasts over the canvas
    OUT.mkdir(parents=True, exist_ok=True)
    sample = build_sample("synthetic", progress=False)
    work = Path(tempfile.mkdtemp(prefix="histoviz-shots-"))
    numbers: dict[str, object] = {"sample": str(sample.predictions.name)}
    viewer, w = _viewer()

    # 1. the first map: survival in months
    viewer.open(str(sample.slide), plugin="histoviz")
    assert w.load_predictions(sample.predictions), w.message
    numbers["first_map"] = str(w.current.spec)
    viewer.reset_view()
    w.select_patch(int(np.nanargmin(w.current.values)))
    numbers["slide_survival"] = next((r["line"] for r in w.inspector.slide_panel.rows if r["kind"] == "survival"), "")
    _settle()
    _save(viewer, "napari_survival_months.png")

    # 2. regions: the 3 x 3 patch blocks of highest and lowest predicted tumour weight
    assert w.show_map("cell_type:tumour")
    w.select_patch(None)
    lay, vals = w.layout, w.current.values
    best = {}
    for i in range(len(lay)):
        r0, c0 = lay.index[i]
        idx = [lay.lookup[r, c] for r in range(r0, r0 + 3) for c in range(c0, c0 + 3)
               if r < lay.shape[0] and c < lay.shape[1]]
        if len(idx) == 9 and min(idx) >= 0:
            m = float(np.mean(vals[idx]))
            for name, better in (("tumour", m > best.get("tumour", (-1, None))[0]),
                                 ("low tumour", m < best.get("low tumour", (2, None))[0])):
                if better:
                    best[name] = (m, idx)
    w.regions.start_drawing()
    layer = w.regions.layer
    sc, tr = w.session.geometry()
    for name, (_, idx) in best.items():
        b = np.array([lay.patch_bounds(i) for i in idx])
        x0, y0, x1, y1 = b[:, 0].min() + 6, b[:, 1].min() + 6, b[:, 2].max() - 6, b[:, 3].max() - 6
        world = [(tr[0] + sc[0] * (y - 0.5), tr[1] + sc[1] * (x - 0.5)) for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1))]
        layer.add_polygons([np.array([layer.world_to_data(p) for p in world])])
        layer.features = {"name": np.asarray([*list(layer.features["name"])[:-1], name], dtype=object)}
    layer.mode = "pan_zoom"
    layer.refresh_text()
    w.regions.update_table()
    c = w.regions.compare("tumour", "low tumour").iloc[0]
    numbers["regions"] = {"map": "cell_type:tumour", "difference": float(c.difference), "ci": [float(c.ci_low), float(c.ci_high)],
                          "n": [int(c.n_a), int(c.n_b)]}
    viewer.reset_view()
    _scroll_to(w, w.regions)
    _settle()
    _save(viewer, "napari_regions.png")

    # 3. two models on one slide: CPNN and ridge, predicted MKI67
    ridge = predict_slide(sample.slide, _ridge_run(sample, work))
    ridge_path = write_predictions(ridge, work / "ridge.h5ad")
    _fresh(viewer, w)
    viewer.open(str(sample.slide), plugin="histoviz")
    assert w.load_predictions(sample.predictions), w.message
    assert w.show_map("gene:MKI67")
    w.cmap_combo.setCurrentText("inferno")
    assert w.compare_file(ridge_path), w.message
    _scroll_to(w, w.map_panel)
    a, b = w.current.values, w.comparison.state["mv"].values
    numbers["two_models"] = {"gene": "MKI67", "pearson_cpnn_ridge_over_patches": float(np.corrcoef(a, b)[0, 1])}
    _settle()
    _save(viewer, "napari_two_models.png")

    # 4. finer maps: CPNN on tiles overlapping by half
    fine = predict_slide(sample.slide, sample.runs["cpnn"], overlap=0.5)
    fine_path = write_predictions(fine, work / f"{fine.uns['histoviz']['slide_id']}.overlap.h5ad")
    _fresh(viewer, w)
    viewer.open(str(sample.slide), plugin="histoviz")
    assert w.load_predictions(fine_path), w.message
    assert w.show_map("cell_type:tumour")
    w.fine.setChecked(True)
    w.smooth.setValue(40.0)
    w.display.thr_slider.setValue(0.5)
    w.display.thr_check.setChecked(True)
    w.contours.setChecked(True)
    numbers["finer"] = {"patches": int(fine.n_obs), "stride_level0": int(fine.uns["histoviz"]["stride_level0"]),
                        "tile_size_level0": int(fine.uns["histoviz"]["tile_size_level0"]),
                        "contour_lines": len(w.map_panel.layers["contour"].data)}
    viewer.reset_view()
    _settle()
    _save(viewer, "napari_finer_contours.png")

    # 5. a resolution that differs from the slide's own
    _fresh(viewer, w)
    viewer.open(str(ROOT / "sample_data" / "real" / "CMU-1-Small-Region.svs"), plugin="histoviz")
    _settle()
    w.set_mpp("0.25")
    numbers["mpp_warning"] = w.slides.mpp_warning
    viewer.reset_view()
    _scroll_to(w, w.slides)
    _settle()
    _save(viewer, "napari_mpp_warning.png")
    w.set_mpp("0.499")

    (ROOT / "docs" / "results").mkdir(parents=True, exist_ok=True)
    (ROOT / "docs" / "results" / "napari.json").write_text(json.dumps(numbers, indent=1) + "\n")
    print(json.dumps(numbers, indent=1))
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
