"""The "Display" box of the "Prediction maps" widget: colormap, opacity, contrast, threshold,
colour bar (with the map's limits and unit) and category legend.

It holds no state about maps: the map panel tells it what is shown (:meth:`DisplayPanel.show_map`)
and listens to its signals; what the user sets is remembered per map by the map panel.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import Qt, Signal
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QVBoxLayout,
)

from napari_plugin._layers import esc

if TYPE_CHECKING:
    from histoviz.viz.maps import MapValues

__all__ = ["DisplayPanel", "colormap_pixmap"]


def colormap_pixmap(colormap: Any) -> QPixmap:
    """A napari colormap as a 256 x 8 pixmap (left: low, right: high), for colour bars."""
    rgba = np.asarray(colormap.map(np.linspace(0.0, 1.0, 256)), dtype=np.float64)
    row = np.ascontiguousarray(np.repeat((rgba[None, :, :3] * 255).astype(np.uint8), 8, axis=0))
    img = QImage(row.data, row.shape[1], row.shape[0], row.strides[0], QImage.Format_RGB888).copy()
    return QPixmap.fromImage(img)


class DisplayPanel(QGroupBox):
    """Display controls of the shown map.

    Signals
    -------
    colormap_changed(str), opacity_changed(float), clim_changed(float, float), auto_clicked(),
    threshold_changed(bool, float): what the user did.
    """

    colormap_changed = Signal(str)
    opacity_changed = Signal(float)
    clim_changed = Signal(float, float)
    auto_clicked = Signal()
    threshold_changed = Signal(bool, float)

    def __init__(self) -> None:
        from superqt import QLabeledDoubleRangeSlider, QLabeledDoubleSlider

        from histoviz.viz.colors import CONTINUOUS_COLORMAPS

        super().__init__("Display")
        form = QFormLayout(self)
        self.cmap_combo = QComboBox()
        self.cmap_combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.cmap_combo.setMinimumContentsLength(10)
        self.cmap_combo.addItems(list(CONTINUOUS_COLORMAPS))
        self.cmap_combo.currentTextChanged.connect(lambda t: t and self.colormap_changed.emit(t))
        form.addRow("Colormap", self.cmap_combo)
        self.opacity = QSlider(Qt.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(75)
        self.opacity.valueChanged.connect(lambda v: self.opacity_changed.emit(v / 100.0))
        form.addRow("Opacity", self.opacity)
        self.clim = QLabeledDoubleRangeSlider(Qt.Horizontal)
        self.clim.setDecimals(3)
        self.clim.setRange(0.0, 1.0)
        self.clim.setValue((0.0, 1.0))
        self.clim.valueChanged.connect(self._on_clim)
        self.btn_auto = QPushButton("Auto")
        self.btn_auto.setToolTip("Back to this map's default range (robust 1st-99th percentile, or the "
                                 "range its output declares, e.g. 0-1 for probabilities)")
        self.btn_auto.clicked.connect(self.auto_clicked.emit)
        row = QHBoxLayout()
        row.addWidget(self.clim, 1)
        row.addWidget(self.btn_auto)
        form.addRow("Contrast", row)
        self.thr_check = QCheckBox("Hide below")
        self.thr_check.setToolTip("Show only patches at or above the threshold; the slide shows through elsewhere")
        self.thr_check.toggled.connect(self._on_threshold)
        self.thr_slider = QLabeledDoubleSlider(Qt.Horizontal)
        self.thr_slider.setDecimals(3)
        self.thr_slider.setRange(0.0, 1.0)
        self.thr_slider.setValue(0.5)
        self.thr_slider.valueChanged.connect(self._on_threshold)
        row = QHBoxLayout()
        row.addWidget(self.thr_check)
        row.addWidget(self.thr_slider, 1)
        form.addRow("Threshold", row)
        cb = QVBoxLayout()
        self.title = QLabel("")
        self.title.setWordWrap(True)
        self.title.setTextFormat(Qt.RichText)
        cb.addWidget(self.title)
        self.colorbar = QLabel()
        self.colorbar.setFixedHeight(14)
        self.colorbar.setScaledContents(True)
        cb.addWidget(self.colorbar)
        ends = QHBoxLayout()
        self.cbar_lo = QLabel("")
        self.cbar_hi = QLabel("")
        self.cbar_hi.setAlignment(Qt.AlignRight)
        ends.addWidget(self.cbar_lo)
        ends.addWidget(self.cbar_hi)
        cb.addLayout(ends)
        self.legend = QLabel("")
        self.legend.setWordWrap(True)
        self.legend.setTextFormat(Qt.RichText)
        cb.addWidget(self.legend)
        form.addRow(cb)
        self._continuous = False

    # ---- what the user did ----------------------------------------------------------------------
    def _on_clim(self, value: tuple[float, float]) -> None:
        lo, hi = (float(v) for v in value)
        if hi > lo:
            self.clim_changed.emit(lo, hi)

    def _on_threshold(self, *_: Any) -> None:
        self.threshold_changed.emit(self.thr_check.isChecked(), float(self.thr_slider.value()))

    # ---- what is shown -------------------------------------------------------------------------
    def clear(self) -> None:
        """Nothing shown: no title, colour bar or legend."""
        self._continuous = False
        self.title.setText("")
        self.legend.setText("")
        self.cbar_lo.setText("")
        self.cbar_hi.setText("")
        self.colorbar.setVisible(False)
        self.set_enabled(False)

    def set_enabled(self, has_maps: bool) -> None:
        """Enable the controls that apply to the shown map."""
        cont = has_maps and self._continuous
        for w in (self.cmap_combo, self.clim, self.btn_auto, self.thr_check, self.thr_slider):
            w.setEnabled(cont)
        self.opacity.setEnabled(has_maps)

    def show_map(self, mv: MapValues, layer: Any, *, threshold: float | None, data_range: tuple[float, float]) -> None:
        """Show the controls of ``mv`` drawn by ``layer`` (an Image or Labels layer)."""
        self._continuous = not mv.categorical
        self.title.setText(f"<b>{esc(mv.title)}</b>")
        if mv.categorical:
            from histoviz.viz.colors import legend_entries

            self.colorbar.setVisible(False)
            self.cbar_lo.setText("")
            self.cbar_hi.setText("")
            rows = "".join(
                f'<span style="background-color:#{r:02x}{g:02x}{b:02x}">&nbsp;&nbsp;&nbsp;&nbsp;'
                f"</span>&nbsp;{esc(name)}&nbsp;&nbsp; "
                for name, (r, g, b) in legend_entries(mv.categories)
            )
            self.legend.setText(rows)
            self.set_enabled(True)
            return
        self.legend.setText("")
        self.cmap_combo.blockSignals(True)
        name = layer.colormap.name
        if self.cmap_combo.findText(name) < 0:
            self.cmap_combo.addItem(name)
        self.cmap_combo.setCurrentText(name)
        self.cmap_combo.blockSignals(False)
        lo, hi = data_range
        if not hi > lo:
            hi = lo + 1.0
        self.thr_slider.blockSignals(True)
        self.thr_check.blockSignals(True)
        self.thr_slider.setRange(lo, hi)
        self.thr_slider.setValue(threshold if threshold is not None else (0.5 if mv.is_probability else (lo + hi) / 2))
        self.thr_check.setChecked(threshold is not None)
        self.thr_slider.blockSignals(False)
        self.thr_check.blockSignals(False)
        self.sync_clim(layer)
        self.draw_colorbar(layer)
        self.set_enabled(True)

    def sync_clim(self, layer: Any) -> None:
        """Show ``layer``'s contrast limits on the slider and at the ends of the colour bar."""
        lo, hi = (float(v) for v in layer.contrast_limits)
        rlo, rhi = (float(v) for v in layer.contrast_limits_range)
        self.clim.blockSignals(True)
        self.clim.setRange(min(rlo, lo), max(rhi, hi))
        self.clim.setValue((lo, hi))
        self.clim.blockSignals(False)
        self.cbar_lo.setText(f"{lo:.3g}")
        self.cbar_hi.setText(f"{hi:.3g}")

    def draw_colorbar(self, layer: Any) -> None:
        """Draw ``layer``'s colormap as the colour bar."""
        self.colorbar.setPixmap(colormap_pixmap(layer.colormap))
        self.colorbar.setVisible(True)

    def colorbar_text(self) -> tuple[str, str, str]:
        """``(title, low end, high end)`` as shown (for tests and screenshots)."""
        import html
        import re

        return html.unescape(re.sub("<[^>]+>", "", self.title.text())), self.cbar_lo.text(), self.cbar_hi.text()
