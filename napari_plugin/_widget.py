"""The "Prediction maps" dock widget: load or compute predictions, pick a map, click a patch.

Thin Qt adapter over :mod:`histoviz.viz` (maps, colours, patch summaries),
:mod:`histoviz.io.predictions` and :mod:`histoviz.io.export`. Two layers show the maps: one
Image (continuous maps) and one Labels (categorical maps), each at patch-grid resolution and
placed on the slide by scale and translate. Switching maps replaces their data in place;
"Keep as layer" copies the current map into a layer of its own so several maps can be
toggled with napari's eye icons.

Every user action reports problems as a message in the widget (red), never as a traceback.
"""

from __future__ import annotations

import functools
import html
import logging
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QObject, QSize, Qt, QTimer, Signal
from qtpy.QtGui import QColor, QImage, QPainter, QPixmap
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QCompleter,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from histoviz.errors import HistovizError
from napari_plugin._layers import (
    META_KEY,
    ROLE_CATEGORICAL,
    ROLE_CONTINUOUS,
    ROLE_PINNED,
    ROLE_SELECTION,
    ROLE_SLIDE,
    SlideInfo,
    map_layer_data,
    slide_info,
    slide_layer_data,
)

if TYPE_CHECKING:
    import anndata as ad
    import napari
    import napari.layers

    from histoviz.viz.maps import MapValues, PatchLayout, PredictionMaps

__all__ = ["PredictionWidget"]

logger = logging.getLogger(__name__)

#: Signature of the model runner: ``fn(reader, model_dir, *, progress_callback, cancel_event)``.
PredictFn = Callable[..., "ad.AnnData"]

_CLICK_TOLERANCE_PX = 4.0


def _reports_errors(action: str, default: Any = False) -> Callable:
    """Turn exceptions of a widget action into a red message (user errors) or a logged bug."""

    def deco(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(self: PredictionWidget, *args: Any, **kwargs: Any) -> Any:
            try:
                return fn(self, *args, **kwargs)
            except HistovizError as e:
                self._say(f"{action}: {e}", error=True)
            except Exception as e:  # noqa: BLE001 - a GUI must keep working; report and go on
                logger.exception("histoviz widget: %s failed", action)
                self._say(f"{action} failed unexpectedly ({type(e).__name__}: {e}).", error=True)
            return default

        return wrapper

    return deco


def _meta(layer: Any) -> dict[str, Any]:
    md = getattr(layer, "metadata", None)
    if isinstance(md, dict):
        v = md.get(META_KEY)
        if isinstance(v, dict):
            return v
    return {}


class _BarChart(QWidget):
    """Horizontal bars with labels and values (composition, grade probabilities)."""

    ROW = 17

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._items: list[tuple[str, float, QColor]] = []
        self._vmax = 1.0
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)

    def set_items(self, items: list[tuple[str, float, tuple[int, int, int]]], vmax: float = 1.0) -> None:
        """Replace the bars: ``[(label, value, (r, g, b))]``; bars are scaled to ``vmax``."""
        self._items = [(str(n), float(v), QColor(*c)) for n, v, c in items]
        self._vmax = vmax if vmax > 0 else 1.0
        self.setFixedHeight(max(1, len(self._items)) * self.ROW + 4)
        self.update()

    def items(self) -> list[tuple[str, float]]:
        """The bars shown, ``[(label, value)]``."""
        return [(n, v) for n, v, _ in self._items]

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt API
        return QSize(240, max(1, len(self._items)) * self.ROW + 4)

    def paintEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        p = QPainter(self)
        w = self.width()
        label_w = min(130, w // 3)
        value_w = 44
        bar_w = max(10, w - label_w - value_w - 8)
        pal = self.palette()
        p.setPen(pal.color(pal.WindowText))
        for k, (name, v, col) in enumerate(self._items):
            y = 2 + k * self.ROW
            p.drawText(0, y, label_w - 4, self.ROW, int(Qt.AlignRight | Qt.AlignVCenter), name)
            frac = 0.0 if not np.isfinite(v) else min(max(v / self._vmax, 0.0), 1.0)
            p.fillRect(label_w, y + 3, int(bar_w * frac), self.ROW - 6, col)
            p.drawText(label_w + bar_w + 4, y, value_w, self.ROW, int(Qt.AlignLeft | Qt.AlignVCenter),
                       "–" if not np.isfinite(v) else f"{v:.2f}")
        p.end()


def _block_triton() -> None:
    """Keep torch from importing triton inside the viewer process.

    Triton ships its own LLVM, whose symbols clash with the libLLVM that Mesa's OpenGL drivers
    (llvmpipe under Xvfb, radeonsi on AMD GPUs) have already loaded once napari has drawn:
    ``import triton`` then segfaults. Torch imports triton only to probe for it
    (``torch.utils._triton.has_triton_package``) and CPU / eager CUDA inference does not need it,
    so when triton is not loaded yet we make its import fail cleanly (``sys.modules`` entry
    ``None``, the documented way to block an import).
    """
    import sys

    if "triton" not in sys.modules:
        sys.modules["triton"] = None  # type: ignore[assignment]
        logger.debug("histoviz: blocked 'import triton' in the napari process (LLVM clash)")


class _RunSignals(QObject):
    progress = Signal(int, int)


class PredictionWidget(QWidget):
    """Show per-patch prediction maps of a histoviz ``.h5ad`` on the open slide.

    Parameters
    ----------
    napari_viewer
        The viewer (injected by napari).
    predict_fn
        Model runner used by "Run model…"; default
        :func:`histoviz.predict.predict_slide` (``fn(reader, model_dir, *, progress_callback,
        cancel_event) -> AnnData``). Tests inject a stand-in.

    Notes
    -----
    Scriptable API (also used by the tests): :meth:`load_predictions`,
    :meth:`set_predictions`, :meth:`show_map`, :meth:`select_world`, :meth:`select_patch`,
    :meth:`pin_current`, :meth:`export_geojson`, :meth:`export_ome_tiff`, :meth:`run_model`,
    :meth:`cancel_run`; state in :attr:`adata`, :attr:`layout`, :attr:`current`,
    :attr:`selected`, :attr:`message`.
    """

    def __init__(
        self,
        napari_viewer: napari.viewer.Viewer,
        *,
        predict_fn: PredictFn | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.predict_fn = predict_fn
        self.adata: ad.AnnData | None = None
        self.maps: PredictionMaps | None = None
        self.layout: PatchLayout | None = None
        self.current: MapValues | None = None
        self.selected: int | None = None
        self.summary: dict[str, Any] | None = None
        self.message = ""
        self.message_is_error = False
        self._source = ""
        self._info: SlideInfo | None = None
        self._prefs: dict[str, dict[str, Any]] = {}
        self._last_key: dict[str, str] = {}
        self._worker: Any = None
        self._cancel: threading.Event | None = None
        self._signals: _RunSignals | None = None
        self._run_model_dir: str | None = None
        self._pending: set[str] = set()
        self._maps: dict[str, list[str]] = {}
        self._keys_of: tuple[int, str] | None = None
        self._generation = 0  # bumped on every set of predictions
        self._clim_watched: weakref.WeakSet[Any] = weakref.WeakSet()
        self._build_ui()
        self._connect_viewer()
        self._refresh_slides()
        QTimer.singleShot(0, self._auto_load)

    # ------------------------------------------------------------------------------------------
    # UI
    # ------------------------------------------------------------------------------------------
    def _build_ui(self) -> None:
        from superqt import QLabeledDoubleRangeSlider

        from histoviz.viz.colors import CONTINUOUS_COLORMAPS

        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        inner = QWidget()
        lay = QVBoxLayout(inner)
        scroll.setWidget(inner)
        outer.addWidget(scroll)
        self.setMinimumWidth(330)

        # -- slide and predictions
        box = QGroupBox("Slide and predictions")
        form = QVBoxLayout(box)
        self.slide_combo = QComboBox()
        self.slide_combo.setToolTip("The slide layer the predictions belong to")
        self.slide_combo.currentTextChanged.connect(self._on_slide_changed)
        form.addWidget(self.slide_combo)
        row = QHBoxLayout()
        self.btn_load = QPushButton("Load predictions…")
        self.btn_load.clicked.connect(self._choose_predictions)
        self.btn_run = QPushButton("Run model…")
        self.btn_run.setToolTip("Run a trained histoviz model on the open slide (background)")
        self.btn_run.clicked.connect(self._choose_model)
        row.addWidget(self.btn_load)
        row.addWidget(self.btn_run)
        form.addLayout(row)
        self.allow_other_id = QCheckBox("Accept another slide id (renamed file)")
        form.addWidget(self.allow_other_id)
        row = QHBoxLayout()
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.btn_cancel = QPushButton("Cancel")
        self.btn_cancel.setVisible(False)
        self.btn_cancel.clicked.connect(self.cancel_run)
        row.addWidget(self.progress)
        row.addWidget(self.btn_cancel)
        form.addLayout(row)
        self.source_label = QLabel("No predictions loaded.")
        self.source_label.setWordWrap(True)
        form.addWidget(self.source_label)
        lay.addWidget(box)

        # -- map picker
        box = QGroupBox("Map")
        form2 = QFormLayout(box)
        self.kind_combo = QComboBox()
        self.kind_combo.currentIndexChanged.connect(self._on_kind_changed)
        form2.addRow("Show", self.kind_combo)
        self.key_combo = QComboBox()
        self.key_combo.setEditable(True)
        self.key_combo.setInsertPolicy(QComboBox.NoInsert)
        self.key_combo.lineEdit().setPlaceholderText("type to search…")
        comp = QCompleter(self.key_combo.model(), self.key_combo)
        comp.setFilterMode(Qt.MatchContains)
        comp.setCaseSensitivity(Qt.CaseInsensitive)
        comp.setCompletionMode(QCompleter.PopupCompletion)
        self.key_combo.setCompleter(comp)
        self.key_combo.activated.connect(self._on_key_activated)
        self.key_combo.lineEdit().returnPressed.connect(self._on_key_entered)
        form2.addRow("Which", self.key_combo)
        self.btn_pin = QPushButton("Keep as separate layer")
        self.btn_pin.setToolTip("Copy the shown map into its own layer (toggle it with the eye icon)")
        self.btn_pin.clicked.connect(self.pin_current)
        form2.addRow(self.btn_pin)
        lay.addWidget(box)

        # -- display
        box = QGroupBox("Display")
        form3 = QFormLayout(box)
        self.cmap_combo = QComboBox()
        self.cmap_combo.addItems(list(CONTINUOUS_COLORMAPS))
        self.cmap_combo.currentTextChanged.connect(self._on_cmap)
        form3.addRow("Colormap", self.cmap_combo)
        self.opacity = QSlider(Qt.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(75)
        self.opacity.valueChanged.connect(self._on_opacity)
        form3.addRow("Opacity", self.opacity)
        self.clim = QLabeledDoubleRangeSlider(Qt.Horizontal)
        self.clim.setDecimals(3)
        self.clim.setRange(0.0, 1.0)
        self.clim.setValue((0.0, 1.0))
        self.clim.valueChanged.connect(self._on_clim)
        self.btn_auto = QPushButton("Auto")
        self.btn_auto.setToolTip("Reset the contrast to the 1st-99th percentile")
        self.btn_auto.clicked.connect(self._on_auto)
        row = QHBoxLayout()
        row.addWidget(self.clim, 1)
        row.addWidget(self.btn_auto)
        form3.addRow("Contrast", row)
        self.colorbar = QLabel()
        self.colorbar.setFixedHeight(14)
        self.colorbar.setScaledContents(True)
        self.cbar_lo = QLabel("")
        self.cbar_hi = QLabel("")
        self.cbar_hi.setAlignment(Qt.AlignRight)
        cb = QVBoxLayout()
        cb.addWidget(self.colorbar)
        ends = QHBoxLayout()
        ends.addWidget(self.cbar_lo)
        ends.addWidget(self.cbar_hi)
        cb.addLayout(ends)
        self.legend = QLabel("")
        self.legend.setWordWrap(True)
        self.legend.setTextFormat(Qt.RichText)
        cb.addWidget(self.legend)
        form3.addRow(cb)
        lay.addWidget(box)

        # -- patch panel
        box = QGroupBox("Patch (click on the tissue)")
        v = QVBoxLayout(box)
        self.patch_label = QLabel("No patch selected.")
        self.patch_label.setWordWrap(True)
        self.patch_label.setTextFormat(Qt.RichText)
        self.patch_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        v.addWidget(self.patch_label)
        self.comp_title = QLabel("<b>Composition</b>")
        self.comp_chart = _BarChart()
        self.grade_title = QLabel("<b>Grade probabilities</b>")
        self.grade_chart = _BarChart()
        for w in (self.comp_title, self.comp_chart, self.grade_title, self.grade_chart):
            w.setVisible(False)
            v.addWidget(w)
        lay.addWidget(box)

        # -- export
        box = QGroupBox("Export the shown map")
        row = QHBoxLayout(box)
        self.btn_geojson = QPushButton("QuPath GeoJSON…")
        self.btn_geojson.clicked.connect(self._choose_geojson)
        self.btn_tiff = QPushButton("OME-TIFF…")
        self.btn_tiff.clicked.connect(self._choose_ome_tiff)
        row.addWidget(self.btn_geojson)
        row.addWidget(self.btn_tiff)
        lay.addWidget(box)

        self.msg = QLabel("")
        self.msg.setWordWrap(True)
        self.msg.setTextInteractionFlags(Qt.TextSelectableByMouse)
        lay.addWidget(self.msg)
        lay.addStretch(1)
        self._set_enabled()

    def _set_enabled(self) -> None:
        has = self.adata is not None
        for w in (self.kind_combo, self.key_combo, self.btn_pin, self.btn_geojson, self.btn_tiff,
                  self.cmap_combo, self.clim, self.btn_auto, self.opacity):
            w.setEnabled(has)
        if has and self.current is not None and self.current.categorical:
            for w in (self.cmap_combo, self.clim, self.btn_auto):
                w.setEnabled(False)
        if has and self.current is not None and not self.current.spec.key:
            self.key_combo.setEnabled(False)

    def _say(self, text: str, *, error: bool = False) -> None:
        self.message = text
        self.message_is_error = error
        self.msg.setStyleSheet("color: #e0475b;" if error else "")
        self.msg.setText(text)
        (logger.warning if error else logger.info)("%s", text)

    # ------------------------------------------------------------------------------------------
    # viewer wiring
    # ------------------------------------------------------------------------------------------
    def _connect_viewer(self) -> None:
        self.viewer.layers.events.inserted.connect(self._on_layers_changed)
        self.viewer.layers.events.removed.connect(self._on_layers_changed)
        ref = weakref.ref(self)

        def histoviz_pick(viewer: Any, event: Any) -> Any:
            w = ref()
            if w is None:
                return
            yield from w._mouse(event)

        self._mouse_cb = histoviz_pick
        self.viewer.mouse_drag_callbacks.append(histoviz_pick)

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        """Stop a running model and detach from the viewer."""
        self.cancel_run()
        if self._mouse_cb in self.viewer.mouse_drag_callbacks:
            self.viewer.mouse_drag_callbacks.remove(self._mouse_cb)
        super().closeEvent(event)

    def _mouse(self, event: Any) -> Any:
        if event.type != "mouse_press" or event.button != 1 or self.layout is None:
            return
        start_world = np.asarray(event.position, dtype=float)
        start_px = np.asarray(event.pos, dtype=float)
        dragged = False
        yield
        while event.type == "mouse_move":
            if np.hypot(*(np.asarray(event.pos, dtype=float) - start_px)[:2]) > _CLICK_TOLERANCE_PX:
                dragged = True
            yield
        if not dragged:
            self.select_world(start_world)

    def _slide_layers(self) -> list[Any]:
        from napari.layers import Image

        out = []
        for layer in self.viewer.layers:
            if not isinstance(layer, Image):
                continue
            role = _meta(layer).get("role")
            if role in (ROLE_CONTINUOUS, ROLE_PINNED):
                continue
            out.append(layer)
        out.sort(key=lambda la: _meta(la).get("role") != ROLE_SLIDE)
        return out

    def _refresh_slides(self) -> None:
        names = [la.name for la in self._slide_layers()]
        cur = self.slide_combo.currentText()
        self.slide_combo.blockSignals(True)
        self.slide_combo.clear()
        self.slide_combo.addItems(names)
        if cur in names:
            self.slide_combo.setCurrentText(cur)
        self.slide_combo.blockSignals(False)

    def _slide_layer(self) -> Any:
        name = self.slide_combo.currentText()
        if name and name in self.viewer.layers:
            return self.viewer.layers[name]
        return None

    def _on_layers_changed(self, event: Any = None) -> None:
        try:
            self._refresh_slides()
        except RuntimeError:  # widget already deleted
            return
        layer = getattr(event, "value", None)
        pred = _meta(layer).get("predictions") if layer is not None else None
        if pred and str(pred) != self._source:
            self._pending.add(str(pred))
            QTimer.singleShot(0, self._auto_load)

    def _auto_load(self) -> None:
        """Load predictions named by a slide or map layer (reader / sample data)."""
        try:
            pending = set(self._pending)
        except RuntimeError:  # pragma: no cover - deleted before the timer fired
            return
        self._pending.clear()
        if not pending:
            for layer in self.viewer.layers:
                p = _meta(layer).get("predictions")
                if p:
                    pending.add(str(p))
        for p in sorted(pending):
            if p != self._source:
                for layer in self._slide_layers():
                    if str(_meta(layer).get("predictions")) == p:
                        self.slide_combo.setCurrentText(layer.name)
                self.load_predictions(p)
                break

    def _on_slide_changed(self, _name: str) -> None:
        if self.adata is not None:
            self.set_predictions(self.adata, source=self._source)

    # ------------------------------------------------------------------------------------------
    # predictions
    # ------------------------------------------------------------------------------------------
    def _choose_predictions(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load predictions", "", "AnnData (*.h5ad)")
        if path:
            self.load_predictions(path)

    @_reports_errors("Could not load the predictions")
    def load_predictions(self, path: str | Path) -> bool:
        """Read a prediction ``.h5ad``, check it belongs to the slide and show its first map."""
        from histoviz.io.predictions import read_predictions

        adata = read_predictions(path)
        return self.set_predictions(adata, source=str(Path(path).resolve()))

    @_reports_errors("Could not show the predictions")
    def set_predictions(self, adata: ad.AnnData, *, source: str = "") -> bool:
        """Show ``adata`` (prediction contract) on the selected slide.

        Refuses (with a message, keeping what was shown) predictions made for another slide:
        different slide id, different dimensions, or patches outside the slide.
        """
        from histoviz.io.predictions import validate_predictions
        from histoviz.viz.maps import (
            PatchLayout,
            PredictionMaps,
            available_maps,
            check_predictions_match_slide,
        )

        validate_predictions(adata, source=source or "<predictions>")
        layout = PatchLayout.from_adata(adata)
        pmaps = PredictionMaps(adata)
        maps = available_maps(pmaps)
        if not maps:
            self._say("The prediction file holds no maps (no genes, cell types, grade, risk or "
                      "attention).", error=True)
            return False
        slide = self._slide_layer()
        info_uns = adata.uns.get("histoviz", {})
        if slide is None:
            sp = info_uns.get("slide_path")
            if sp and Path(str(sp)).is_file():
                from histoviz.io import open_slide

                named = source if source and Path(source).is_file() else None
                data, kwargs, _ = slide_layer_data(open_slide(str(sp)), predictions=named)
                slide = self.viewer.add_image(data, **kwargs)
                self._refresh_slides()
                self.slide_combo.setCurrentText(slide.name)
        info = slide_info(slide) if slide is not None else None
        if info is not None:
            check_predictions_match_slide(
                adata, slide_id=info.slide_id, dimensions=info.dimensions,
                allow_other_id=self.allow_other_id.isChecked(),
            )
        # commit
        self._generation += 1
        self.adata, self.maps, self.layout = adata, pmaps, layout
        self._info, self._source = info, source
        self._prefs.clear()
        self.selected = None
        self.summary = None
        self._show_summary(None)
        self._populate_kinds(maps)
        first = self._initial_spec(maps)
        model = info_uns.get("model")
        where = f"on {info.name}" if info else "(no slide open: maps in pixels)"
        self.source_label.setText(
            f"{Path(source).name if source else 'predictions'}: {adata.n_obs} patches, "
            f"{adata.n_vars} genes {where}" + (f"<br>model: {html.escape(str(model))}" if model else "")
        )
        self._set_enabled()
        ok = self.show_map(first)
        if ok:
            self._say(f"Loaded {adata.n_obs} patches; showing {self.current.label}.")
        return bool(ok)

    def _source_file(self) -> str | None:
        """The prediction file shown, if the predictions came from one (not from a model run)."""
        return self._source if self._source and Path(self._source).is_file() else None

    def _initial_spec(self, maps: dict[str, list[str]]) -> str:
        for role in (ROLE_CONTINUOUS, ROLE_CATEGORICAL):
            layer = self._map_layer(role)
            spec = _meta(layer).get("map") if layer is not None else None
            if spec:
                kind, _, key = str(spec).partition(":")
                if kind in maps and (not key or key in maps[kind]):
                    return str(spec)
        kind, keys = next(iter(maps.items()))
        return f"{kind}:{keys[0]}" if keys[0] else kind

    def _populate_kinds(self, maps: dict[str, list[str]]) -> None:
        from histoviz.viz.maps import KIND_LABELS

        self._maps = maps
        self.kind_combo.blockSignals(True)
        self.kind_combo.clear()
        for kind in maps:
            self.kind_combo.addItem(KIND_LABELS[kind], kind)
        self.kind_combo.blockSignals(False)

    def _set_keys(self, kind: str, key: str | None) -> None:
        keys = [k for k in self._maps.get(kind, []) if k]
        self.key_combo.blockSignals(True)
        if self._keys_of != (self._generation, kind):  # refill only when the kind changes
            self.key_combo.clear()
            self.key_combo.addItems(keys)
            self._keys_of = (self._generation, kind)
        self.key_combo.setEnabled(bool(keys))
        self.key_combo.setCurrentText(key or "")
        self.key_combo.blockSignals(False)

    def _on_kind_changed(self, _index: int) -> None:
        kind = self.kind_combo.currentData()
        if not kind or self.adata is None:
            return
        keys = [k for k in self._maps.get(kind, []) if k]
        key = self._last_key.get(kind) or (keys[0] if keys else None)
        self.show_map(f"{kind}:{key}" if key else kind)

    def _on_key_activated(self, _index: int) -> None:
        self._on_key_entered()

    def _on_key_entered(self) -> None:
        kind = self.kind_combo.currentData()
        text = self.key_combo.currentText().strip()
        if kind and text:
            self.show_map(f"{kind}:{text}")

    # ------------------------------------------------------------------------------------------
    # maps
    # ------------------------------------------------------------------------------------------
    def _map_layer(self, role: str) -> Any:
        for layer in self.viewer.layers:
            if _meta(layer).get("role") == role:
                return layer
        return None

    def _selection_to_top(self) -> None:
        sel = self._map_layer(ROLE_SELECTION)
        if sel is not None:
            i = self.viewer.layers.index(sel)
            if i != len(self.viewer.layers) - 1:
                self.viewer.layers.move(i, len(self.viewer.layers))

    @_reports_errors("Could not show the map")
    def show_map(self, spec: Any) -> bool:
        """Show one map (``"gene:CD3E"``, ``"dominant_type"``, a :class:`MapSpec`...) in place."""
        from histoviz.viz.maps import map_values

        if self.adata is None or self.layout is None:
            self._say("Load predictions first.", error=True)
            return False
        mv = map_values(self.maps, spec)
        role = ROLE_CATEGORICAL if mv.categorical else ROLE_CONTINUOUS
        other = ROLE_CONTINUOUS if mv.categorical else ROLE_CATEGORICAL
        data, kwargs, ltype = map_layer_data(self.layout, mv, self._info, role=role,
                                             adata_info=dict(self.adata.uns["histoviz"]),
                                             name=f"map: {mv.label}")
        kwargs["metadata"][META_KEY]["predictions"] = self._source_file()
        prefs = self._prefs.get(str(mv.spec), {})
        layer = self._map_layer(role)
        if layer is None:
            if not mv.categorical:
                kwargs["colormap"] = prefs.get("colormap", kwargs["colormap"])
                kwargs["contrast_limits"] = prefs.get("contrast_limits", kwargs["contrast_limits"])
                kwargs["opacity"] = self.opacity.value() / 100.0
            active = self.viewer.layers.selection.active
            add = self.viewer.add_labels if ltype == "labels" else self.viewer.add_image
            layer = add(data, **kwargs)
            if active is not None and active in self.viewer.layers:
                self.viewer.layers.selection.active = active
        else:
            layer.metadata = kwargs["metadata"]
            layer.data = data
            if not np.allclose(layer.scale[-2:], kwargs["scale"]):
                layer.scale = kwargs["scale"]
            if not np.allclose(layer.translate[-2:], kwargs["translate"]):
                layer.translate = kwargs["translate"]
            if "units" in kwargs and tuple(layer.units) != tuple(kwargs["units"]):
                layer.units = kwargs["units"]
            if mv.categorical:
                layer.colormap = kwargs["colormap"]
            else:
                layer.colormap = prefs.get("colormap", kwargs["colormap"])
                lo, hi = prefs.get("contrast_limits", kwargs["contrast_limits"])
                finite = np.isfinite(data)
                vmin = float(data[finite].min()) if finite.any() else lo
                vmax = float(data[finite].max()) if finite.any() else hi
                layer.contrast_limits_range = (min(lo, vmin), max(hi, vmax))
                layer.contrast_limits = (lo, hi)
            layer.name = kwargs["name"]
            layer.visible = True
        if ltype == "image" and layer not in self._clim_watched:
            layer.events.contrast_limits.connect(self._on_layer_clim)
            self._clim_watched.add(layer)
        old = self._map_layer(other)
        if old is not None:
            old.visible = False
        self._selection_to_top()
        self.viewer.layers.selection.active = layer  # napari's layer controls follow the map
        self.current = mv
        if mv.spec.key:
            self._last_key[mv.spec.kind] = mv.spec.key
        self._sync_controls(layer)
        return True

    def _sync_controls(self, layer: Any) -> None:
        mv = self.current
        assert mv is not None
        i = self.kind_combo.findData(mv.spec.kind)
        self.kind_combo.blockSignals(True)
        self.kind_combo.setCurrentIndex(i)
        self.kind_combo.blockSignals(False)
        self._set_keys(mv.spec.kind, mv.spec.key)
        self._set_enabled()
        if mv.categorical:
            from histoviz.viz.colors import legend_entries

            self.colorbar.setVisible(False)
            self.cbar_lo.setText("")
            self.cbar_hi.setText("")
            rows = "".join(
                f'<span style="background-color:#{r:02x}{g:02x}{b:02x}">&nbsp;&nbsp;&nbsp;&nbsp;'
                f"</span>&nbsp;{html.escape(name)}&nbsp;&nbsp; "
                for name, (r, g, b) in legend_entries(mv.categories)
            )
            self.legend.setText(f"<b>{html.escape(mv.label)}</b><br>{rows}")
            return
        self.legend.setText(f"<b>{html.escape(mv.label)}</b>")
        self.cmap_combo.blockSignals(True)
        name = layer.colormap.name
        if self.cmap_combo.findText(name) < 0:
            self.cmap_combo.addItem(name)
        self.cmap_combo.setCurrentText(name)
        self.cmap_combo.blockSignals(False)
        self._sync_clim(layer)
        self._draw_colorbar(layer)

    def _sync_clim(self, layer: Any) -> None:
        lo, hi = (float(v) for v in layer.contrast_limits)
        rlo, rhi = (float(v) for v in layer.contrast_limits_range)
        self.clim.blockSignals(True)
        self.clim.setRange(min(rlo, lo), max(rhi, hi))
        self.clim.setValue((lo, hi))
        self.clim.blockSignals(False)
        self.cbar_lo.setText(f"{lo:.3g}")
        self.cbar_hi.setText(f"{hi:.3g}")

    def _draw_colorbar(self, layer: Any) -> None:
        rgba = np.asarray(layer.colormap.map(np.linspace(0.0, 1.0, 256)), dtype=np.float64)
        row = np.ascontiguousarray(np.repeat((rgba[None, :, :3] * 255).astype(np.uint8), 8, axis=0))
        img = QImage(row.data, row.shape[1], row.shape[0], row.strides[0], QImage.Format_RGB888).copy()
        self.colorbar.setPixmap(QPixmap.fromImage(img))
        self.colorbar.setVisible(True)

    def _current_layer(self) -> Any:
        if self.current is None:
            return None
        return self._map_layer(ROLE_CATEGORICAL if self.current.categorical else ROLE_CONTINUOUS)

    def _on_cmap(self, name: str) -> None:
        layer = self._current_layer()
        if layer is None or self.current is None or self.current.categorical or not name:
            return
        try:
            layer.colormap = name
        except (KeyError, ValueError) as e:
            self._say(f"Unknown colormap {name!r} ({e})", error=True)
            return
        self._prefs.setdefault(str(self.current.spec), {})["colormap"] = name
        self._draw_colorbar(layer)

    def _on_opacity(self, value: int) -> None:
        for role in (ROLE_CONTINUOUS, ROLE_CATEGORICAL):
            layer = self._map_layer(role)
            if layer is not None:
                layer.opacity = value / 100.0

    def _on_clim(self, value: tuple[float, float]) -> None:
        layer = self._current_layer()
        if layer is None or self.current is None or self.current.categorical:
            return
        lo, hi = (float(v) for v in value)
        if hi <= lo:
            return
        layer.contrast_limits = (lo, hi)

    def _on_layer_clim(self, event: Any = None) -> None:
        layer = self._current_layer()
        if layer is None or self.current is None or self.current.categorical:
            return
        try:
            self._sync_clim(layer)
        except RuntimeError:  # widget deleted
            return
        self._prefs.setdefault(str(self.current.spec), {})["contrast_limits"] = tuple(
            float(v) for v in layer.contrast_limits
        )

    def _on_auto(self) -> None:
        layer = self._current_layer()
        if layer is None or self.current is None or self.current.categorical:
            return
        layer.contrast_limits = self.current.contrast_limits

    @_reports_errors("Could not keep the map", default=None)
    def pin_current(self) -> Any:
        """Copy the shown map into a layer of its own; returns that layer."""
        if self.current is None or self.layout is None or self.adata is None:
            self._say("Show a map first.", error=True)
            return None
        src = self._current_layer()
        data, kwargs, ltype = map_layer_data(self.layout, self.current, self._info, role=ROLE_PINNED,
                                             adata_info=dict(self.adata.uns["histoviz"]),
                                             name=f"{self.current.label} (kept)")
        if ltype == "image" and src is not None:
            kwargs["colormap"] = src.colormap
            kwargs["contrast_limits"] = tuple(src.contrast_limits)
            kwargs["opacity"] = src.opacity
        active = self.viewer.layers.selection.active
        add = self.viewer.add_labels if ltype == "labels" else self.viewer.add_image
        layer = add(data, **kwargs)
        if src is not None:
            src.visible = False
        self._selection_to_top()
        if active is not None and active in self.viewer.layers:
            self.viewer.layers.selection.active = active
        self._say(f"Kept {self.current.label} as layer {layer.name!r}.")
        return layer

    # ------------------------------------------------------------------------------------------
    # patch selection
    # ------------------------------------------------------------------------------------------
    def _geometry(self) -> tuple[tuple[float, float], tuple[float, float]]:
        if self._info is not None:
            return self._info.scale, self._info.translate
        return (1.0, 1.0), (0.0, 0.0)

    def select_world(self, position: Any) -> int | None:
        """Select the patch under a world position ``(..., y, x)`` (a click); returns its index."""
        if self.layout is None:
            return None
        scale, translate = self._geometry()
        i = self.layout.patch_at_world(position, scale, translate)
        self.select_patch(i)
        return i

    @_reports_errors("Could not show the patch", default=None)
    def select_patch(self, index: int | None) -> dict[str, Any] | None:
        """Show the patch panel for patch ``index`` (``None`` clears it) and outline the patch."""
        from histoviz.viz.maps import patch_summary

        if self.adata is None or self.layout is None:
            return None
        if index is None:
            self.selected = None
            self.summary = None
            self._show_summary(None)
            self._outline(None)
            return None
        mpp = self._info.mpp if self._info is not None else None
        s = patch_summary(self.maps, int(index), mpp=mpp)
        self.selected = int(index)
        self.summary = s
        self._show_summary(s)
        self._outline(int(index))
        return s

    def _outline(self, index: int | None) -> None:
        layer = self._map_layer(ROLE_SELECTION)
        if index is None or self.layout is None:
            if layer is not None:
                layer.data = []
            return
        x0, y0, x1, y1 = self.layout.patch_bounds(index)
        rect = np.array([[y0 - 0.5, x0 - 0.5], [y0 - 0.5, x1 - 0.5], [y1 - 0.5, x1 - 0.5],
                         [y1 - 0.5, x0 - 0.5]], dtype=float)
        scale, translate = self._geometry()
        width = max(1.0, self.layout.tile_size_level0 * 0.1)
        if layer is None:
            active = self.viewer.layers.selection.active
            kw: dict[str, Any] = {}
            if self._info is not None and self._info.units:
                kw["units"] = self._info.units
            layer = self.viewer.add_shapes(
                [rect], shape_type="rectangle", edge_color="cyan", face_color="transparent",
                edge_width=width, name="selected patch", scale=scale, translate=translate,
                metadata={META_KEY: {"role": ROLE_SELECTION}}, **kw,
            )
            if active is not None and active in self.viewer.layers:
                self.viewer.layers.selection.active = active
        else:
            layer.scale = scale
            layer.translate = translate
            layer.data = [rect]
            layer.edge_width = width
            layer.edge_color = "cyan"
            layer.face_color = "transparent"
        self._selection_to_top()

    def _show_summary(self, s: dict[str, Any] | None) -> None:
        from histoviz.viz.colors import category_colors

        if s is None:
            self.patch_label.setText("No patch selected." if self.adata is not None else
                                     "Load predictions, then click on the tissue.")
            for w in (self.comp_title, self.comp_chart, self.grade_title, self.grade_chart):
                w.setVisible(False)
            return
        esc = html.escape
        lines = [f"<b>{esc(s['name'])}</b> (patch {s['index']})",
                 f"top-left x={s['x']}, y={s['y']} px, {s['size']} px wide (level 0)"]
        if s["centre_um"] is not None:
            cx, cy = s["centre_um"]
            lines.append(f"centre {cx:.1f}, {cy:.1f} µm")
        if s["risk"] is not None:
            r = f"<b>risk</b> {s['risk']:.3f}"
            if s["risk_interval"] is not None:
                lo, hi = s["risk_interval"]
                r += f" (conformal interval {lo:.3f} – {hi:.3f})"
            lines.append(r)
        if s["grade_pred"] is not None:
            g = f"<b>grade</b> {esc(str(s['grade_pred']))}"
            if s["grade_set"] is not None:
                g += f" (conformal set {{{esc(str(s['grade_set']))}}})"
            lines.append(g)
        if s["attention"] is not None:
            lines.append(f"<b>attention</b> {s['attention']:.4g}")
        if s["coattention"]:
            top = max(s["coattention"], key=s["coattention"].get)
            lines.append(f"<b>strongest co-attention</b> {esc(top)} "
                         f"({s['coattention'][top]:.4g})")
        if s["top_genes"]:
            rows = "".join(f"<tr><td>{esc(g)}</td><td align='right'>&nbsp;{v:.3f}</td></tr>"
                           for g, v in s["top_genes"])
            lines.append(f"<b>top predicted genes</b><table>{rows}</table>")
        self.patch_label.setText("<br>".join(lines))
        comp = s["composition"]
        if comp:
            cols = category_colors(len(comp))
            items = sorted(
                ((k, v, tuple(int(c * 255) for c in cols[j][:3])) for j, (k, v) in enumerate(comp.items())),
                key=lambda t: -t[1] if np.isfinite(t[1]) else 0.0,
            )
            self.comp_chart.set_items(items, vmax=1.0)
        grade = s["grade_proba"]
        if grade:
            self.grade_chart.set_items([(k, v, (120, 110, 200)) for k, v in grade.items()], vmax=1.0)
        self.comp_title.setVisible(bool(comp))
        self.comp_chart.setVisible(bool(comp))
        self.grade_title.setVisible(bool(grade))
        self.grade_chart.setVisible(bool(grade))

    # ------------------------------------------------------------------------------------------
    # export
    # ------------------------------------------------------------------------------------------
    def _default_name(self, suffix: str) -> str:
        sid = str(self.adata.uns["histoviz"].get("slide_id", "slide")) if self.adata is not None else "slide"
        spec = str(self.current.spec).replace(":", "_").replace("/", "_") if self.current else "map"
        return f"{sid}_{spec}{suffix}"

    def _choose_geojson(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export QuPath GeoJSON",
                                              self._default_name(".geojson"), "GeoJSON (*.geojson)")
        if path:
            self.export_geojson(path)

    def _choose_ome_tiff(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export OME-TIFF heatmap",
                                              self._default_name(".ome.tif"), "OME-TIFF (*.ome.tif)")
        if path:
            self.export_ome_tiff(path)

    @_reports_errors("Could not export GeoJSON", default=None)
    def export_geojson(self, path: str | Path) -> Path | None:
        """Write the shown map as QuPath detections (one per patch)."""
        from histoviz.io.export import write_geojson

        if self.adata is None or self.current is None:
            self._say("Show a map first.", error=True)
            return None
        out = write_geojson(self.adata, path, maps=[self.current.spec])
        self._say(f"Wrote {self.adata.n_obs} detections to {out}.")
        return out

    @_reports_errors("Could not export the OME-TIFF", default=None)
    def export_ome_tiff(self, path: str | Path, *, downsample: int | None = None) -> Path | None:
        """Write the shown map as a pyramidal OME-TIFF aligned to the slide."""
        from histoviz.io.export import write_ome_tiff_heatmap

        if self.adata is None or self.current is None:
            self._say("Show a map first.", error=True)
            return None
        out = write_ome_tiff_heatmap(self.adata, path, self.current.spec, downsample=downsample)
        self._say(f"Wrote {self.current.label} heatmap to {out}.")
        return out

    # ------------------------------------------------------------------------------------------
    # running a model in the background
    # ------------------------------------------------------------------------------------------
    def _choose_model(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Trained model folder")
        if d:
            self.run_model(d)

    def _resolve_predict_fn(self) -> PredictFn | None:
        if self.predict_fn is not None:
            return self.predict_fn
        _block_triton()
        try:
            from histoviz.predict import predict_slide
        except ImportError:
            self._say("Running a model needs histoviz.predict, which this installation lacks; "
                      "load a prediction file instead.", error=True)
            return None
        return predict_slide

    @_reports_errors("Could not start the model", default=None)
    def run_model(self, model_dir: str | Path) -> Any:
        """Predict the selected slide with the model in ``model_dir`` in a background thread.

        Progress shows in the widget; :meth:`cancel_run` stops it. On success the predictions
        are shown as if loaded from a file. Returns the worker (``None`` if not started).
        """
        from napari.qt.threading import create_worker

        from histoviz.io import open_slide

        if self._worker is not None:
            self._say("A model is already running; cancel it first.", error=True)
            return None
        slide = self._slide_layer()
        if slide is None:
            self._say("Open a slide first (drag it into the viewer).", error=True)
            return None
        info = slide_info(slide)
        if not info.path:
            self._say(f"Layer {info.name!r} was not opened from a slide file; open it with the "
                      "histoviz reader.", error=True)
            return None
        fn = self._resolve_predict_fn()
        if fn is None:
            return None
        reader = open_slide(info.path)
        cancel = threading.Event()
        sig = _RunSignals()
        sig.progress.connect(self._on_progress)

        def progress(done: int, total: int) -> None:
            sig.progress.emit(int(done), int(total))

        def job() -> tuple[str, Any]:
            try:
                out = fn(reader, str(model_dir), progress_callback=progress, cancel_event=cancel)
            except Exception as e:  # noqa: BLE001 - reported in the widget, not as a traceback
                return ("error", e)
            finally:
                reader.close()
            return ("ok", out)

        worker = create_worker(job, _start_thread=False)
        worker.returned.connect(self._on_run_returned)
        worker.finished.connect(self._on_run_finished)
        self._worker, self._cancel, self._signals = worker, cancel, sig
        self._run_model_dir = str(model_dir)
        self.progress.setRange(0, 0)
        self.progress.setVisible(True)
        self.btn_cancel.setVisible(True)
        self.btn_run.setEnabled(False)
        self._say(f"Running the model in {Path(model_dir).name} on {info.name}…")
        worker.start()
        return worker

    def _on_progress(self, done: int, total: int) -> None:
        if total > 0:
            self.progress.setRange(0, total)
            self.progress.setValue(min(done, total))
            self.progress.setFormat("%v / %m patches")

    def cancel_run(self) -> None:
        """Ask a running model to stop (it stops at its next check)."""
        if self._cancel is not None and not self._cancel.is_set():
            self._cancel.set()
            self._say("Cancelling…")

    def _on_run_returned(self, result: tuple[str, Any]) -> None:
        status, value = result
        cancelled = self._cancel is not None and self._cancel.is_set()
        if cancelled:
            self._say("Model run cancelled; nothing changed.")
            return
        if status == "error":
            if isinstance(value, HistovizError):
                self._say(f"The model run failed: {value}", error=True)
            else:
                logger.error("histoviz model run failed", exc_info=value)
                self._say(f"The model run failed ({type(value).__name__}: {value}).", error=True)
            return
        self.set_predictions(value, source=f"model {self._run_model_dir}")

    def _on_run_finished(self) -> None:
        self._worker = None
        self._cancel = None
        self._signals = None
        try:
            self.progress.setVisible(False)
            self.btn_cancel.setVisible(False)
            self.btn_run.setEnabled(True)
        except RuntimeError:  # widget deleted while the model ran
            pass

    @property
    def running(self) -> bool:
        """True while a model runs."""
        return self._worker is not None
