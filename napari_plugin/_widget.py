"""The "Prediction maps" dock widget: panels over one shared session.

Thin Qt adapter over :mod:`histoviz.viz`. The widget only composes panels that own their state
and wires them to the viewer:

- :class:`~napari_plugin._slides.SlideBox`: slide layer, resolution (mpp) field, load / run,
  what the predictions are;
- :class:`~napari_plugin._maps.MapPanel`: which map, on which scale, how finely, its layers and
  display settings;
- :class:`~napari_plugin._compare.ComparePanel`: side by side (two maps, two models, two slides);
- :class:`~napari_plugin._inspector.InspectorPanel`: slide-level prediction, clicked patch;
- :class:`~napari_plugin._regions.RegionPanel`: regions and their statistics;
- :class:`~napari_plugin._export.ExportPanel`: the shown map as GeoJSON / OME-TIFF.

The :class:`~napari_plugin._session.Session` holds what they share (the predictions and the
slide layer they sit on). Deleting a layer deletes it: the widget never adds it back on its
own. When no layer of the predictions is left (slide and maps), the widget resets; opening
that slide again draws its maps again. Every user action reports problems as a message in the
widget (red), never as a traceback.
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import QLabel, QScrollArea, QVBoxLayout, QWidget

from napari_plugin._compare import ComparePanel
from napari_plugin._export import ExportPanel
from napari_plugin._inspector import InspectorPanel
from napari_plugin._layers import (
    META_KEY,
    ROLE_CATEGORICAL,
    ROLE_CONTINUOUS,
    ROLE_PINNED,
    ROLE_SLIDE,
    layer_meta,
    slide_info,
    slide_layer_data,
)
from napari_plugin._maps import MapPanel
from napari_plugin._regions import RegionPanel
from napari_plugin._runner import block_triton as _block_triton  # noqa: F401 - kept importable
from napari_plugin._session import Session, reports_errors
from napari_plugin._slides import SlideBox

if TYPE_CHECKING:
    import anndata as ad
    import napari

__all__ = ["PredictionWidget"]

logger = logging.getLogger(__name__)

#: Signature of the model runner: ``fn(reader, model_dir, *, progress_callback, cancel_event)``.
PredictFn = Callable[..., "ad.AnnData"]

_CLICK_TOLERANCE_PX = 4.0


class PredictionWidget(QWidget):
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
    :meth:`pin_current`, :meth:`compare`, :meth:`compare_file`, :meth:`end_compare`,
    :meth:`export_geojson`, :meth:`export_ome_tiff`, :meth:`run_model`, :meth:`cancel_run`,
    :meth:`set_mpp`; the panels as :attr:`slides`, :attr:`map_panel`, :attr:`comparison`,
    :attr:`inspector`, :attr:`regions`, :attr:`export`; state in :attr:`session` and, for
    convenience, :attr:`adata`, :attr:`layout`, :attr:`current`, :attr:`selected`,
    :attr:`summary`, :attr:`message`, :attr:`warning`.
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
        self.session = Session(napari_viewer, id(self))
        self._pending: set[str] = set()
        self._closed: dict[str, tuple[Any, str, str | None]] = {}  # slide key -> (adata, source, map)
        self._build_ui(predict_fn)
        self._connect_viewer()
        self.slides.refresh()
        QTimer.singleShot(0, self._auto_load)

    # ------------------------------------------------------------------------------------------
    # UI
    # ------------------------------------------------------------------------------------------
    def _build_ui(self, predict_fn: PredictFn | None) -> None:
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        inner = QWidget()
        lay = QVBoxLayout(inner)
        scroll.setWidget(inner)
        outer.addWidget(scroll)
        self.setMinimumWidth(400)
        s = self.session
        self.slides = SlideBox(s, predict_fn)
        self.slides.load_requested.connect(self.load_predictions)
        self.slides.predicted.connect(lambda adata, d: self.set_predictions(adata, source=f"model {d}"))
        self.slides.slide_changed.connect(self._on_slide_changed)
        lay.addWidget(self.slides)
        self.inspector = InspectorPanel(s)
        self.map_panel = MapPanel(s)
        self.map_panel.requested.connect(self.show_map)
        self.map_panel.shown.connect(lambda _mv: self.inspector.to_top())
        self.comparison = ComparePanel(s, self.map_panel)
        lay.addWidget(self.inspector.slide_box)
        lay.addWidget(self.map_panel)
        lay.addWidget(self.inspector.patch_box)
        self.regions = RegionPanel(s, self.map_panel)
        lay.addWidget(self.regions)
        self.export = ExportPanel(s, self.map_panel)
        lay.addWidget(self.export)
        self.msg = QLabel("")
        self.msg.setWordWrap(True)
        self.msg.setTextInteractionFlags(Qt.TextSelectableByMouse)
        lay.addWidget(self.msg)
        lay.addStretch(1)
        s.said.connect(self._show_message)
        s.changed.connect(self._set_enabled)
        self.map_panel.shown.connect(lambda _mv: self._set_enabled())
        self._set_enabled()

    def _set_enabled(self) -> None:
        has = self.session.adata is not None
        with contextlib.suppress(RuntimeError):
            self.map_panel.set_enabled()
            self.comparison.set_enabled(has and self.map_panel.current is not None)
            self.export.set_enabled(has and self.map_panel.current is not None)
            self.regions.set_enabled()
            self.slides.btn_run.setEnabled(not self.running)

    def _show_message(self, text: str, error: bool) -> None:
        with contextlib.suppress(RuntimeError):  # widget deleted
            self.msg.setStyleSheet("color: #e0475b;" if error else "")
            self.msg.setText(text)

    # ---- shortcuts to the panels' state (scripting and tests) -----------------------------------
    adata = property(lambda self: self.session.adata, doc="The predictions shown (AnnData) or ``None``.")
    maps = property(lambda self: self.session.maps, doc="Their :class:`~histoviz.viz.maps.PredictionMaps`.")
    layout = property(lambda self: self.session.layout, doc="Their :class:`~histoviz.viz.maps.PatchLayout`.")
    current = property(lambda self: self.map_panel.current, doc="The map shown (MapValues) or ``None``.")
    selected = property(lambda self: self.inspector.selected, doc="The selected patch or ``None``.")
    summary = property(lambda self: self.inspector.summary, doc="The selected patch's summary.")
    message = property(lambda self: self.session.message, doc="The last status message.")
    message_is_error = property(lambda self: self.session.message_is_error, doc="Whether it is an error.")
    warning = property(lambda self: self.session.warning, doc="The warning about the predictions.")
    running = property(lambda self: self.slides.runner.running, doc="True while a model runs.")

    @property
    def predict_fn(self) -> PredictFn | None:
        """The model runner (``None``: :func:`histoviz.predict.predict_slide`)."""
        return self.slides.runner.predict_fn

    @predict_fn.setter
    def predict_fn(self, fn: PredictFn | None) -> None:
        self.slides.runner.predict_fn = fn

    def __getattr__(self, name: str) -> Any:
        # the panels' controls by their usual names (widget.kind_combo, widget.progress, ...)
        for panel in ("map_panel", "slides", "inspector"):
            obj = self.__dict__.get(panel)
            if obj is not None and name in {"kind_combo", "key_combo", "scale_combo", "display", "btn_pin",
                                            "horizons", "fine", "smooth", "contours", "slide_combo", "mpp_edit",
                                            "btn_load", "btn_run", "btn_cancel", "progress", "allow_other_id",
                                            "overlap", "source_label", "warning_label", "patch_panel",
                                            "slide_panel"} and hasattr(obj, name):
                return getattr(obj, name)
        disp = self.__dict__.get("map_panel")
        if disp is not None and name in {"cmap_combo", "clim", "opacity", "legend", "colorbar"}:
            return getattr(disp.display, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def patch_label(self) -> QLabel:
        """The inspector's text."""
        return self.inspector.patch_panel.label

    @property
    def btn_compare(self) -> Any:
        """The "Side by side…" button."""
        return self.comparison.btn

    # ------------------------------------------------------------------------------------------
    # viewer wiring
    # ------------------------------------------------------------------------------------------
    def _connect_viewer(self) -> None:
        self.session.on_layers("inserted", self._on_inserted)
        self.session.on_layers("removed", self._on_removed)
        ref = weakref.ref(self)

        def histoviz_pick(viewer: Any, event: Any) -> Any:
            w = ref()
            if w is None:
                return
            yield from w._mouse(event)

        self._mouse_cb = histoviz_pick
        self.viewer.mouse_drag_callbacks.append(histoviz_pick)

    def detach(self) -> None:
        """Stop a running model and disconnect from the viewer (the layers stay)."""
        self.cancel_run()
        self.session.detach()
        if self._mouse_cb in self.viewer.mouse_drag_callbacks:
            self.viewer.mouse_drag_callbacks.remove(self._mouse_cb)

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        """Stop a running model and detach from the viewer."""
        self.detach()
        super().closeEvent(event)

    def _mouse(self, event: Any) -> Any:
        if event.type != "mouse_press" or event.button != 1 or self.layout is None:
            return
        active = self.viewer.layers.selection.active
        if active is not None and getattr(active, "mode", "pan_zoom") not in ("pan_zoom", "transform"):
            return  # drawing a region or editing shapes: not a pick
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

    def _on_inserted(self, event: Any = None) -> None:
        self.slides.refresh()
        layer = getattr(event, "value", None)
        meta = layer_meta(layer)
        pred = meta.get("predictions")
        # only layers opened by the reader or a sample name predictions to load; the widget's
        # own layers carry ``owner``
        if pred and meta.get("owner") != id(self) and str(pred) != self.session.source:
            self._pending.add(str(pred))
            QTimer.singleShot(0, self._auto_load)
        elif meta.get("role") == ROLE_SLIDE and meta.get("owner") != id(self):
            QTimer.singleShot(0, lambda: self._reopened(layer))

    def _on_removed(self, event: Any = None) -> None:
        """A layer was deleted: forget it. Nothing is re-added, no other predictions loaded;
        when no layer of the predictions is left, the widget resets."""
        layer = getattr(event, "value", None)
        s = self.session
        if layer is not None and layer is s.slide:
            s.slide = None
            s.say(f"Slide layer {layer.name!r} removed; the maps stay where they were.")
        self.slides.refresh()
        if s.adata is not None and not self._has_prediction_layers():
            key = self._slide_key(s.info)
            if key:
                self._closed[key] = (s.adata, s.source, str(self.current.spec) if self.current else None)
            for la in list(self.viewer.layers):  # helpers that show nothing without the maps
                if layer_meta(la).get("owner") == id(self) and layer_meta(la).get("role") in ("selection", "contour"):
                    self.viewer.layers.remove(la)
            s.clear()
            s.say("No layer of the predictions is left; open the slide again to see its maps.")

    def _has_prediction_layers(self) -> bool:
        s = self.session
        if s.slide is not None and s.slide in self.viewer.layers:
            return True
        return any(layer_meta(la).get("owner") == id(self)
                   and layer_meta(la).get("role") in (ROLE_CONTINUOUS, ROLE_CATEGORICAL, ROLE_PINNED)
                   for la in self.viewer.layers)

    @staticmethod
    def _slide_key(info: Any) -> str:
        if info is None:
            return ""
        return str(Path(info.path).resolve()) if info.path else str(info.slide_id or "")

    def _reopened(self, layer: Any) -> None:
        """A slide was opened again: draw the maps the widget showed on it before."""
        try:
            if layer not in self.viewer.layers:
                return
        except RuntimeError:  # pragma: no cover - widget deleted
            return
        info = slide_info(layer)
        key = self._slide_key(info)
        s = self.session
        if s.adata is not None and s.slide is None and self._slide_key(s.info) == key:
            self.slides.choose(layer)
            self.set_predictions(s.adata, source=s.source)
            return
        got = self._closed.pop(key, None)
        if got is None or s.adata is not None:
            return
        adata, source, spec = got
        self.slides.choose(layer)
        if self.set_predictions(adata, source=source, first_map=spec):
            s.say(f"{layer.name} opened again: its maps are back ({self.current.label}).")

    def _auto_load(self) -> None:
        """Load predictions named by a slide or map layer that the reader or a sample added."""
        try:
            pending = set(self._pending)
        except RuntimeError:  # pragma: no cover - deleted before the timer fired
            return
        self._pending.clear()
        if not pending and self.adata is None:
            for layer in self.viewer.layers:
                p = layer_meta(layer).get("predictions")
                if p and layer_meta(layer).get("owner") != id(self):
                    pending.add(str(p))
        for p in sorted(pending):
            if p == self.session.source or not any(str(layer_meta(la).get("predictions")) == p
                                                   for la in self.viewer.layers):
                continue
            for layer in self.slides.slide_layers():
                if str(layer_meta(layer).get("predictions")) == p:
                    self.slides.choose(layer)
            self.load_predictions(p)
            break

    def _on_slide_changed(self) -> None:
        s = self.session
        slide = self.slides.slide_layer()
        if s.adata is None or slide is None:  # no slide chosen (deleted): the maps stay where they are
            return
        if slide is s.slide:
            new = slide_info(slide)
            if new != s.info:  # rescaled (an mpp entered): the same maps, placed anew
                s.place(new, slide)
            return
        self.set_predictions(s.adata, source=s.source)  # another slide: check the maps belong to it

    # ------------------------------------------------------------------------------------------
    # predictions
    # ------------------------------------------------------------------------------------------
    @reports_errors("Could not load the predictions")
    def load_predictions(self, path: str | Path) -> bool:
        """Read a prediction ``.h5ad``, check it belongs to the slide and show its first map."""
        from histoviz.io.predictions import read_predictions

        adata = read_predictions(path)
        return self.set_predictions(adata, source=str(Path(path).resolve()))

    @reports_errors("Could not show the predictions")
    def set_predictions(self, adata: ad.AnnData, *, source: str = "", first_map: str | None = None) -> bool:
        """Show ``adata`` (prediction contract) on the chosen slide.

        Refuses (with a message, keeping what was shown) predictions made for another slide:
        different slide id, different dimensions, or patches outside the slide. Clears what
        belonged to the previous predictions (selected patch, messages, slide-level panel) and
        puts the new map above layers kept from before. The first map is the reader's (when it
        drew one), ``first_map``, or :func:`histoviz.viz.maps.default_map`.
        """
        from histoviz.io.predictions import validate_predictions
        from histoviz.provenance import prediction_warning
        from histoviz.viz.maps import (
            PatchLayout,
            PredictionMaps,
            check_predictions_match_slide,
            default_map,
        )

        s = self.session
        validate_predictions(adata, source=source or "<predictions>")
        layout = PatchLayout.from_adata(adata)
        pmaps = PredictionMaps(adata)
        if not pmaps.available:
            s.say("The prediction file holds no maps.", error=True)
            return False
        slide = self.slides.slide_layer()
        info_uns = adata.uns.get("histoviz", {})
        if slide is None:
            sp = info_uns.get("slide_path")
            if sp and Path(str(sp)).is_file():
                from histoviz.io import open_slide

                data, kwargs, _ = slide_layer_data(open_slide(str(sp)))
                kwargs["metadata"][META_KEY]["owner"] = id(self)
                slide = self.viewer.add_image(data, **kwargs)
                self.viewer.layers.move(self.viewer.layers.index(slide), 0)
                self.slides.choose(slide)
        info = slide_info(slide) if slide is not None else None
        if info is not None:
            check_predictions_match_slide(adata, slide_id=info.slide_id, dimensions=info.dimensions,
                                          allow_other_id=self.slides.allow_other_id.isChecked())
        # commit
        same = adata is s.adata
        keep = str(self.current.spec) if same and self.current is not None else None
        self.comparison.end()
        self.map_panel.forget(adata)
        s.warn(prediction_warning(adata, slide_path=info.path if info is not None and info.path else None))
        s.show(adata, pmaps, layout, info=info, slide=slide, source=source)
        drawn = self._adopt_reader_layers(source)
        # the same predictions keep their map; the reader's map of this file; else the most useful one
        first = keep or drawn or first_map or str(default_map(pmaps))
        ok = self.show_map(first)
        if ok:
            self.map_panel.raise_maps()
            self.inspector.to_top()
            s.say(f"Loaded {adata.n_obs} patches; showing {self.current.label}.")
        return bool(ok)

    def _adopt_reader_layers(self, source: str) -> str | None:
        """Reuse the map layer the reader made for this file instead of adding another; returns
        the map it shows (when visible and in the file)."""
        avail = self.map_panel.available
        shown = None
        for layer in self.viewer.layers:
            meta = layer_meta(layer)
            role = meta.get("role")
            if role in (ROLE_CONTINUOUS, ROLE_CATEGORICAL) and role not in self.map_panel.layers \
                    and meta.get("owner") is None and source and str(meta.get("predictions")) == source:
                meta["owner"] = id(self)
                self.map_panel.layers[role] = layer
                self.map_panel.watch(layer)
                spec = str(meta.get("map") or "")
                kind, _, key = spec.partition(":")
                key = key.rpartition("@")[0] if "@" in key else key
                if layer.visible and kind in avail and (not key or key in avail[kind]):
                    shown = spec
        return shown

    # ------------------------------------------------------------------------------------------
    # actions (each reports problems as a message)
    # ------------------------------------------------------------------------------------------
    @reports_errors("Could not show the map")
    def show_map(self, spec: Any) -> bool:
        """Show one map (``"gene:CD3E"``, ``"dominant_type"``, ``"risk"``, a MapSpec...) in place.

        With "Side by side" armed, the map goes to the right-hand panel instead.
        """
        if self.comparison.armed:
            return self.comparison.compare(spec)
        ok = self.map_panel.show(spec)
        if ok:
            layer = self.map_panel.current_layer()
            if self.comparison.state is None and layer is not None:
                self.viewer.layers.selection.active = layer  # napari's layer controls follow the map
            mv = self.current
            self.session.say(f"Showing {mv.label}" + (" (simulated values, not a model's prediction)."
                                                      if mv.simulated else "."))
        return ok

    def set_threshold(self, value: float | None) -> None:
        """Hide the shown map's patches below ``value``; ``None``: show all."""
        self.map_panel.set_threshold(value)

    def pin_current(self) -> Any:
        """Copy the shown map into a layer of its own; returns that layer."""
        layer = self.map_panel.pin_current()
        self.inspector.to_top()
        return layer

    def select_world(self, position: Any) -> int | None:
        """Select the patch under a world position ``(..., y, x)``; returns its index."""
        return self.inspector.select_world(position)

    def select_patch(self, index: int | None) -> dict[str, Any] | None:
        """Show the inspector for patch ``index`` (``None`` clears it)."""
        return self.inspector.select_patch(index)

    def compare(self, spec: Any) -> bool:
        """Show map ``spec`` beside the shown one (grid mode, one camera)."""
        return self.comparison.compare(spec)

    def compare_file(self, path: str | Path, spec: Any = None) -> bool:
        """Show the same map from another prediction file beside the shown one."""
        return self.comparison.compare_file(path, spec)

    def end_compare(self) -> None:
        """Back to one map."""
        self.comparison.end()

    def export_geojson(self, path: str | Path) -> Path | None:
        """The shown map as QuPath detections."""
        return self.export.export_geojson(path)

    def export_ome_tiff(self, path: str | Path, *, downsample: int | None = None) -> Path | None:
        """The shown map as a pyramidal OME-TIFF aligned to the slide."""
        return self.export.export_ome_tiff(path, downsample=downsample)

    def run_model(self, model_dir: str | Path) -> Any:
        """Predict the chosen slide with a trained run in the background; returns the worker."""
        worker = self.slides.run_model(model_dir)
        if worker is not None:
            worker.finished.connect(self._set_enabled)
        return worker

    def cancel_run(self) -> None:
        """Ask a running model to stop."""
        self.slides.cancel_run()

    def set_mpp(self, value: Any) -> bool:
        """Enter the chosen slide's resolution (µm/px), as the panel's field does."""
        return self.slides.set_mpp(value)

    # ---- compatibility with scripts written against the single-class widget ----------------------
    def _current_layer(self) -> Any:
        return self.map_panel.current_layer()

    def _geometry(self) -> tuple[tuple[float, float], tuple[float, float]]:
        return self.session.geometry()
