"""Side by side: two maps in napari's grid mode, one camera for both panels.

Three comparisons a reader makes:

- two maps of the shown predictions (P(grade = 4) beside the conformal set size);
- the same map from two models on one slide (another prediction file of the same slide);
- the same model on two slides (a prediction file of another slide, opened with its slide).

The layer list is arranged as ``[slide, left map, slide (right), right map]`` and the grid groups
layers two by two (``stride = 2``), one row of two panels; every panel is drawn by the same
camera, so panning or zooming one moves the other. Each map shows its title (napari's layer-name
overlay) and its colour bar; two files compared on one map share the left map's contrast limits,
so equal colours mean equal values. Other layers are hidden meanwhile and come back as they were.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtWidgets import QFileDialog, QPushButton

from napari_plugin._layers import (
    META_KEY,
    ROLE_CATEGORICAL,
    ROLE_COMPARE,
    ROLE_CONTINUOUS,
    layer_meta,
    map_layer_data,
    slide_info,
    slide_layer_data,
)
from napari_plugin._session import Session, reports_errors

if TYPE_CHECKING:
    from napari_plugin._maps import MapPanel

__all__ = ["ComparePanel"]


def _show_overlays(layer: Any, on: bool) -> None:
    """Title (layer-name overlay, top left) and, for images, colour bar (bottom right) of a map in
    its grid panel."""
    with contextlib.suppress(AttributeError):
        layer.name_overlay.visible = on
        layer.name_overlay.font_size = 10
    bar = getattr(layer, "colorbar", None)
    if bar is not None:
        bar.visible = on
        with contextlib.suppress(AttributeError, ValueError):
            bar.position = "bottom_right"


def _model_of(adata: Any) -> str:
    return str(adata.uns.get("histoviz", {}).get("model", "") or "predictions")


class ComparePanel:
    """"Side by side…" and "Compare with a file…" of the map panel (buttons in its row).

    Attributes
    ----------
    state
        What :meth:`end` needs to undo a comparison (``None``: not comparing).
    other
        The second prediction file's AnnData when two files are compared.
    """

    def __init__(self, session: Session, maps: MapPanel) -> None:
        self.session = session
        self.maps = maps
        self.viewer = session.viewer
        self.state: dict[str, Any] | None = None
        self.other: Any = None
        self.btn = QPushButton("Side by side…")
        self.btn.setCheckable(True)
        self.btn.setToolTip("Show the map chosen next beside the shown one: napari grid mode, one camera for both")
        self.btn.clicked.connect(self._on_clicked)
        self.btn_file = QPushButton("Compare with a file…")
        self.btn_file.setToolTip("The same map from another prediction file beside this one: another model on this "
                                 "slide, or a model's predictions on another slide")
        self.btn_file.clicked.connect(self._choose_file)
        maps.compare_row.addWidget(self.btn)
        maps.compare_row.addWidget(self.btn_file)
        self.btn.setText("Side by side…")
        self.btn_file.setText("With a file…")
        maps.shown.connect(self._follow)
        session.changed.connect(self.end)
        session.on_layers("removed", self._on_removed)

    @property
    def armed(self) -> bool:
        """True when the next map chosen goes to the right-hand side."""
        return self.btn.isChecked() and self.state is None and self.maps.current is not None

    def set_enabled(self, on: bool) -> None:
        """Enable the buttons (predictions shown)."""
        self.btn.setEnabled(on)
        self.btn_file.setEnabled(on)

    def _on_clicked(self, checked: bool) -> None:
        if not checked:
            self.end()
            return
        if self.maps.current is None:
            self.btn.setChecked(False)
            return
        self.session.say("Side by side: choose the second map (Show / Which); it appears on the right.")

    def _choose_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self.maps, "Compare with predictions", "", "AnnData (*.h5ad)")
        if path:
            self.compare_file(path)

    def _on_removed(self, event: Any = None) -> None:
        layer = getattr(event, "value", None)
        if self.state is not None and layer in (self.state.get("map"), self.state.get("slide")):
            from qtpy.QtCore import QTimer

            QTimer.singleShot(0, self.end)  # not while napari is still removing

    # ------------------------------------------------------------------------------------------
    @reports_errors("Could not show the maps side by side")
    def compare(self, spec: Any) -> bool:
        """Show map ``spec`` of the shown predictions beside the shown one (grid mode, one camera)."""
        from histoviz.viz.maps import map_values

        if self.maps.current is None or self.session.adata is None:
            self.session.say("Show a map first.", error=True)
            return False
        self.end()
        mv = map_values(self.session.maps, spec)
        kwargs, ltype = self.maps.layer_kwargs(mv, ROLE_COMPARE, f"right · {mv.title}")
        kwargs["opacity"] = self.maps.display.opacity.value() / 100.0
        right = self.maps.add_layer(mv, kwargs, ltype)
        self._start(right, mv, slide_copy=True, left_title=f"left · {self.maps.current.title}")
        self.session.say(f"Side by side: {self.maps.current.label} | {mv.label} (one camera; click 'Side by side' "
                         "again to go back).")
        return True

    @reports_errors("Could not compare with that file")
    def compare_file(self, path: str | Path, spec: Any = None) -> bool:
        """Show the same map (or ``spec``) from another prediction file beside the shown one.

        A file of the same slide (another model) is drawn over a copy of the slide; a file of
        another slide is drawn over that slide, opened from the path the file records. Both
        maps share the left one's contrast limits.
        """
        from histoviz.io import open_slide
        from histoviz.io.predictions import read_predictions
        from histoviz.viz.maps import PatchLayout, PredictionMaps, default_map, map_values

        left_mv = self.maps.current
        if left_mv is None or self.session.adata is None:
            self.session.say("Show a map first.", error=True)
            return False
        other = read_predictions(path)
        pm = PredictionMaps(other)
        want = spec or left_mv.spec
        try:
            mv = map_values(pm, want)
        except Exception:  # noqa: BLE001 - the other file lacks that map: its own default
            if spec is not None:
                raise
            mv = map_values(pm, default_map(pm))
        info_o = dict(other.uns["histoviz"])
        info = self.session.info
        same = info is not None and str(info_o.get("slide_id")) == str(info.slide_id)
        slide_layer = None
        if same:
            sinfo = info
        else:
            sp = info_o.get("slide_path")
            if not sp or not Path(str(sp)).is_file():
                from histoviz.errors import DataError

                raise DataError(f"{path}: its slide {sp!r} is not on this machine; open the slide, then load the file")
            data, kw, _ = slide_layer_data(open_slide(str(sp)))
            kw["metadata"][META_KEY].update(owner=self.session.owner, compare_slide=True, role="slide-copy")
            slide_layer = self.viewer.add_image(data, **kw)
            sinfo = slide_info(slide_layer)
        self.end()
        layout = PatchLayout.from_adata(other)
        where = "" if same else f" · {other.uns['histoviz'].get('slide_id')}"
        title = f"{_model_of(other)}{where} · {mv.label}"
        data, kwargs, ltype = map_layer_data(layout, mv, sinfo, role=ROLE_COMPARE, adata_info=info_o, name=title)
        kwargs["metadata"][META_KEY].update(owner=self.session.owner, predictions=str(Path(path).resolve()))
        left = self.maps.current_layer()
        if ltype == "image" and left is not None and not left_mv.categorical and str(mv.spec) == str(left_mv.spec):
            kwargs["colormap"] = left.colormap
            kwargs["contrast_limits"] = tuple(left.contrast_limits)
        kwargs["opacity"] = self.maps.display.opacity.value() / 100.0
        right = (self.viewer.add_labels if ltype == "labels" else self.viewer.add_image)(data, **kwargs)
        if ltype == "labels":
            from napari_plugin._layers import make_read_only

            make_read_only(right)
        self.other = other
        where = "" if same else f" · {self.session.adata.uns['histoviz'].get('slide_id')}"
        left_title = f"{_model_of(self.session.adata)}{where} · {left_mv.label}"
        self._start(right, mv, slide_copy=same, slide_layer=slide_layer, left_title=left_title)
        what = "another model on this slide" if same else "another slide"
        self.session.say(f"Side by side ({what}): {left_mv.label} | {mv.label} from {Path(path).name} (one camera).")
        return True

    def _start(self, right: Any, mv: Any, *, slide_copy: bool, left_title: str, slide_layer: Any = None) -> None:
        viewer = self.viewer
        left = self.maps.current_layer()
        slide = self.session.slide if self.session.slide is not None and self.session.slide in viewer.layers else None
        copy = slide_layer
        if copy is None and slide_copy and slide is not None:
            meta = {META_KEY: {"role": "slide-copy", "compare_slide": True, "owner": self.session.owner}}
            kw: dict[str, Any] = {"name": f"{slide.name} (right)", "rgb": slide.rgb, "multiscale": slide.multiscale,
                                  "scale": tuple(slide.scale), "translate": tuple(slide.translate),
                                  "contrast_limits": tuple(slide.contrast_limits), "metadata": meta}
            with contextlib.suppress(AttributeError):
                kw["units"] = tuple(slide.units)
            copy = viewer.add_image(slide.data, **kw)
        visible = {la: la.visible for la in viewer.layers}
        order = [la for la in (slide, left, copy, right) if la is not None]
        for la in viewer.layers:
            if la not in order:
                la.visible = False
        for i, la in enumerate(order):
            viewer.layers.move(viewer.layers.index(la), i)
            la.visible = True
        grid = viewer.canvas.grid
        self.state = {"map": right, "slide": copy, "mv": mv, "visible": visible,
                      "grid": (grid.enabled, grid.stride, tuple(grid.shape)),
                      "left": left, "left_name": left.name if left is not None else None,
                      "left_prefix": left_title.rsplit(" · ", 1)[0], "right_prefix": right.name.rsplit(" · ", 1)[0]}
        if left is not None:
            with self.maps.programmatic():
                left.name = left_title
            _show_overlays(left, True)
        _show_overlays(right, True)
        grid.stride = len(order) // 2
        grid.shape = (1, 2)
        grid.enabled = True
        if left is not None:
            viewer.layers.selection.active = left
        viewer.reset_view()
        with contextlib.suppress(RuntimeError):
            self.btn.blockSignals(True)
            self.btn.setChecked(True)
            self.btn.blockSignals(False)

    def _follow(self, mv: Any) -> None:
        """Two files compared: the right-hand side follows the map chosen on the left."""
        if self.state is None or self.other is None:
            return
        from histoviz.viz.maps import PatchLayout, map_values

        right = self.state["map"]
        try:
            mv_r = map_values(self.other, mv.spec)
        except Exception:  # noqa: BLE001 - the other file lacks this map: keep what it shows
            self.session.say(f"The compared file has no {mv.label} map; its side keeps {self.state['mv'].label}.")
            return
        layout = PatchLayout.from_adata(self.other)
        if mv_r.categorical != self.state["mv"].categorical:
            self.session.say("Switch the comparison off to change between category and value maps.", error=True)
            return
        right.data = layout.label_raster(mv_r.values) if mv_r.categorical else layout.raster(mv_r.values)
        if not mv_r.categorical:
            left = self.maps.current_layer()
            right.colormap = left.colormap
            right.contrast_limits_range = tuple(left.contrast_limits_range)
            right.contrast_limits = tuple(left.contrast_limits)
        right.name = f"{self.state['right_prefix']} · {mv_r.label}"
        left = self.state.get("left")
        if left is not None:
            with self.maps.programmatic():
                left.name = f"{self.state['left_prefix']} · {mv.label}"
        self.state["mv"] = mv_r

    def end(self) -> None:
        """Leave side-by-side mode: remove the right-hand layers, restore what was visible."""
        state, self.state = self.state, None
        self.other = None
        with contextlib.suppress(RuntimeError):
            self.btn.blockSignals(True)
            self.btn.setChecked(False)
            self.btn.blockSignals(False)
        if state is None:
            return
        viewer = self.viewer
        enabled, stride, shape = state["grid"]
        grid = viewer.canvas.grid
        grid.enabled = enabled
        grid.stride = stride
        grid.shape = shape
        for key in ("map", "slide"):
            la = state.get(key)
            if la is not None and la in viewer.layers:
                viewer.layers.remove(la)
        left = state.get("left")
        if left is not None and left in viewer.layers:
            _show_overlays(left, False)
            if state.get("left_name"):
                with self.maps.programmatic():
                    left.name = state["left_name"]
        for la in viewer.layers:
            if layer_meta(la).get("role") in (ROLE_CONTINUOUS, ROLE_CATEGORICAL):
                _show_overlays(la, False)
        for la, vis in state["visible"].items():
            if la in viewer.layers and la not in (state.get("map"), state.get("slide")):
                la.visible = vis
        if self.maps.current is not None:
            self.session.say(f"Back to one map: {self.maps.current.label}.")
