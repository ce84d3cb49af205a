"""The "Prediction maps" dock widget: load or compute predictions, pick a map, click a patch.

Thin Qt adapter over :mod:`histoviz.viz` (maps, summaries, colours), :mod:`histoviz.io` and
:mod:`histoviz.provenance`. Everything it lists comes from the output registry: the map kinds
(:func:`~histoviz.viz.maps.available_maps`), their labels, units and default ranges
(:class:`~histoviz.viz.maps.MapValues`), the patch inspector rows and charts
(:func:`~histoviz.viz.summary.patch_summary`) and the slide-level prediction
(:func:`~histoviz.viz.summary.slide_predictions`).

Layers. One Image layer shows continuous maps and one read-only Labels layer shows categorical
maps (napari's status bar names the class under the cursor), each at patch-grid resolution and
placed on the slide by scale and translate. Switching maps replaces their data in place; each
map keeps its own colormap, contrast limits and threshold (defaults from the registry or robust
percentiles; what the user sets is remembered per map). "Keep as layer" copies the shown map
into a layer of its own; "Side by side" shows a second map next to it (napari's grid mode, one
camera). Deleting any layer deletes it: the widget forgets it and never adds it back on its own.

Every user action reports problems as a message in the widget (red), never as a traceback.
"""

from __future__ import annotations

import contextlib
import functools
import html
import logging
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QCompleter,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from histoviz.errors import HistovizError
from napari_plugin._compare import CompareMixin
from napari_plugin._display import DisplayPanel, MapDisplayMixin
from napari_plugin._export import ExportMixin
from napari_plugin._inspector import PatchPanel, SlidePanel
from napari_plugin._layers import (
    META_KEY,
    ROLE_CATEGORICAL,
    ROLE_COMPARE,
    ROLE_CONTINUOUS,
    ROLE_PINNED,
    ROLE_SELECTION,
    ROLE_SLIDE,
    SlideInfo,
    label_features,
    make_read_only,
    map_layer_data,
    slide_info,
    slide_layer_data,
)
from napari_plugin._layers import (
    layer_meta as _meta,
)
from napari_plugin._runner import ModelRunner, RunMixin
from napari_plugin._runner import block_triton as _block_triton  # noqa: F401 - kept importable
from napari_plugin._selection import SelectionMixin

if TYPE_CHECKING:
    import anndata as ad
    import napari

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


def _data_range(values: np.ndarray) -> tuple[float, float]:
    f = np.asarray(values, dtype=np.float64)
    f = f[np.isfinite(f)]
    return (float(f.min()), float(f.max())) if f.size else (0.0, 1.0)


class PredictionWidget(SelectionMixin, MapDisplayMixin, CompareMixin, ExportMixin, RunMixin, QWidget):
    """Show per-patch prediction maps of a histoviz ``.h5ad`` on the open slide.

    Parameters
    ----------
    napari_viewer
        The viewer (injected by napari).
    predict_fn
        Model runner used by "Run model…"; default :func:`histoviz.predict.predict_slide`
        (``fn(reader, model_dir, *, progress_callback, cancel_event) -> AnnData``).

    Notes
    -----
    Scriptable API (also used by the tests): :meth:`load_predictions`, :meth:`set_predictions`,
    :meth:`show_map`, :meth:`set_threshold`, :meth:`select_world`, :meth:`select_patch`,
    :meth:`pin_current`, :meth:`compare`, :meth:`end_compare`, :meth:`export_geojson`,
    :meth:`export_ome_tiff`, :meth:`run_model`, :meth:`cancel_run`; state in :attr:`adata`,
    :attr:`layout`, :attr:`current`, :attr:`selected`, :attr:`summary`, :attr:`message`,
    :attr:`warning`.
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
        self.adata: ad.AnnData | None = None
        self.maps: PredictionMaps | None = None
        self.layout: PatchLayout | None = None
        self.current: MapValues | None = None
        self.selected: int | None = None
        self.summary: dict[str, Any] | None = None
        self.message = ""
        self.message_is_error = False
        self.warning: str | None = None
        self._source = ""
        self._info: SlideInfo | None = None
        self._slide: Any = None
        self._prefs: dict[str, dict[str, Any]] = {}
        self._last_key: dict[str, str] = {}
        self._maps: dict[str, list[str]] = {}
        self._keys_of: tuple[int, str] | None = None
        self._generation = 0
        self._own: dict[str, Any] = {}  # role -> layer this widget shows maps in
        self._compare: dict[str, Any] | None = None
        self._applying = 0
        self._watched: weakref.WeakSet[Any] = weakref.WeakSet()
        self._pending: set[str] = set()
        self.runner = ModelRunner(predict_fn)
        self.runner.succeeded.connect(self._on_run_succeeded)
        self.runner.message.connect(lambda text, err: self._say(text, error=err))
        self._build_ui()
        self._connect_viewer()
        self._refresh_slides()
        QTimer.singleShot(0, self._auto_load)

    # ---- compatibility properties ----------------------------------------------------------------
    @property
    def predict_fn(self) -> PredictFn | None:
        """The model runner (``None``: :func:`histoviz.predict.predict_slide`)."""
        return self.runner.predict_fn

    @predict_fn.setter
    def predict_fn(self, fn: PredictFn | None) -> None:
        self.runner.predict_fn = fn

    @property
    def running(self) -> bool:
        """True while a model runs."""
        return self.runner.running

    # ------------------------------------------------------------------------------------------
    # UI
    # ------------------------------------------------------------------------------------------
    def _build_ui(self) -> None:
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        inner = QWidget()
        lay = QVBoxLayout(inner)
        scroll.setWidget(inner)
        outer.addWidget(scroll)
        self.setMinimumWidth(340)

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
        self.btn_run.setToolTip("Run a trained histoviz model (a run folder) on the slide, in the background")
        self.btn_run.clicked.connect(self._choose_model)
        row.addWidget(self.btn_load)
        row.addWidget(self.btn_run)
        form.addLayout(row)
        self.allow_other_id = QCheckBox("Accept another slide id (renamed file)")
        form.addWidget(self.allow_other_id)
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
        lay.addWidget(box)

        box = QGroupBox("Slide-level prediction")
        v = QVBoxLayout(box)
        self.slide_panel = SlidePanel()
        v.addWidget(self.slide_panel)
        lay.addWidget(box)

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
        self.key_combo.activated.connect(lambda _i: self._on_key_entered())
        self.key_combo.lineEdit().returnPressed.connect(self._on_key_entered)
        form2.addRow("Which", self.key_combo)
        row = QHBoxLayout()
        self.btn_pin = QPushButton("Keep as layer")
        self.btn_pin.setToolTip("Copy the shown map into its own layer (toggle it with the eye icon)")
        self.btn_pin.clicked.connect(self.pin_current)
        self.btn_compare = QPushButton("Side by side…")
        self.btn_compare.setCheckable(True)
        self.btn_compare.setToolTip("Show the map chosen next (or the kept map) beside the shown one: "
                                    "napari grid mode, one camera for both")
        self.btn_compare.clicked.connect(self._on_compare_clicked)
        row.addWidget(self.btn_pin)
        row.addWidget(self.btn_compare)
        form2.addRow(row)
        lay.addWidget(box)

        self.display = DisplayPanel()
        self.display.colormap_changed.connect(self._on_cmap)
        self.display.opacity_changed.connect(self._on_opacity)
        self.display.clim_changed.connect(self._on_clim)
        self.display.auto_clicked.connect(self._on_auto)
        self.display.threshold_changed.connect(self._on_threshold)
        lay.addWidget(self.display)
        # aliases (scripting and tests)
        self.cmap_combo, self.clim, self.opacity = self.display.cmap_combo, self.display.clim, self.display.opacity
        self.legend, self.colorbar = self.display.legend, self.display.colorbar

        box = QGroupBox("Patch (click on the tissue)")
        v = QVBoxLayout(box)
        self.patch_panel = PatchPanel()
        self.patch_label = self.patch_panel.label
        v.addWidget(self.patch_panel)
        lay.addWidget(box)

        box = QGroupBox("Export the shown map")
        row = QHBoxLayout(box)
        self.btn_geojson = QPushButton("QuPath GeoJSON…")
        self.btn_geojson.clicked.connect(self._choose_geojson)
        self.btn_tiff = QPushButton("OME-TIFF…")
        self.btn_tiff.setToolTip("Tiled pyramidal OME-TIFF at the slide's size and pixel size")
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
        for w in (self.kind_combo, self.key_combo, self.btn_pin, self.btn_compare, self.btn_geojson, self.btn_tiff):
            w.setEnabled(has)
        self.display.set_enabled(has and self.current is not None)
        if has and self.current is not None and not self.current.spec.key:
            self.key_combo.setEnabled(False)
        self.btn_run.setEnabled(not self.running)

    def _say(self, text: str, *, error: bool = False) -> None:
        self.message = text
        self.message_is_error = error
        with contextlib.suppress(RuntimeError):  # widget deleted
            self.msg.setStyleSheet("color: #e0475b;" if error else "")
            self.msg.setText(text)
        (logger.warning if error else logger.info)("%s", text)

    def _warn(self, text: str | None) -> None:
        self.warning = text
        self.warning_label.setText(f"Warning: {text}" if text else "")
        self.warning_label.setVisible(bool(text))
        if text:
            logger.warning("%s", text)

    @contextlib.contextmanager
    def _programmatic(self) -> Iterator[None]:
        """Layer changes made by the widget itself (not remembered as the user's choice)."""
        self._applying += 1
        try:
            yield
        finally:
            self._applying -= 1

    # ------------------------------------------------------------------------------------------
    # viewer wiring
    # ------------------------------------------------------------------------------------------
    def _connect_viewer(self) -> None:
        self.viewer.layers.events.inserted.connect(self._on_inserted)
        self.viewer.layers.events.removed.connect(self._on_removed)
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

        out = [la for la in self.viewer.layers if isinstance(la, Image)
               and _meta(la).get("role") not in (ROLE_CONTINUOUS, ROLE_PINNED, ROLE_COMPARE)
               and not _meta(la).get("compare_slide")]
        out.sort(key=lambda la: _meta(la).get("role") != ROLE_SLIDE)
        return out

    def _refresh_slides(self) -> None:
        try:
            names = [la.name for la in self._slide_layers()]
            cur = self.slide_combo.currentText()
            self.slide_combo.blockSignals(True)
            self.slide_combo.clear()
            self.slide_combo.addItems(names)
            if self._slide is not None and self._slide.name in names:
                self.slide_combo.setCurrentText(self._slide.name)
            elif cur in names:
                self.slide_combo.setCurrentText(cur)
            self.slide_combo.blockSignals(False)
        except RuntimeError:  # widget already deleted
            return

    def _slide_layer(self) -> Any:
        name = self.slide_combo.currentText()
        if name and name in self.viewer.layers:
            return self.viewer.layers[name]
        return None

    def _on_inserted(self, event: Any = None) -> None:
        self._refresh_slides()
        layer = getattr(event, "value", None)
        meta = _meta(layer)
        pred = meta.get("predictions")
        # only layers opened by the reader or a sample name predictions to load; the widget's
        # own layers carry ``owner``
        if pred and meta.get("owner") != id(self) and str(pred) != self._source:
            self._pending.add(str(pred))
            QTimer.singleShot(0, self._auto_load)

    def _on_removed(self, event: Any = None) -> None:
        """A layer was deleted: forget it. Nothing is re-added, no other predictions loaded."""
        layer = getattr(event, "value", None)
        for role, own in list(self._own.items()):
            if own is layer:
                del self._own[role]
                if role == ROLE_SELECTION:
                    self.selected = None
                    self.summary = None
                    with contextlib.suppress(RuntimeError):
                        self.patch_panel.clear()
        if layer is not None and layer is self._slide:
            self._slide = None
            self._say(f"Slide layer {layer.name!r} removed; the maps stay where they were.")
        if self._compare is not None and layer in (self._compare.get("map"), self._compare.get("slide")):
            QTimer.singleShot(0, self.end_compare)  # not while napari is still removing
        self._refresh_slides()

    def _auto_load(self) -> None:
        """Load predictions named by a slide or map layer that the reader or a sample added."""
        try:
            pending = set(self._pending)
        except RuntimeError:  # pragma: no cover - deleted before the timer fired
            return
        self._pending.clear()
        if not pending and self.adata is None:
            for layer in self.viewer.layers:
                p = _meta(layer).get("predictions")
                if p and _meta(layer).get("owner") != id(self):
                    pending.add(str(p))
        for p in sorted(pending):
            if p == self._source or not any(str(_meta(la).get("predictions")) == p for la in self.viewer.layers):
                continue
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
        different slide id, different dimensions, or patches outside the slide. Clears what
        belonged to the previous predictions (selected patch, messages, slide-level panel) and
        puts the new map above layers kept from before.
        """
        from histoviz.io.predictions import validate_predictions
        from histoviz.provenance import prediction_warning
        from histoviz.viz.maps import (
            PatchLayout,
            PredictionMaps,
            available_maps,
            check_predictions_match_slide,
        )
        from histoviz.viz.summary import slide_predictions

        validate_predictions(adata, source=source or "<predictions>")
        layout = PatchLayout.from_adata(adata)
        pmaps = PredictionMaps(adata)
        maps = available_maps(pmaps)
        if not maps:
            self._say("The prediction file holds no maps.", error=True)
            return False
        slide = self._slide_layer()
        info_uns = adata.uns.get("histoviz", {})
        if slide is None:
            sp = info_uns.get("slide_path")
            if sp and Path(str(sp)).is_file():
                from histoviz.io import open_slide

                data, kwargs, _ = slide_layer_data(open_slide(str(sp)))
                kwargs["metadata"][META_KEY]["owner"] = id(self)
                slide = self.viewer.add_image(data, **kwargs)
                self.viewer.layers.move(self.viewer.layers.index(slide), 0)
                self._refresh_slides()
                self.slide_combo.setCurrentText(slide.name)
        info = slide_info(slide) if slide is not None else None
        if info is not None:
            check_predictions_match_slide(adata, slide_id=info.slide_id, dimensions=info.dimensions,
                                          allow_other_id=self.allow_other_id.isChecked())
        # commit
        same = adata is self.adata
        self.end_compare()
        self._generation += 1
        self.adata, self.maps, self.layout = adata, pmaps, layout
        self._info, self._source, self._slide = info, source, slide
        if not same:
            self._prefs.clear()
        self.select_patch(None)
        self._adopt_reader_layers(source)
        self._populate_kinds(maps)
        first = self._initial_spec(maps)
        model = info_uns.get("model")
        where = f"on {info.name}" if info else "(no slide open: maps in pixels)"
        self.source_label.setText(
            f"{Path(source).name if source else 'predictions'}: {adata.n_obs} patches, "
            f"{adata.n_vars} genes {where}" + (f"<br>model: {html.escape(str(model))}" if model else "")
        )
        self.slide_panel.show_rows(slide_predictions(pmaps), simulated=pmaps.simulated)
        self._warn(prediction_warning(adata, slide_path=info.path if info is not None and info.path else None))
        self._set_enabled()
        ok = self.show_map(first)
        if ok:
            self._raise_maps()
            self._say(f"Loaded {adata.n_obs} patches; showing {self.current.label}.")
        return bool(ok)

    def _adopt_reader_layers(self, source: str) -> None:
        """Reuse the map layer the reader made for this file instead of adding another."""
        for layer in self.viewer.layers:
            meta = _meta(layer)
            role = meta.get("role")
            if role in (ROLE_CONTINUOUS, ROLE_CATEGORICAL) and role not in self._own \
                    and meta.get("owner") is None and source and str(meta.get("predictions")) == source:
                meta["owner"] = id(self)
                self._own[role] = layer

    def _initial_spec(self, maps: dict[str, list[str]]) -> str:
        for role in (ROLE_CONTINUOUS, ROLE_CATEGORICAL):
            layer = self._own.get(role)
            spec = _meta(layer).get("map") if layer is not None and layer.visible else None
            if spec:
                kind, _, key = str(spec).partition(":")
                if kind in maps and (not key or key in maps[kind]):
                    return str(spec)
        kind, keys = next(iter(maps.items()))
        return f"{kind}:{keys[0]}" if keys[0] else kind

    def _populate_kinds(self, maps: dict[str, list[str]]) -> None:
        from histoviz.viz.maps import kind_labels

        labels = kind_labels()
        self._maps = maps
        self.kind_combo.blockSignals(True)
        self.kind_combo.clear()
        for kind in maps:
            self.kind_combo.addItem(labels.get(kind, kind), kind)
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

    def _on_key_entered(self) -> None:
        kind = self.kind_combo.currentData()
        text = self.key_combo.currentText().strip()
        if kind and text:
            self.show_map(f"{kind}:{text}")

    # ------------------------------------------------------------------------------------------
    # maps
    # ------------------------------------------------------------------------------------------
    def _map_layer(self, role: str) -> Any:
        layer = self._own.get(role)
        return layer if layer is not None and layer in self.viewer.layers else None

    def _current_layer(self) -> Any:
        if self.current is None:
            return None
        return self._map_layer(ROLE_CATEGORICAL if self.current.categorical else ROLE_CONTINUOUS)

    def _selection_to_top(self) -> None:
        sel = self._map_layer(ROLE_SELECTION)
        if sel is not None:
            i = self.viewer.layers.index(sel)
            if i != len(self.viewer.layers) - 1:
                self.viewer.layers.move(i, len(self.viewer.layers))

    def _raise_maps(self) -> None:
        """Put the shown map (and then the patch outline) on top of every other layer."""
        layer = self._current_layer()
        if layer is not None and self._compare is None:
            i = self.viewer.layers.index(layer)
            if i != len(self.viewer.layers) - 1:
                self.viewer.layers.move(i, len(self.viewer.layers))
        self._selection_to_top()

    def _prefs_of(self, mv: MapValues) -> dict[str, Any]:
        return self._prefs.setdefault(str(mv.spec), {})

    def _raster(self, mv: MapValues, threshold: float | None) -> np.ndarray:
        assert self.layout is not None
        if mv.categorical:
            return self.layout.label_raster(mv.values)
        v = np.asarray(mv.values, dtype=np.float32)
        if threshold is not None:
            v = np.where(v >= threshold, v, np.nan).astype(np.float32)
        return self.layout.raster(v)

    def _layer_kwargs(self, mv: MapValues, role: str, name: str) -> tuple[dict[str, Any], str]:
        assert self.layout is not None and self.adata is not None
        _, kwargs, ltype = map_layer_data(self.layout, mv, self._info, role=role,
                                          adata_info=dict(self.adata.uns["histoviz"]), name=name)
        kwargs["metadata"][META_KEY].update(predictions=self._source_file(), owner=id(self))
        return kwargs, ltype

    def _apply(self, layer: Any, mv: MapValues, kwargs: dict[str, Any]) -> None:
        """Put ``mv`` into an existing map layer, with that map's own display settings."""
        prefs = self._prefs.get(str(mv.spec), {})
        with self._programmatic():
            layer.metadata = kwargs["metadata"]
            layer.data = self._raster(mv, prefs.get("threshold"))
            if not np.allclose(layer.scale[-2:], kwargs["scale"]):
                layer.scale = kwargs["scale"]
            if not np.allclose(layer.translate[-2:], kwargs["translate"]):
                layer.translate = kwargs["translate"]
            if "units" in kwargs and tuple(layer.units) != tuple(kwargs["units"]):
                layer.units = kwargs["units"]
            if mv.categorical:
                layer.colormap = kwargs["colormap"]
                layer.features = label_features(mv)
                make_read_only(layer)
            else:
                self._apply_display(layer, mv)
            layer.name = kwargs["name"]
            layer.visible = True

    def _apply_display(self, layer: Any, mv: MapValues) -> None:
        prefs = self._prefs.get(str(mv.spec), {})
        lo, hi = prefs.get("contrast_limits", mv.contrast_limits)
        vmin, vmax = _data_range(mv.values)
        with self._programmatic():
            layer.colormap = prefs.get("colormap", mv.colormap)
            layer.contrast_limits_range = (min(lo, vmin), max(hi, vmax))
            layer.contrast_limits = (lo, hi)

    def _watch(self, layer: Any) -> None:
        if layer in self._watched or not hasattr(layer, "contrast_limits"):
            return
        ref = weakref.ref(layer)
        layer.events.contrast_limits.connect(lambda e=None: self._on_layer_display(ref(), "contrast_limits"))
        layer.events.colormap.connect(lambda e=None: self._on_layer_display(ref(), "colormap"))
        self._watched.add(layer)

    def _add_layer(self, data: np.ndarray, kwargs: dict[str, Any], ltype: str) -> Any:
        active = self.viewer.layers.selection.active
        with self._programmatic():
            layer = (self.viewer.add_labels if ltype == "labels" else self.viewer.add_image)(data, **kwargs)
            if ltype == "labels":
                make_read_only(layer)
        if active is not None and active in self.viewer.layers:
            self.viewer.layers.selection.active = active
        return layer

    @_reports_errors("Could not show the map")
    def show_map(self, spec: Any) -> bool:
        """Show one map (``"gene:CD3E"``, ``"dominant_type"``, ``"risk"``, a MapSpec...) in place.

        With "Side by side" armed, the map goes to the right-hand panel instead.
        """
        from histoviz.viz.maps import map_values

        if self.adata is None or self.layout is None:
            self._say("Load predictions first.", error=True)
            return False
        mv = map_values(self.maps, spec)
        if self.btn_compare.isChecked() and self._compare is None and self.current is not None:
            return self.compare(mv.spec)
        role = ROLE_CATEGORICAL if mv.categorical else ROLE_CONTINUOUS
        other = ROLE_CONTINUOUS if mv.categorical else ROLE_CATEGORICAL
        kwargs, ltype = self._layer_kwargs(mv, role, f"map: {mv.label}")
        layer = self._map_layer(role)
        if layer is None:
            prefs = self._prefs.get(str(mv.spec), {})
            data = self._raster(mv, prefs.get("threshold"))
            if not mv.categorical:
                kwargs["colormap"] = prefs.get("colormap", kwargs["colormap"])
                kwargs["contrast_limits"] = prefs.get("contrast_limits", kwargs["contrast_limits"])
            kwargs["opacity"] = self.opacity.value() / 100.0
            layer = self._add_layer(data, kwargs, ltype)
            self._own[role] = layer
            if not mv.categorical:
                self._apply_display(layer, mv)
        else:
            self._apply(layer, mv, kwargs)
        self._watch(layer)
        old = self._map_layer(other)
        if old is not None and old is not layer:
            old.visible = False
        self.current = mv
        if mv.spec.key:
            self._last_key[mv.spec.kind] = mv.spec.key
        self._selection_to_top()
        if self._compare is None:
            self.viewer.layers.selection.active = layer  # napari's layer controls follow the map
        self._sync_controls(layer)
        self._say(f"Showing {mv.label}" + (" (simulated values, not a model's prediction)." if mv.simulated else "."))
        with contextlib.suppress(AttributeError, TypeError):
            self.viewer.status = f"{layer.name}"
        return True

    def _sync_controls(self, layer: Any) -> None:
        mv = self.current
        assert mv is not None
        i = self.kind_combo.findData(mv.spec.kind)
        self.kind_combo.blockSignals(True)
        self.kind_combo.setCurrentIndex(i)
        self.kind_combo.blockSignals(False)
        self._set_keys(mv.spec.kind, mv.spec.key)
        self.display.show_map(mv, layer, threshold=self._prefs.get(str(mv.spec), {}).get("threshold"),
                              data_range=(0.0, 1.0) if mv.is_probability else _data_range(mv.values))
        self._set_enabled()

    @_reports_errors("Could not keep the map", default=None)
    def pin_current(self) -> Any:
        """Copy the shown map into a layer of its own; returns that layer."""
        if self.current is None or self.layout is None or self.adata is None:
            self._say("Show a map first.", error=True)
            return None
        src = self._current_layer()
        kwargs, ltype = self._layer_kwargs(self.current, ROLE_PINNED, f"{self.current.label} (kept)")
        data = self._raster(self.current, self._prefs.get(str(self.current.spec), {}).get("threshold"))
        if ltype == "image" and src is not None:
            kwargs.update(colormap=src.colormap, contrast_limits=tuple(src.contrast_limits), opacity=src.opacity)
        layer = self._add_layer(data, kwargs, ltype)
        if src is not None:
            src.visible = False
        self._selection_to_top()
        self._say(f"Kept {self.current.label} as layer {layer.name!r}.")
        return layer

    def _source_file(self) -> str | None:
        """The prediction file shown, if the predictions came from one (not from a model run)."""
        return self._source if self._source and Path(self._source).is_file() else None

    select_patch = _reports_errors("Could not show the patch", default=None)(SelectionMixin.select_patch)
    compare = _reports_errors("Could not show the maps side by side")(CompareMixin.compare)
    run_model = _reports_errors("Could not start the model", default=None)(RunMixin.run_model)
    export_geojson = _reports_errors("Could not export GeoJSON", default=None)(ExportMixin.export_geojson)
    export_ome_tiff = _reports_errors("Could not export the OME-TIFF", default=None)(ExportMixin.export_ome_tiff)

    def _on_run_succeeded(self, adata: Any, model_dir: str) -> None:
        self.set_predictions(adata, source=f"model {model_dir}")
