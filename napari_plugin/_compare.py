"""Two maps side by side: napari's grid mode with one camera for both panels.

The layer list is arranged as ``[slide, shown map, slide (right), second map]`` and the grid
groups layers two by two (``stride = 2``), one row of two panels; every panel is drawn by the
same camera, so panning or zooming one moves the other. Other layers are hidden meanwhile and
come back as they were when the comparison ends.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from napari_plugin._layers import (
    META_KEY,
    ROLE_CATEGORICAL,
    ROLE_COMPARE,
    ROLE_CONTINUOUS,
    layer_meta,
)

if TYPE_CHECKING:
    import napari

__all__ = ["CompareMixin", "start_compare", "stop_compare"]


def start_compare(widget: Any, spec: Any) -> dict[str, Any]:
    """Show ``spec`` beside the widget's current map; returns the state :func:`stop_compare` needs."""
    from histoviz.viz.maps import map_values

    viewer: napari.Viewer = widget.viewer
    left = widget._current_layer()
    slide = widget._slide if widget._slide is not None and widget._slide in viewer.layers else None
    if left is None:
        raise RuntimeError("no map is shown")
    mv = map_values(widget.maps, spec)
    prefs = widget._prefs.get(str(mv.spec), {})
    kwargs, ltype = widget._layer_kwargs(mv, ROLE_COMPARE, f"right: {mv.label}")
    if not mv.categorical:
        kwargs["colormap"] = prefs.get("colormap", kwargs["colormap"])
        kwargs["contrast_limits"] = prefs.get("contrast_limits", kwargs["contrast_limits"])
    kwargs["opacity"] = left.opacity
    right = widget._add_layer(widget._raster(mv, prefs.get("threshold")), kwargs, ltype)
    if not mv.categorical:
        widget._apply_display(right, mv)
    copy = None
    if slide is not None:
        meta = {META_KEY: {"role": "slide-copy", "compare_slide": True, "owner": id(widget)}}
        kw: dict[str, Any] = {"name": f"{slide.name} (right)", "rgb": slide.rgb, "multiscale": slide.multiscale,
                              "scale": tuple(slide.scale), "translate": tuple(slide.translate),
                              "contrast_limits": tuple(slide.contrast_limits), "metadata": meta}
        try:
            kw["units"] = tuple(slide.units)
        except AttributeError:  # pragma: no cover - older napari
            pass
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
    state = {"map": right, "slide": copy, "mv": mv, "visible": visible,
             "grid": (grid.enabled, grid.stride, tuple(grid.shape)),
             "colorbar": _show_colorbar(left, True)}
    _show_colorbar(right, True)
    grid.stride = len(order) // 2
    grid.shape = (1, 2)
    grid.enabled = True
    viewer.layers.selection.active = left
    viewer.reset_view()
    return state


def _show_colorbar(layer: Any, on: bool) -> bool:
    """Show napari's colour bar (ticks at the contrast limits) of an Image layer in its panel;
    returns whether it was shown before."""
    bar = getattr(layer, "colorbar", None)
    if bar is None:
        return False
    before = bool(bar.visible)
    bar.visible = on
    return before


def stop_compare(viewer: napari.Viewer, state: dict[str, Any]) -> None:
    """End a comparison made by :func:`start_compare`."""
    enabled, stride, shape = state["grid"]
    grid = viewer.canvas.grid
    grid.enabled = enabled
    grid.stride = stride
    grid.shape = shape
    for key in ("map", "slide"):
        la = state.get(key)
        if la is not None and la in viewer.layers:
            viewer.layers.remove(la)
    left = [la for la in state["visible"] if la in viewer.layers and layer_meta(la).get("role") in
            (ROLE_CONTINUOUS, ROLE_CATEGORICAL)]
    for la in left:
        _show_colorbar(la, bool(state.get("colorbar")))
    for la, vis in state["visible"].items():
        if la in viewer.layers and la not in (state.get("map"), state.get("slide")):
            la.visible = vis


class CompareMixin:
    """"Side by side" of the "Prediction maps" widget (mixed into its class)."""

    def _on_compare_clicked(self, checked: bool) -> None:
        if not checked:
            self.end_compare()
            return
        if self.current is None:
            self.btn_compare.setChecked(False)
            return
        self._say("Side by side: choose the second map (Show / Which); it appears on the right.")

    def compare(self, spec: Any) -> bool:
        """Show map ``spec`` beside the shown one (grid mode, linked cameras).

        Left: the slide with the shown map; right: the slide with ``spec``. Each keeps its own
        colormap and contrast. Other layers are hidden until :meth:`end_compare`.
        """
        if self.current is None or self.adata is None:
            self._say("Show a map first.", error=True)
            return False
        self.end_compare()
        self._compare = start_compare(self, spec)
        self._watch(self._compare["map"])
        self.btn_compare.blockSignals(True)
        self.btn_compare.setChecked(True)
        self.btn_compare.blockSignals(False)
        self._say(f"Side by side: {self.current.label} | {self._compare['mv'].label} (one camera; "
                  "click 'Side by side' again to go back).")
        return True

    def end_compare(self) -> None:
        """Leave side-by-side mode: remove the right-hand layers, restore what was visible."""
        state, self._compare = self._compare, None
        with contextlib.suppress(RuntimeError):
            self.btn_compare.blockSignals(True)
            self.btn_compare.setChecked(False)
            self.btn_compare.blockSignals(False)
        if state is not None:
            stop_compare(self.viewer, state)
            if self.current is not None:
                self._say(f"Back to one map: {self.current.label}.")
