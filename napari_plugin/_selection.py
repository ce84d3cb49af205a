"""Patch selection of the "Prediction maps" widget: click, outline, inspector (a mixin)."""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_plugin._layers import META_KEY, ROLE_SELECTION

__all__ = ["SelectionMixin"]


class SelectionMixin:
    """Select a patch by a click or by index; outline it; fill the patch inspector.

    Mixed into :class:`napari_plugin._widget.PredictionWidget` (uses its ``viewer``, ``adata``,
    ``maps``, ``layout``, ``_info``, ``_own``, ``patch_panel``).
    """

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

    def select_patch(self, index: int | None) -> dict[str, Any] | None:
        """Show the patch panel for patch ``index`` (``None`` clears it) and outline the patch."""
        from histoviz.viz.summary import patch_summary

        if self.adata is None or self.layout is None or index is None:
            self.selected = None
            self.summary = None
            self.patch_panel.clear("No patch selected." if self.adata is not None else
                                   "Load predictions, then click on the tissue.")
            self._outline(None)
            return None
        mpp = self._info.mpp if self._info is not None else None
        s = patch_summary(self.maps, int(index), mpp=mpp)
        self.selected = int(index)
        self.summary = s
        self.patch_panel.show_summary(s)
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
                metadata={META_KEY: {"role": ROLE_SELECTION, "owner": id(self)}}, **kw,
            )
            self._own[ROLE_SELECTION] = layer
            if self._compare is not None:
                layer.visible = False
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


