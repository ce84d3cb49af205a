"""The "Map" panel of the "Prediction maps" widget: which map is shown, on which scale, how finely,
and its layers.

It owns the map layers (one Image layer for continuous maps, one read-only Labels layer for
categorical maps, an optional contour layer), the display settings remembered per map
(colormap, contrast limits, threshold) and the map chosen last per kind. Everything it shows
comes from :mod:`histoviz.viz`: the map list (:func:`~histoviz.viz.maps.available_maps`), the
values on the chosen scale (:func:`~histoviz.viz.maps.map_values`), the default map
(:func:`~histoviz.viz.maps.default_map`), contrast limits
(:func:`~histoviz.viz.maps.display_range`), finer maps and contours
(:meth:`~histoviz.viz.layout.PatchLayout.fine_raster`).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QCompleter,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_plugin._display import DisplayPanel
from napari_plugin._layers import (
    META_KEY,
    ROLE_CATEGORICAL,
    ROLE_CONTINUOUS,
    ROLE_CONTOUR,
    ROLE_PINNED,
    label_features,
    make_read_only,
    map_layer_data,
)
from napari_plugin._session import Session, reports_errors

if TYPE_CHECKING:
    from histoviz.viz.maps import MapValues

__all__ = ["MapPanel"]

_SCALE_NAMES = {"data": "training data", "percentile": "cohort percentile", "model": "model output"}


#: Layers whose display events this plugin listens to (weak: a deleted layer drops out); napari
#: deprecates setting private attributes on its layers.
_WATCHED: weakref.WeakSet = weakref.WeakSet()

class MapPanel(QWidget):
    """Choose and draw one map at a time (see the module docstring).

    Signals
    -------
    requested(str)
        The user chose a map in the panel (the widget decides where it goes: here, or to the
        right-hand side of a comparison).
    shown(object)
        A map was drawn (its :class:`~histoviz.viz.maps.MapValues`).
    """

    requested = Signal(str)
    shown = Signal(object)

    def __init__(self, session: Session) -> None:
        super().__init__()
        self.session = session
        self.viewer = session.viewer
        self.current: MapValues | None = None
        self.prefs: dict[str, dict[str, Any]] = {}
        self.available: dict[str, list[str]] = {}
        self.layers: dict[str, Any] = {}  # role -> the layer this panel draws maps in
        self._last_key: dict[str, str] = {}
        self._scale_of: dict[str, str | None] = {}
        self._keys_of: tuple[int, str] | None = None
        self._applying = 0
        self._shown_in: weakref.WeakKeyDictionary[Any, MapValues] = weakref.WeakKeyDictionary()
        self._build()
        session.changed.connect(self._on_session_changed)
        session.moved.connect(self._on_moved)
        session.on_layers("removed", self._on_removed)

    # ------------------------------------------------------------------------------------------
    # UI
    # ------------------------------------------------------------------------------------------
    def _build(self) -> None:
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        box = QGroupBox("Map")
        form = QFormLayout(box)
        self.kind_combo = QComboBox()
        self.kind_combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.kind_combo.setMinimumContentsLength(10)
        self.kind_combo.currentIndexChanged.connect(self._on_kind_changed)
        form.addRow("Show", self.kind_combo)
        self.key_combo = QComboBox()
        self.key_combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.key_combo.setMinimumContentsLength(10)
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
        form.addRow("Which", self.key_combo)
        self.scale_combo = QComboBox()
        self.scale_combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.scale_combo.setMinimumContentsLength(10)
        self.scale_combo.setToolTip("Predicted omics on the training data's scale, as a percentile of the training "
                                    "cohort's held-out predictions, or as the model outputs them")
        self.scale_combo.activated.connect(self._on_scale_chosen)
        form.addRow("Scale", self.scale_combo)
        self.horizons = QLineEdit()
        self.horizons.setToolTip("Times at which to read the survival function, in the training data's unit "
                                 "(comma separated); the last bin is open, so times beyond its start are refused")
        self.horizons.returnPressed.connect(self._on_horizons)
        form.addRow("Horizons", self.horizons)
        row = QHBoxLayout()
        self.btn_pin = QPushButton("Keep as layer")
        self.btn_pin.setToolTip("Copy the shown map into its own layer (toggle it with the eye icon)")
        self.btn_pin.clicked.connect(self.pin_current)
        row.addWidget(self.btn_pin)
        self.compare_row = row  # the compare panel adds its buttons here
        form.addRow(row)
        row = QHBoxLayout()
        self.fine = QCheckBox("Finer map")
        self.fine.setToolTip("Average overlapping tiles (stride below the tile size) into cells of the overlap")
        self.fine.toggled.connect(lambda _c: self.refresh())
        self.smooth = QDoubleSpinBox()
        self.smooth.setRange(0.0, 5000.0)
        self.smooth.setDecimals(0)
        self.smooth.setSingleStep(25.0)
        self.smooth.setSuffix(" µm")
        self.smooth.setSpecialValueText("no smoothing")
        self.smooth.setToolTip("Gaussian smoothing of the map (standard deviation), over tissue only")
        self.smooth.valueChanged.connect(lambda _v: self.refresh())
        self.contours = QCheckBox("Contours at threshold")
        self.contours.setToolTip("Draw iso-lines of the map at the threshold value")
        self.contours.toggled.connect(lambda _c: self._draw_contours())
        row.addWidget(self.fine)
        row.addWidget(self.contours)
        form.addRow(row)
        form.addRow("Smoothing", self.smooth)
        outer.addWidget(box)
        self.display = DisplayPanel()
        self.display.colormap_changed.connect(self._on_cmap)
        self.display.opacity_changed.connect(self._on_opacity)
        self.display.clim_changed.connect(self._on_clim)
        self.display.auto_clicked.connect(self._on_auto)
        self.display.threshold_changed.connect(lambda on, v: self.set_threshold(v if on else None))
        outer.addWidget(self.display)
        self.set_enabled()

    def set_enabled(self) -> None:
        """Enable what applies to what is shown."""
        has = self.session.adata is not None
        for w in (self.kind_combo, self.key_combo, self.btn_pin):
            w.setEnabled(has)
        mv = self.current
        self.key_combo.setEnabled(has and mv is not None and bool(mv.spec.key))
        cont = has and mv is not None and not mv.categorical
        layout = self.session.layout
        self.fine.setEnabled(cont and layout is not None and layout.overlapping)
        self.smooth.setEnabled(cont)
        self.contours.setEnabled(cont)
        self.display.set_enabled(has and mv is not None)
        scales = self._scales(mv)
        self._row_visible(self.scale_combo, len(scales) > 1)
        self._row_visible(self.horizons, self._survival_block(mv) is not None)

    def _row_visible(self, field: QWidget, on: bool) -> None:
        form = field.parentWidget().layout() if field.parentWidget() is not None else None
        if isinstance(form, QFormLayout):
            label = form.labelForField(field)
            if label is not None:
                label.setVisible(on)
        field.setVisible(on)

    # ------------------------------------------------------------------------------------------
    # what the session says
    # ------------------------------------------------------------------------------------------
    def _on_session_changed(self) -> None:
        s = self.session
        if s.adata is None:
            self.current = None
            self.prefs.clear()
            self.available = {}
            self._last_key.clear()
            with contextlib.suppress(RuntimeError):
                self.kind_combo.blockSignals(True)
                self.kind_combo.clear()
                self.kind_combo.blockSignals(False)
                self.key_combo.clear()
                self.display.clear()
                self.set_enabled()
            return
        self.available = dict(s.maps.available)
        self._populate_kinds()

    def _on_moved(self) -> None:
        if self.current is not None:
            self.refresh()

    def _on_removed(self, event: Any = None) -> None:
        layer = getattr(event, "value", None)
        for role, own in list(self.layers.items()):
            if own is layer:
                del self.layers[role]

    def forget(self, adata: Any) -> None:
        """New predictions replace ``adata``: display settings of the old ones no longer apply."""
        if adata is not self.session.adata:
            self.prefs.clear()

    # ------------------------------------------------------------------------------------------
    # choosing a map
    # ------------------------------------------------------------------------------------------
    def _populate_kinds(self) -> None:
        from histoviz.viz.maps import kind_labels

        labels = kind_labels()
        self.kind_combo.blockSignals(True)
        self.kind_combo.clear()
        for kind in self.available:
            self.kind_combo.addItem(labels.get(kind, kind), kind)
        self.kind_combo.blockSignals(False)
        self._keys_of = None

    def _set_keys(self, kind: str, key: str | None) -> None:
        keys = [k for k in self.available.get(kind, []) if k]
        self.key_combo.blockSignals(True)
        if self._keys_of != (self.session.generation, kind):  # refill only when the kind changes
            self.key_combo.clear()
            self.key_combo.addItems(keys)
            self._keys_of = (self.session.generation, kind)
        self.key_combo.setEnabled(bool(keys))
        self.key_combo.setCurrentText(key or "")
        self.key_combo.blockSignals(False)

    def _on_kind_changed(self, _index: int) -> None:
        kind = self.kind_combo.currentData()
        if not kind or self.session.adata is None:
            return
        keys = [k for k in self.available.get(kind, []) if k]
        key = self._last_key.get(kind) or (keys[0] if keys else None)
        self.requested.emit(self._spec_text(kind, key))

    def _spec_text(self, kind: str, key: str | None) -> str:
        from histoviz.viz.maps import MapSpec

        return str(MapSpec(kind, key or None, self._scale_of.get(kind)))

    def _on_key_entered(self) -> None:
        kind = self.kind_combo.currentData()
        text = self.key_combo.currentText().strip()
        if kind and text:
            self.requested.emit(self._spec_text(kind, text))

    def _scales(self, mv: MapValues | None) -> list[str]:
        from histoviz.outputs import get_output
        from histoviz.viz.clinical import available_scales

        if mv is None or self.session.adata is None or mv.spec.kind == "obs" or not mv.spec.key:
            return []
        return available_scales(self.session.adata, get_output(mv.spec.kind).store, mv.spec.key)

    def _fill_scales(self, mv: MapValues) -> None:
        from histoviz.viz.clinical import omics_block

        scales = self._scales(mv)
        self.scale_combo.blockSignals(True)
        self.scale_combo.clear()
        ts = self.session.adata.uns.get("target_scale", {}) if self.session.adata is not None else {}
        block = omics_block(self.session.adata, "X" if mv.spec.kind == "gene" else "obsm_prefix",
                            mv.spec.key or "")[0] if scales else None
        units = ts.get(block, {}) if block and hasattr(ts, "get") else {}
        for sc in scales:
            unit = {"data": units.get("unit"), "model": units.get("model_unit")}.get(sc)
            self.scale_combo.addItem(_SCALE_NAMES[sc] + (f" ({unit})" if unit else ""), sc)
        i = self.scale_combo.findData(mv.spec.scale or "data")
        self.scale_combo.setCurrentIndex(max(i, 0))
        self.scale_combo.blockSignals(False)

    def _on_scale_chosen(self, _i: int) -> None:
        mv = self.current
        sc = self.scale_combo.currentData()
        if mv is None or not sc:
            return
        self._scale_of[mv.spec.kind] = None if sc == "data" else sc
        self.requested.emit(str(mv.spec.with_scale(self._scale_of[mv.spec.kind])))

    def _survival_block(self, mv: MapValues | None) -> str | None:
        from histoviz.tasks import _risk_names

        a = self.session.adata
        surv = a.uns.get("survival") if a is not None else None
        if mv is None or not hasattr(surv, "keys"):
            return None
        for block in surv.keys():
            if _risk_names(block)["probability"] == mv.spec.kind:
                return block
        return None

    @reports_errors("Could not read the survival maps at those horizons")
    def _on_horizons(self) -> bool:
        from histoviz.viz.clinical import set_horizons

        block = self._survival_block(self.current)
        if block is None:
            return False
        text = self.horizons.text().replace(";", ",")
        try:
            values = [float(v) for v in text.split(",") if v.strip()]
        except ValueError:
            self.session.say(f"Horizons: {text!r} is not a list of numbers (e.g. 12, 36, 60).", error=True)
            return False
        from histoviz.viz.maps import PredictionMaps

        cols = set_horizons(self.session.adata, values, block=block)
        self.session.maps = PredictionMaps(self.session.adata)  # the map tables changed
        self.available = dict(self.session.maps.available)
        self._keys_of = None
        self.requested.emit(self._spec_text(self.current.spec.kind, cols[0]))
        return True

    # ------------------------------------------------------------------------------------------
    # drawing
    # ------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def programmatic(self) -> Iterator[None]:
        """Layer changes made by the panel itself (not remembered as the user's choice)."""
        self._applying += 1
        try:
            yield
        finally:
            self._applying -= 1

    def map_layer(self, role: str) -> Any:
        """This panel's layer of a role, when still in the viewer."""
        layer = self.layers.get(role)
        return layer if layer is not None and layer in self.viewer.layers else None

    def current_layer(self) -> Any:
        """The layer drawing the shown map."""
        if self.current is None:
            return None
        return self.map_layer(ROLE_CATEGORICAL if self.current.categorical else ROLE_CONTINUOUS)

    def prefs_of(self, mv: MapValues) -> dict[str, Any]:
        """Display settings the user set for a map (colormap, contrast limits, threshold)."""
        return self.prefs.setdefault(str(mv.spec), {})

    def raster(self, mv: MapValues) -> tuple[np.ndarray, tuple[tuple[float, float], tuple[float, float]]]:
        """The map's raster and its world ``(scale, translate)``: one cell per patch, or finer
        (overlapping tiles averaged, smoothed) when asked; below the threshold, NaN."""
        layout = self.session.layout
        assert layout is not None
        sc, tr = self.session.geometry()
        if mv.categorical:
            pl = layout.placement(sc, tr)
            return layout.label_raster(mv.values), (pl.scale, pl.translate)
        thr = self.prefs.get(str(mv.spec), {}).get("threshold")
        rm = self._fine(mv)
        if rm is not None:
            data, pl = rm.data, rm.placement(sc, tr)
        else:
            data, pl = layout.raster(np.asarray(mv.values, np.float32)), layout.placement(sc, tr)
        if thr is not None:
            data = np.where(data >= thr, data, np.nan).astype(np.float32)
        return data, (pl.scale, pl.translate)

    def _fine(self, mv: MapValues) -> Any:
        """The finer / smoothed :class:`~histoviz.viz.layout.RasterMap` asked for, else ``None``."""
        layout = self.session.layout
        smooth_um = float(self.smooth.value())
        fine = self.fine.isChecked() and layout.overlapping
        smooth_px = 0.0
        if smooth_um > 0:
            info = self.session.info
            if info is not None and info.mpp:
                smooth_px = smooth_um / float(info.mpp)
            else:
                self.session.say("Smoothing needs the slide's resolution (enter its mpp); not smoothed.", error=True)
        if not fine and smooth_px <= 0:
            return None
        return layout.fine_raster(mv.values, smooth_level0=smooth_px)

    def layer_kwargs(self, mv: MapValues, role: str, name: str) -> tuple[dict[str, Any], str]:
        """napari layer arguments of a map (placement, colormap, metadata naming its file)."""
        s = self.session
        assert s.layout is not None and s.adata is not None
        _, kwargs, ltype = map_layer_data(s.layout, mv, s.info, role=role,
                                          adata_info=dict(s.adata.uns["histoviz"]), name=name)
        kwargs["metadata"][META_KEY].update(predictions=s.source_file(), owner=s.owner)
        return kwargs, ltype

    def apply_display(self, layer: Any, mv: MapValues) -> None:
        """Contrast limits and colormap of ``mv`` (the user's, else :func:`display_range`'s)."""
        from histoviz.viz.maps import display_range

        prefs = self.prefs.get(str(mv.spec), {})
        rng = display_range(mv.values, mv.contrast_limits)
        lo, hi = prefs.get("contrast_limits", rng.limits)
        with self.programmatic():
            layer.colormap = prefs.get("colormap", mv.colormap)
            layer.contrast_limits_range = (min(lo, rng.range[0]), max(hi, rng.range[1]))
            layer.contrast_limits = (lo, hi)

    def put(self, layer: Any, mv: MapValues, kwargs: dict[str, Any]) -> None:
        """Put ``mv`` into an existing map layer, with that map's own display settings."""
        data, (scale, translate) = self.raster(mv)
        with self.programmatic():
            layer.metadata = kwargs["metadata"]
            layer.data = data
            if not np.allclose(layer.scale[-2:], scale):
                layer.scale = scale
            if not np.allclose(layer.translate[-2:], translate):
                layer.translate = translate
            if "units" in kwargs and tuple(layer.units) != tuple(kwargs["units"]):
                layer.units = kwargs["units"]
            if mv.categorical:
                layer.colormap = kwargs["colormap"]
                layer.features = label_features(mv)
                make_read_only(layer)
            else:
                self.apply_display(layer, mv)
            layer.name = kwargs["name"]
            layer.visible = True
        self._shown_in[layer] = mv

    def add_layer(self, mv: MapValues, kwargs: dict[str, Any], ltype: str) -> Any:
        """A new layer drawing ``mv`` (the active layer stays active)."""
        data, (scale, translate) = self.raster(mv)
        kwargs = {**kwargs, "scale": scale, "translate": translate}
        if ltype == "image":
            prefs = self.prefs.get(str(mv.spec), {})
            kwargs["colormap"] = prefs.get("colormap", kwargs["colormap"])
            kwargs["contrast_limits"] = prefs.get("contrast_limits", kwargs["contrast_limits"])
        active = self.viewer.layers.selection.active
        with self.programmatic():
            layer = (self.viewer.add_labels if ltype == "labels" else self.viewer.add_image)(data, **kwargs)
            if ltype == "labels":
                make_read_only(layer)
            else:
                self.apply_display(layer, mv)
        if active is not None and active in self.viewer.layers:
            self.viewer.layers.selection.active = active
        self._shown_in[layer] = mv
        self.watch(layer)
        return layer

    def watch(self, layer: Any) -> None:
        """Remember display changes made with napari's own layer controls, per map."""
        if layer in _WATCHED or not hasattr(layer, "contrast_limits"):
            return
        ref = weakref.ref(layer)
        layer.events.contrast_limits.connect(lambda e=None: self._on_layer_display(ref(), "contrast_limits"))
        layer.events.colormap.connect(lambda e=None: self._on_layer_display(ref(), "colormap"))
        _WATCHED.add(layer)

    def show(self, spec: Any) -> bool:
        """Draw one map (``"gene:CD3E"``, ``"dominant_type"``, ``"risk"``, a MapSpec...) in place."""
        from histoviz.viz.maps import map_values

        s = self.session
        if s.adata is None or s.layout is None:
            s.say("Load predictions first.", error=True)
            return False
        mv = map_values(s.maps, spec)
        role = ROLE_CATEGORICAL if mv.categorical else ROLE_CONTINUOUS
        other = ROLE_CONTINUOUS if mv.categorical else ROLE_CATEGORICAL
        kwargs, ltype = self.layer_kwargs(mv, role, f"map: {mv.label}")
        layer = self.map_layer(role)
        self.current = mv
        if layer is None:
            kwargs["opacity"] = self.display.opacity.value() / 100.0
            layer = self.add_layer(mv, kwargs, ltype)
            self.layers[role] = layer
        else:
            self.put(layer, mv, kwargs)
        old = self.map_layer(other)
        if old is not None and old is not layer:
            old.visible = False
        if mv.spec.key:
            self._last_key[mv.spec.kind] = mv.spec.key
        self._sync_controls(layer)
        self._draw_contours()
        self.shown.emit(mv)
        return True

    def refresh(self) -> None:
        """Redraw the shown map (after a placement or a finer-map option changed)."""
        if self.current is None or self.session.adata is None:
            return
        layer = self.current_layer()
        if layer is not None:
            kwargs, _ = self.layer_kwargs(self.current, ROLE_CATEGORICAL if self.current.categorical
                                          else ROLE_CONTINUOUS, layer.name)
            self.put(layer, self.current, kwargs)
        self._draw_contours()
        self.set_enabled()

    def _sync_controls(self, layer: Any) -> None:
        from histoviz.viz.maps import display_range

        mv = self.current
        assert mv is not None
        i = self.kind_combo.findData(mv.spec.kind)
        self.kind_combo.blockSignals(True)
        self.kind_combo.setCurrentIndex(i)
        self.kind_combo.blockSignals(False)
        self._set_keys(mv.spec.kind, mv.spec.key)
        self._fill_scales(mv)
        block = self._survival_block(mv)
        if block is not None:
            hz = np.asarray(self.session.adata.uns["survival"][block].get("horizons", []), float)
            unit = str(self.session.adata.uns["survival"][block].get("time_unit", ""))
            self.horizons.setText(", ".join(f"{v:g}" for v in hz))
            self.horizons.setPlaceholderText(f"times in {unit}")
        rng = (0.0, 1.0) if mv.is_probability else display_range(mv.values, mv.contrast_limits).range
        self.display.show_map(mv, layer, threshold=self.prefs.get(str(mv.spec), {}).get("threshold"),
                              data_range=rng)
        self.set_enabled()

    def _draw_contours(self) -> None:
        from histoviz.viz.layout import level0_to_world

        layer = self.map_layer(ROLE_CONTOUR)
        mv = self.current
        thr = self.prefs.get(str(mv.spec), {}).get("threshold") if mv is not None else None
        want = (self.contours.isChecked() and mv is not None and not mv.categorical and thr is not None
                and self.session.layout is not None)
        if not want:
            if layer is not None:
                layer.data = []
            if self.contours.isChecked() and mv is not None and thr is None:
                self.session.say("Contours follow the threshold: tick 'Hide below' and choose a value.")
            return
        layout = self.session.layout
        sc, tr = self.session.geometry()
        rm = self._fine(mv) or _patch_raster(layout, mv.values)
        lines = [np.array([level0_to_world(p, sc, tr) for p in line]) for line in rm.contours(float(thr))]
        if layer is None:
            kw: dict[str, Any] = {"name": "contour", "shape_type": "path", "edge_color": "white",
                                  "edge_width": max(1.0, layout.tile_size_level0 * 0.04 * sc[0]),
                                  "metadata": {META_KEY: {"role": ROLE_CONTOUR, "owner": self.session.owner}}}
            if self.session.info is not None and self.session.info.units:
                kw["units"] = self.session.info.units
            active = self.viewer.layers.selection.active
            layer = self.viewer.add_shapes(lines or None, **kw)
            self.layers[ROLE_CONTOUR] = layer
            if active is not None and active in self.viewer.layers:
                self.viewer.layers.selection.active = active
        else:
            layer.data = []
            if lines:
                layer.add_paths(lines, edge_color="white")
        self.session.say(f"{len(lines)} contour line(s) of {mv.label} at {float(thr):.3g}.")

    # ------------------------------------------------------------------------------------------
    # display settings
    # ------------------------------------------------------------------------------------------
    def _on_layer_display(self, layer: Any, what: str) -> None:
        if layer is None or self._applying:
            return
        mv = self._shown_in.get(layer)
        if mv is None or mv.categorical:
            return
        prefs = self.prefs_of(mv)
        if what == "contrast_limits":
            prefs["contrast_limits"] = tuple(float(v) for v in layer.contrast_limits)
        else:
            prefs["colormap"] = layer.colormap.name
        if layer is self.current_layer():
            with contextlib.suppress(RuntimeError):
                self.display.sync_clim(layer)
                self.display.draw_colorbar(layer)

    def _on_cmap(self, name: str) -> None:
        layer = self.current_layer()
        if layer is None or self.current is None or self.current.categorical:
            return
        try:
            layer.colormap = name  # the layer event remembers it for this map
        except (KeyError, ValueError) as e:
            self.session.say(f"Unknown colormap {name!r} ({e})", error=True)

    def _on_opacity(self, value: float) -> None:
        for role in (ROLE_CONTINUOUS, ROLE_CATEGORICAL):
            layer = self.map_layer(role)
            if layer is not None:
                layer.opacity = value

    def _on_clim(self, lo: float, hi: float) -> None:
        layer = self.current_layer()
        if layer is not None and self.current is not None and not self.current.categorical:
            layer.contrast_limits = (lo, hi)

    def _on_auto(self) -> None:
        if self.current is None or self.current.categorical:
            return
        self.prefs_of(self.current).pop("contrast_limits", None)
        layer = self.current_layer()
        if layer is not None:
            self.apply_display(layer, self.current)
            self.display.sync_clim(layer)

    def set_threshold(self, value: float | None) -> None:
        """Hide the shown map's patches below ``value`` (the slide shows through); ``None``: show all."""
        mv = self.current
        if mv is None or mv.categorical or self.session.layout is None:
            return
        prefs = self.prefs_of(mv)
        if value is None:
            prefs.pop("threshold", None)
        else:
            prefs["threshold"] = float(value)
        layer = self.current_layer()
        if layer is not None:
            with self.programmatic():
                lim = tuple(layer.contrast_limits)
                layer.data = self.raster(mv)[0]
                layer.contrast_limits = lim
        n_all = len(self.session.layout)
        n = int(np.sum(np.asarray(mv.values) >= value)) if value is not None else n_all
        self.session.say(f"Showing {mv.label}: {n} of {n_all} patches"
                         + (f" at or above {value:.3g}." if value is not None else "."))
        self._draw_contours()

    @reports_errors("Could not keep the map", default=None)
    def pin_current(self) -> Any:
        """Copy the shown map into a layer of its own; returns that layer."""
        mv = self.current
        if mv is None or self.session.adata is None:
            self.session.say("Show a map first.", error=True)
            return None
        src = self.current_layer()
        kwargs, ltype = self.layer_kwargs(mv, ROLE_PINNED, f"{mv.label} (kept)")
        if ltype == "image" and src is not None:
            kwargs.update(colormap=src.colormap, contrast_limits=tuple(src.contrast_limits), opacity=src.opacity)
        layer = self.add_layer(mv, kwargs, ltype)
        if ltype == "image" and src is not None:
            with self.programmatic():
                layer.contrast_limits = tuple(src.contrast_limits)
        if src is not None:
            src.visible = False
        self.session.say(f"Kept {mv.label} as layer {layer.name!r}.")
        return layer

    def raise_maps(self) -> None:
        """Put the shown map on top of every other layer."""
        layer = self.current_layer()
        if layer is not None:
            i = self.viewer.layers.index(layer)
            if i != len(self.viewer.layers) - 1:
                self.viewer.layers.move(i, len(self.viewer.layers))
        contour = self.map_layer(ROLE_CONTOUR)
        if contour is not None:
            self.viewer.layers.move(self.viewer.layers.index(contour), len(self.viewer.layers))


def _patch_raster(layout: Any, values: np.ndarray) -> Any:
    """One cell per patch as a :class:`~histoviz.viz.layout.RasterMap` (for contours)."""
    from histoviz.viz.layout import RasterMap

    x0, y0, _, _ = layout.extent_level0
    return RasterMap(layout.raster(np.asarray(values, np.float32)), float(layout.cell_size), (x0, y0))
