"""Export of the shown map from the "Prediction maps" widget (a mixin): QuPath GeoJSON and a
tiled pyramidal OME-TIFF at the slide's size (:mod:`histoviz.viz.export`)."""

from __future__ import annotations

from pathlib import Path

from qtpy.QtWidgets import QFileDialog

__all__ = ["ExportMixin"]


class ExportMixin:
    """Export actions; mixed into :class:`napari_plugin._widget.PredictionWidget`."""

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

    def export_geojson(self, path: str | Path) -> Path | None:
        """Write the shown map as QuPath detections (one per patch), every patch included."""
        from histoviz.viz.export import write_geojson

        if self.adata is None or self.current is None:
            self._say("Show a map first.", error=True)
            return None
        out = write_geojson(self.adata, path, maps=[self.current.spec])
        self._say(f"Wrote {self.adata.n_obs} detections to {out}.")
        return out

    def export_ome_tiff(self, path: str | Path, *, downsample: int | None = None) -> Path | None:
        """Write the shown map as a tiled pyramidal OME-TIFF aligned to the slide (every patch)."""
        from histoviz.viz.export import write_ome_tiff_heatmap

        if self.adata is None or self.current is None:
            self._say("Show a map first.", error=True)
            return None
        out = write_ome_tiff_heatmap(self.adata, path, self.current.spec, downsample=downsample)
        self._say(f"Wrote {self.current.label} heatmap to {out}.")
        return out

