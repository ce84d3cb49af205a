"""The "Slide and predictions" panel: which slide layer, its resolution, where predictions come
from (a file or a model run) and what they are.

It owns the slide choice, the microns per pixel entered for slides that do not record one
(checked as the command line's ``--mpp-override`` is, remembered per slide file across
sessions, with a warning naming both values when the slide records another), the model runner
(progress bar, cancel, optional tile overlap for finer maps) and the lines that describe the
predictions shown (:func:`histoviz.viz.summary.describe_predictions`) and warn about them.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Any

from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
)

from napari_plugin._layers import META_KEY, ROLE_SLIDE, UM, esc, layer_meta, slide_info
from napari_plugin._runner import ModelRunner
from napari_plugin._session import Session, reports_errors

__all__ = ["SlideBox", "remembered_mpp"]

logger = logging.getLogger(__name__)


def _mpp_store() -> Path:
    from histoviz.datasets import default_cache_dir

    return default_cache_dir() / "napari" / "mpp.json"


def remembered_mpp() -> dict[str, float]:
    """``slide file -> mpp`` entered in the widget before (``$HISTOVIZ_CACHE/napari/mpp.json``)."""
    try:
        got = json.loads(_mpp_store().read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): float(v) for k, v in got.items() if isinstance(v, (int, float))} if isinstance(got, dict) else {}


def _remember(path: str, mpp: float | None) -> None:
    from histoviz._atomic import atomic_write_text

    store = remembered_mpp()
    if mpp is None:
        store.pop(path, None)
    else:
        store[path] = float(mpp)
    try:
        _mpp_store().parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(_mpp_store(), json.dumps(store, indent=1, sort_keys=True))
    except OSError as e:  # a preference: say so in the log, keep working
        logger.warning("could not remember the mpp of %s in %s: %s", path, _mpp_store(), e)


class SlideBox(QGroupBox):
    """Slide choice, resolution, predictions from a file or a model (see the module docstring).

    Signals
    -------
    load_requested(str)
        The user chose a prediction file.
    predicted(object, str)
        A model run finished: its predictions (AnnData) and the model folder.
    slide_changed()
        Another slide layer was chosen, or its placement changed (an mpp was entered).
    """

    load_requested = Signal(str)
    predicted = Signal(object, str)
    slide_changed = Signal()

    def __init__(self, session: Session, predict_fn: Any = None) -> None:
        super().__init__("Slide and predictions")
        self.session = session
        self.viewer = session.viewer
        self.runner = ModelRunner(predict_fn)
        self.runner.succeeded.connect(self.predicted.emit)
        self.runner.message.connect(lambda text, err: self.session.say(text, error=err))
        form = QVBoxLayout(self)
        self.slide_combo = QComboBox()
        self.slide_combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.slide_combo.setMinimumContentsLength(10)
        self.slide_combo.setToolTip("The slide layer the predictions belong to")
        self.slide_combo.currentTextChanged.connect(self._on_slide_chosen)
        form.addWidget(self.slide_combo)
        row = QFormLayout()
        self.mpp_edit = QLineEdit()
        self.mpp_edit.setToolTip("Microns per pixel of the slide's full resolution (0.25 at 40x, 0.5 at 20x), for a "
                                 "slide that does not record it or records it wrongly; remembered for this file")
        self.mpp_edit.returnPressed.connect(lambda: self.set_mpp(self.mpp_edit.text()))
        row.addRow("Resolution (µm/px)", self.mpp_edit)
        form.addLayout(row)
        row = QHBoxLayout()
        self.btn_load = QPushButton("Load predictions…")
        self.btn_load.clicked.connect(self._choose_predictions)
        self.btn_run = QPushButton("Run model…")
        self.btn_run.setToolTip("Run a trained histoviz model (a run folder) on the slide, in the background")
        self.btn_run.clicked.connect(self._choose_model)
        row.addWidget(self.btn_load)
        row.addWidget(self.btn_run)
        form.addLayout(row)
        self.allow_other_id = QCheckBox("Accept another slide id (renamed file)")
        form.addWidget(self.allow_other_id)
        row = QFormLayout()
        self.overlap = QDoubleSpinBox()
        self.overlap.setRange(0.0, 0.75)
        self.overlap.setSingleStep(0.25)
        self.overlap.setDecimals(2)
        self.overlap.setSpecialValueText("none")
        self.overlap.setToolTip("Tile overlap for 'Run model' (0.5: stride half the tile size): slower, and the "
                                "map panel can then average overlapping tiles into a finer map")
        row.addRow("Tile overlap (run)", self.overlap)
        form.addLayout(row)
        row = QHBoxLayout()
        self.progress = self.runner.progress
        self.btn_cancel = self.runner.btn_cancel
        row.addWidget(self.progress)
        row.addWidget(self.btn_cancel)
        form.addLayout(row)
        self.source_label = QLabel("No predictions loaded.")
        self.source_label.setWordWrap(True)
        form.addWidget(self.source_label)
        self.warning_label = QLabel("")
        self.warning_label.setWordWrap(True)
        self.warning_label.setStyleSheet("color: #f0a030;")
        self.warning_label.setVisible(False)
        form.addWidget(self.warning_label)
        self.mpp_warning: str | None = None
        session.changed.connect(self._on_changed)
        session.warned.connect(self._show_warnings)

    # ---- slides ----------------------------------------------------------------------------------
    def slide_layers(self) -> list[Any]:
        """Image layers that are slides (histoviz's first), not maps."""
        from napari.layers import Image

        from napari_plugin._layers import ROLE_COMPARE, ROLE_CONTINUOUS, ROLE_PINNED

        out = [la for la in self.viewer.layers if isinstance(la, Image)
               and layer_meta(la).get("role") not in (ROLE_CONTINUOUS, ROLE_PINNED, ROLE_COMPARE)
               and not layer_meta(la).get("compare_slide")]
        out.sort(key=lambda la: layer_meta(la).get("role") != ROLE_SLIDE)
        return out

    def refresh(self) -> None:
        """Relist the slide layers (keeping the choice when it is still there)."""
        try:
            names = [la.name for la in self.slide_layers()]
            cur = self.slide_combo.currentText()
            slide = self.session.slide
            self.slide_combo.blockSignals(True)
            self.slide_combo.clear()
            self.slide_combo.addItems(names)
            if slide is not None and slide.name in names:
                self.slide_combo.setCurrentText(slide.name)
            elif cur in names:
                self.slide_combo.setCurrentText(cur)
            self.slide_combo.blockSignals(False)
            if self.slide_combo.currentText() != cur:
                self._on_slide_chosen(self.slide_combo.currentText())
            else:
                self._show_mpp(self.slide_layer())
        except RuntimeError:  # widget already deleted
            return

    def slide_layer(self) -> Any:
        """The chosen slide layer (``None``: none)."""
        name = self.slide_combo.currentText()
        if name and name in self.viewer.layers:
            return self.viewer.layers[name]
        return None

    def choose(self, layer: Any) -> None:
        """Make ``layer`` the chosen slide."""
        self.refresh()
        self.slide_combo.setCurrentText(layer.name)

    def _on_slide_chosen(self, _name: str) -> None:
        layer = self.slide_layer()
        self.mpp_warning = None
        self._show_warnings()
        self._apply_remembered(layer)
        self._show_mpp(layer)
        self.slide_changed.emit()

    # ---- resolution ------------------------------------------------------------------------------
    def _show_mpp(self, layer: Any) -> None:
        meta = layer_meta(layer)
        mpp = meta.get("mpp") if layer is not None else None
        with contextlib.suppress(RuntimeError):
            self.mpp_edit.blockSignals(True)
            self.mpp_edit.setText(f"{float(mpp):g}" if mpp else "")
            src = meta.get("mpp_source") or ("recorded in the file" if mpp else "")
            self.mpp_edit.setPlaceholderText("not recorded: enter the scanner's value (e.g. 0.5 at 20x)"
                                             if layer is not None and not mpp else "")
            self.mpp_edit.setToolTip(f"{float(mpp):g} µm/px ({src})" if mpp else self.mpp_edit.toolTip())
            self.mpp_edit.setEnabled(layer is not None)
            self.mpp_edit.blockSignals(False)

    def _apply_remembered(self, layer: Any) -> None:
        meta = layer_meta(layer)
        path = meta.get("path")
        if not path:
            return
        mpp = remembered_mpp().get(str(Path(path).resolve()))
        if mpp is not None and meta.get("mpp") != mpp:
            self.set_mpp(mpp, remember=False)
            self.session.say(f"{layer.name}: using the resolution entered before, {mpp:g} µm/px.")

    @reports_errors("Could not set the resolution")
    def set_mpp(self, value: Any, *, remember: bool = True) -> bool:
        """Give the chosen slide layer a resolution (µm per level-0 pixel): the slide and its maps
        are then shown in micrometres, and "Run model" tiles it at that resolution.

        The value is checked as ``--mpp-override`` is (finite, 0.1-20 µm/px); when the slide
        records another value the widget warns, naming both. Remembered for the slide file.
        """
        from histoviz.io.mpp import check_mpp_value, override_disagreement

        layer = self.slide_layer()
        if layer is None:
            self.session.say("Open a slide first.", error=True)
            return False
        text = str(value).strip()
        if not isinstance(layer.metadata.get(META_KEY), dict):
            layer.metadata[META_KEY] = {}
        meta = layer.metadata[META_KEY]
        if not text:
            return False
        try:
            v = check_mpp_value(float(text) if not isinstance(value, (int, float)) else value, "the resolution")
        except (TypeError, ValueError) as e:
            msg = str(e) if "resolution" in str(e) else f"the resolution must be a number of µm/px, got {text!r}"
            self.session.say(f"{layer.name}: {msg}", error=True)
            self._show_mpp(layer)
            return False
        own = dict(meta.get("mpp_sources") or {})
        if not own and meta.get("path"):
            with contextlib.suppress(Exception):
                from histoviz.io import open_slide

                with open_slide(meta["path"]) as r:
                    own = dict(r.meta.mpp_sources)
                    meta["mpp_sources"] = own
        self.mpp_warning = override_disagreement(v, own) or None
        meta.update(mpp=v, mpp_source="entered in the widget")
        layer.scale = (v, v)
        with contextlib.suppress(AttributeError, ValueError):
            layer.units = (UM, UM)
        if remember and meta.get("path"):
            _remember(str(Path(meta["path"]).resolve()), v)
        self._show_mpp(layer)
        self._show_warnings()
        self.viewer.reset_view()
        self.slide_changed.emit()
        self.session.say(f"{layer.name}: {v:g} µm/px" + (" (remembered for this file)." if remember else "."))
        return True

    def mpp_override(self) -> float | None:
        """The resolution entered for the chosen slide (``None``: the file's own is used)."""
        meta = layer_meta(self.slide_layer())
        return float(meta["mpp"]) if meta.get("mpp_source") == "entered in the widget" and meta.get("mpp") else None

    # ---- predictions -----------------------------------------------------------------------------
    def _choose_predictions(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load predictions", "", "AnnData (*.h5ad)")
        if path:
            self.load_requested.emit(path)

    def _choose_model(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Trained model (run folder)")
        if d:
            self.run_model(d)

    @reports_errors("Could not start the model", default=None)
    def run_model(self, model_dir: str | Path) -> Any:
        """Predict the chosen slide with the run in ``model_dir`` in a background thread.

        A determinate progress bar follows the tiles; :meth:`cancel_run` stops it. A model
        trained on synthetic slides applied to a slide that is not synthetic is run, with a
        warning. The resolution entered in the panel is used; with an overlap, tiles overlap.
        Returns the worker (``None`` if not started).
        """
        from histoviz.provenance import synthetic_mismatch, training_data

        if self.runner.running:
            self.session.say("A model is already running; cancel it first.", error=True)
            return None
        slide = self.slide_layer()
        if slide is None:
            self.session.say("Open a slide first (drag it into the viewer).", error=True)
            return None
        info = slide_info(slide)
        if not info.path:
            self.session.say(f"Layer {info.name!r} was not opened from a slide file; open it with the "
                             "histoviz reader.", error=True)
            return None
        worker = self.runner.start(info.path, model_dir, mpp=self.mpp_override(),
                                   overlap=float(self.overlap.value()))
        if worker is None:
            return None
        self.session.warn(synthetic_mismatch(training_data(model_dir), info.path, slide_name=info.name))
        self.btn_run.setEnabled(False)
        worker.finished.connect(lambda: self.btn_run.setEnabled(True))
        self.session.say(f"Running the model in {Path(model_dir).name} on {info.name}…")
        return worker

    def cancel_run(self) -> None:
        """Ask a running model to stop (it stops at its next check)."""
        self.runner.cancel()

    # ---- what is shown ---------------------------------------------------------------------------
    def _on_changed(self) -> None:
        from histoviz.viz.summary import describe_predictions

        s = self.session
        with contextlib.suppress(RuntimeError):
            if s.adata is None:
                self.source_label.setText("No predictions loaded.")
                self._show_warnings()
                return
            model = s.adata.uns["histoviz"].get("model")
            where = f"on {s.info.name}" if s.info else "(no slide open: maps in pixels)"
            name = Path(s.source).name if s.source and not s.source.startswith("model ") else "model run"
            self.source_label.setText(
                f"{esc(name)}: {esc(describe_predictions(s.maps))} {esc(where)}"
                + (f"<br>model: {esc(str(model))}" if model else ""))

    def _show_warnings(self, *_: Any) -> None:
        texts = [t for t in (self.session.warning, self.mpp_warning) if t]
        with contextlib.suppress(RuntimeError):
            self.warning_label.setText("<br>".join(f"Warning: {esc(t)}" for t in texts))
            self.warning_label.setVisible(bool(texts))

