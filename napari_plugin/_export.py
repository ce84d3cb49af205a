"""The "Export the shown map" panel: QuPath GeoJSON detections and a tiled pyramidal OME-TIFF at
the slide's size (:mod:`histoviz.viz.export`), of the map the map panel shows (on its scale)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qtpy.QtWidgets import QFileDialog, QGroupBox, QHBoxLayout, QPushButton

from napari_plugin._session import Session, reports_errors

__all__ = ["ExportPanel"]


class ExportPanel(QGroupBox):
    """Export buttons; the map comes from the map panel, the predictions from the session."""

    def __init__(self, session: Session, maps: Any) -> None:
        super().__init__("Export the shown map")
        self.session = session
        self.maps = maps
        row = QHBoxLayout(self)
        self.btn_geojson = QPushButton("QuPath GeoJSON…")
        self.btn_geojson.clicked.connect(self._choose_geojson)
        self.btn_tiff = QPushButton("OME-TIFF…")
        self.btn_tiff.setToolTip("Tiled pyramidal OME-TIFF at the slide's size and pixel size")
        self.btn_tiff.clicked.connect(self._choose_ome_tiff)
        row.addWidget(self.btn_geojson)
        row.addWidget(self.btn_tiff)

    def set_enabled(self, on: bool) -> None:
        """Enable the buttons (a map is shown)."""
        self.btn_geojson.setEnabled(on)
        self.btn_tiff.setEnabled(on)

    def _default_name(self, suffix: str) -> str:
        a = self.session.adata
        sid = str(a.uns["histoviz"].get("slide_id", "slide")) if a is not None else "slide"
        mv = self.maps.current
        spec = str(mv.spec).replace(":", "_").replace("/", "_").replace("@", "_") if mv else "map"
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

    @reports_errors("Could not export GeoJSON", default=None)
    def export_geojson(self, path: str | Path) -> Path | None:
        """Write the shown map as QuPath detections (one per patch), every patch included."""
        from histoviz.viz.export import write_geojson

        a, mv = self.session.adata, self.maps.current
        if a is None or mv is None:
            self.session.say("Show a map first.", error=True)
            return None
        out = write_geojson(a, path, maps=[mv.spec])
        self.session.say(f"Wrote {a.n_obs} detections to {out}.")
        return out

    @reports_errors("Could not export the OME-TIFF", default=None)
    def export_ome_tiff(self, path: str | Path, *, downsample: int | None = None) -> Path | None:
        """Write the shown map as a tiled pyramidal OME-TIFF aligned to the slide (every patch)."""
        from histoviz.viz.export import write_ome_tiff_heatmap

        a, mv = self.session.adata, self.maps.current
        if a is None or mv is None:
            self.session.say("Show a map first.", error=True)
            return None
        out = write_ome_tiff_heatmap(a, path, mv.spec, downsample=downsample)
        self.session.say(f"Wrote {mv.label} heatmap to {out}.")
        return out
