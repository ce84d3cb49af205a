"""Grade, risk and uncertainty maps of real trained runs in napari (the sample's CPNN and joint
ABMIL grade + survival runs, trained on a small synthetic cohort; see tests/_sample.py)."""

from __future__ import annotations

import numpy as np
import pytest

from histoviz.io.predictions import read_predictions
from tests.gui.conftest import fresh, patch_pixels

pytestmark = [pytest.mark.gui, pytest.mark.slow]

OUTCOME_KINDS = {"grade_proba", "grade_class", "grade_set_size", "grade_uncertainty", "risk", "risk_width",
                 "risk_uncertainty", "attention"}


def test_sample_shows_the_trained_models_maps(module_viewer, synthetic_sample, pytestconfig, qtbot,
                                              monkeypatch):
    from histoviz.outputs import get_output, list_outputs
    from histoviz.viz.maps import available_maps, kind_labels
    from histoviz.viz.summary import slide_predictions
    from tests._sample import sample_cache_dir

    monkeypatch.setenv("HISTOVIZ_CACHE", str(sample_cache_dir(pytestconfig)))
    viewer = module_viewer
    fresh(viewer)
    viewer.open_sample("histoviz", "synthetic")
    slide, mapl = viewer.layers
    assert slide.multiscale and len(slide.data) >= 3 and mapl.name == "map: risk"
    widget = viewer.window.dock_widgets["Prediction maps (histoviz)"]
    qtbot.waitUntil(lambda: getattr(widget, "adata", None) is not None, timeout=10000)
    adata = read_predictions(synthetic_sample.predictions)
    assert widget.current.label == "risk" and widget._current_layer() is mapl
    assert widget.warning is None  # synthetic-trained models on a synthetic slide
    # the map list is the registry's, for what the file holds
    kinds = [widget.kind_combo.itemData(k) for k in range(widget.kind_combo.count())]
    assert kinds == list(available_maps(adata)) and OUTCOME_KINDS <= set(kinds)
    assert {widget.kind_combo.itemText(k) for k in range(widget.kind_combo.count())} == {kind_labels()[k] for k in kinds}
    # every single-valued outcome map shows the file's values, with the registry's unit on the colour bar
    for kind in sorted(OUTCOME_KINDS - {"grade_proba", "grade_class"}):
        assert widget.show_map(kind), widget.message
        got = widget.layout.values_from_raster(widget._current_layer().data)
        assert got == pytest.approx(adata.obs[get_output(kind).anndata_key].to_numpy(), rel=1e-6)
        unit = get_output(kind).unit
        assert widget.display.colorbar_text()[0] == (f"{widget.current.label} ({unit})" if unit else widget.current.label)
    assert widget.show_map("grade_class")
    assert not widget._current_layer().editable
    # the inspector: one row per registered single-valued output present, one chart per frame
    i = int(np.argmax(adata.obs["risk"].to_numpy()))
    s = widget.select_patch(i)
    present = [o.label for o in list_outputs() if o.name in available_maps(adata)
               and o.store in ("obs", "obs_category", "argmax")]
    assert [r["label"] for r in s["rows"]] == present
    text = widget.patch_label.text()
    for r in s["rows"]:
        assert r["label"] in text
    assert dict(widget.patch_panel.chart("Grade probability").items()) == pytest.approx(
        adata.obsm["grade_proba"].iloc[i].to_dict(), rel=1e-5)
    assert widget.patch_panel.chart("Cell-type weight") is not None
    # the slide-level prediction: grade with its conformal set, risk with its interval
    lines = [r["line"] for r in slide_predictions(adata)]
    assert widget.slide_panel.text() == "<br>".join(lines)
    assert any("conformal set {" in ln for ln in lines)
    # survival in the training data's time unit: probabilities at horizons, the conformal interval
    # as a range of event times (issue 17.3)
    surv = next(ln for ln in lines if ln.startswith("survival:"))
    assert "predicted survival" in surv and "conformal: event" in surv and "-sum S" not in surv
    # the riskiest patch is the brightest on screen, the least risky the darkest
    assert widget.show_map("risk")
    widget.cmap_combo.setCurrentText("gray")
    widget.opacity.setValue(100)
    viewer.reset_view()
    risk = adata.obs["risk"].to_numpy()
    lo, hi = widget._current_layer().contrast_limits
    _, _, px = patch_pixels(viewer, widget)
    assert px[int(np.argmax(risk))].min() > 230 and px[int(np.argmin(risk))].max() < 25 and risk.min() <= lo < hi <= risk.max()


def test_run_the_trained_outcome_model_in_the_widget(module_viewer, synthetic_sample, qtbot):
    """The real histoviz.predict.predict_slide in the background worker, then cancelled."""
    from napari_plugin._widget import PredictionWidget

    viewer = module_viewer
    fresh(viewer)
    viewer.open(str(synthetic_sample.slide), plugin="histoviz")
    widget = PredictionWidget(viewer)
    viewer.window.add_dock_widget(widget)
    seen = []
    widget.progress.valueChanged.connect(seen.append)
    run = synthetic_sample.runs["grade-survival"]
    assert widget.run_model(run) is not None, widget.message
    assert widget.progress.maximum() > 0  # determinate from the start
    qtbot.waitUntil(lambda: not widget.running, timeout=300_000)
    assert widget.adata is not None, widget.message
    assert widget.adata.uns["histoviz"]["model"] == "abmil-grade-survival" and widget.warning is None
    assert seen and seen[-1] == widget.progress.maximum() == widget.adata.n_obs + 1
    assert OUTCOME_KINDS <= set(widget.map_panel.available)
    # the same run on the same slide gives the sample file's values
    want = read_predictions(synthetic_sample.predictions)
    assert widget.adata.obs["risk"].to_numpy() == pytest.approx(want.obs["risk"].to_numpy(), rel=1e-4, abs=1e-5)
    assert widget.show_map("grade_set_size")
    assert widget.layout.values_from_raster(widget._current_layer().data) == pytest.approx(
        want.obs["grade_set_size"].to_numpy())
    # cancel: the run stops at its next check and nothing changes
    before = widget.adata
    assert widget.run_model(run) is not None
    widget.cancel_run()
    qtbot.waitUntil(lambda: not widget.running, timeout=300_000)
    assert "cancelled" in widget.message and widget.adata is before


def test_a_synthetic_trained_model_on_a_real_slide_warns(slide_viewer, synthetic_sample, qtbot):
    viewer, widget = slide_viewer
    assert widget.run_model(synthetic_sample.runs["grade-survival"]) is not None, widget.message
    assert widget.warning is not None and widget.warning_label.isVisible()
    assert "trained on synthetic slides" in widget.warning and "CMU-1-Small-Region is not a synthetic slide" in widget.warning
    qtbot.waitUntil(lambda: not widget.running, timeout=300_000)
    assert widget.adata is not None and "trained on synthetic slides" in widget.warning_label.text()
