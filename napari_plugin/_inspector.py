"""Patch inspector and slide-level prediction panels of the "Prediction maps" widget.

Both only draw what :mod:`histoviz.viz.summary` returns (rows and frames from the output
registry, slide rows from the tasks' slide summaries): no field name of a map lives here.
:class:`InspectorPanel` owns the selection: the selected patch, its summary and the outline
layer around it.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
from qtpy.QtCore import QSize, Qt
from qtpy.QtGui import QColor, QPainter
from qtpy.QtWidgets import QGroupBox, QLabel, QSizePolicy, QVBoxLayout, QWidget

from napari_plugin._layers import META_KEY, ROLE_SELECTION, esc
from napari_plugin._session import Session, reports_errors

__all__ = ["BarChart", "InspectorPanel", "PatchPanel", "SlidePredictionPanel"]

#: Frames with more columns than this show their top entries only.
MAX_BARS = 8


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


class BarChart(QWidget):
    """Horizontal bars with labels and values (composition, class probabilities)."""

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
        value_w = 48
        bar_w = max(10, w - label_w - value_w - 8)
        pal = self.palette()
        p.setPen(pal.color(pal.WindowText))
        for k, (name, v, col) in enumerate(self._items):
            y = 2 + k * self.ROW
            p.drawText(0, y, label_w - 4, self.ROW, int(Qt.AlignRight | Qt.AlignVCenter), name)
            frac = 0.0 if not np.isfinite(v) else min(max(v / self._vmax, 0.0), 1.0)
            p.fillRect(label_w, y + 3, int(bar_w * frac), self.ROW - 6, col)
            p.drawText(label_w + bar_w + 4, y, value_w, self.ROW, int(Qt.AlignLeft | Qt.AlignVCenter),
                       "–" if not np.isfinite(v) else f"{v:.3g}")
        p.end()


class PatchPanel(QWidget):
    """Everything predicted for the selected patch (rows, bar charts per frame, top genes)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._lay = QVBoxLayout(self)
        self._lay.setContentsMargins(0, 0, 0, 0)
        self.label = QLabel("Load predictions, then click on the tissue.")
        self.label.setWordWrap(True)
        self.label.setTextFormat(Qt.RichText)
        self.label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self._lay.addWidget(self.label)
        self.charts: dict[str, tuple[QLabel, BarChart]] = {}

    def clear(self, text: str = "No patch selected.") -> None:
        """Show ``text`` and no charts."""
        self.label.setText(text)
        for title, chart in self.charts.values():
            title.setVisible(False)
            chart.setVisible(False)

    def chart(self, label: str) -> BarChart | None:
        """The bar chart of a frame (by its registry label), when shown."""
        got = self.charts.get(label)
        return got[1] if got is not None and got[1].isVisible() else None

    def _chart(self, label: str) -> tuple[QLabel, BarChart]:
        if label not in self.charts:
            title = QLabel(f"<b>{esc(label)}</b>")
            chart = BarChart()
            self._lay.addWidget(title)
            self._lay.addWidget(chart)
            self.charts[label] = (title, chart)
        return self.charts[label]

    def show_summary(self, s: dict[str, Any]) -> None:
        """Show :func:`histoviz.viz.summary.patch_summary` of one patch."""
        from histoviz.viz.colors import category_colors

        lines = [f"<b>{esc(s['name'])}</b> (patch {s['index']})"
                 + (" <span style='color:#e0a040'>simulated values</span>" if s.get("simulated") else ""),
                 f"top-left x={s['x']}, y={s['y']} px, {s['size']} px wide (level 0)"]
        if s["centre_um"] is not None:
            cx, cy = s["centre_um"]
            lines.append(f"centre {cx:.1f}, {cy:.1f} µm")
        rows = "".join(
            f"<tr><td>{esc(r['label'])}</td><td align='right'>&nbsp;<b>{esc(_fmt(r['value']))}</b></td>"
            f"<td>&nbsp;{esc(r['unit'])}</td></tr>"
            for r in s["rows"]
        )
        if rows:
            lines.append(f"<table>{rows}</table>")
        if s["top_genes"]:
            genes = "".join(f"<tr><td>{esc(g)}</td><td align='right'>&nbsp;{v:.3f}</td></tr>"
                            for g, v in s["top_genes"])
            what = "top simulated genes" if s.get("simulated") else "top predicted genes"
            unit = s.get("top_genes_unit")
            lines.append(f"<b>{what}</b>" + (f" ({esc(unit)})" if unit else "") + f"<table>{genes}</table>")
        self.label.setText("<br>".join(lines))
        shown = set()
        for fr in s["frames"]:
            vals = {k: v for k, v in fr["values"].items() if np.isfinite(v)}
            if not vals:
                continue
            title, chart = self._chart(fr["label"])
            cols = category_colors(len(fr["values"]))
            order = {k: j for j, k in enumerate(fr["values"])}
            items = sorted(vals.items(), key=lambda kv: -kv[1])[:MAX_BARS]
            if fr["kind"] == "probability" and len(fr["values"]) <= MAX_BARS:
                items = list(vals.items())  # keep class order (grades) when all fit
            bars = [(k, v, tuple(int(c * 255) for c in cols[order[k]][:3])) for k, v in items]
            vmax = 1.0 if fr["kind"] == "probability" else max(abs(v) for _, v in items) or 1.0
            more = len(vals) - len(items)
            title.setText(f"<b>{esc(fr['label'])}</b>" + (f" (top {len(items)} of {len(vals)})" if more else ""))
            chart.set_items(bars, vmax=vmax)
            title.setVisible(True)
            chart.setVisible(True)
            shown.add(fr["label"])
        for label, (title, chart) in self.charts.items():
            if label not in shown:
                title.setVisible(False)
                chart.setVisible(False)


class SlidePredictionPanel(QLabel):
    """The slide-level prediction (grade with its conformal set, risk with its interval...)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWordWrap(True)
        self.setTextFormat(Qt.RichText)
        self.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.rows: list[dict[str, Any]] = []

    def show_rows(self, rows: list[dict[str, Any]], *, simulated: bool = False) -> None:
        """Show :func:`histoviz.viz.summary.slide_predictions` rows (nothing when empty)."""
        self.rows = list(rows)
        if not rows:
            self.setText("No slide-level prediction in this file." + (" The maps are simulated." if simulated else ""))
            return
        self.setText("<br>".join(esc(r["line"]) for r in rows))


class InspectorPanel:
    """The slide-level prediction and the patch inspector (two boxes, :attr:`slide_box` and
    :attr:`patch_box`, that the widget places); owns the selected patch and its outline layer
    (a click on the tissue selects the patch under it)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.viewer = session.viewer
        self.selected: int | None = None
        self.summary: dict[str, Any] | None = None
        self.outline: Any = None
        self.slide_box = QGroupBox("Slide-level prediction")
        v = QVBoxLayout(self.slide_box)
        self.slide_panel = SlidePredictionPanel()
        v.addWidget(self.slide_panel)
        self.patch_box = QGroupBox("Patch (click on the tissue)")
        v = QVBoxLayout(self.patch_box)
        self.patch_panel = PatchPanel()
        v.addWidget(self.patch_panel)
        session.changed.connect(self._on_changed)
        session.moved.connect(lambda: self._outline(self.selected))
        session.on_layers("removed", self._on_removed)

    def _on_changed(self) -> None:
        from histoviz.viz.summary import slide_predictions

        s = self.session
        self.select_patch(None)
        if s.adata is None:
            self.slide_panel.setText("")
            self.slide_panel.rows = []
            return
        self.slide_panel.show_rows(slide_predictions(s.maps), simulated=s.maps.simulated)

    def _on_removed(self, event: Any = None) -> None:
        if getattr(event, "value", None) is self.outline and self.outline is not None:
            self.outline = None
            self.selected = None
            self.summary = None
            with contextlib.suppress(RuntimeError):
                self.patch_panel.clear()

    def select_world(self, position: Any) -> int | None:
        """Select the patch under a world position ``(..., y, x)`` (a click); returns its index."""
        if self.session.layout is None:
            return None
        scale, translate = self.session.geometry()
        i = self.session.layout.patch_at_world(position, scale, translate)
        self.select_patch(i)
        return i

    @reports_errors("Could not show the patch", default=None)
    def select_patch(self, index: int | None) -> dict[str, Any] | None:
        """Show the patch panel for patch ``index`` (``None`` clears it) and outline the patch."""
        from histoviz.viz.summary import patch_summary

        s = self.session
        if s.adata is None or s.layout is None or index is None:
            self.selected = None
            self.summary = None
            self.patch_panel.clear("No patch selected." if s.adata is not None else
                                   "Load predictions, then click on the tissue.")
            self._outline(None)
            return None
        mpp = s.info.mpp if s.info is not None else None
        summary = patch_summary(s.maps, int(index), mpp=mpp)
        self.selected = int(index)
        self.summary = summary
        self.patch_panel.show_summary(summary)
        self._outline(int(index))
        return summary

    def _outline(self, index: int | None) -> None:
        layer = self.outline if self.outline is not None and self.outline in self.viewer.layers else None
        layout = self.session.layout
        if index is None or layout is None:
            if layer is not None:
                layer.data = []
            return
        x0, y0, x1, y1 = layout.patch_bounds(index)
        rect = np.array([[y0 - 0.5, x0 - 0.5], [y0 - 0.5, x1 - 0.5], [y1 - 0.5, x1 - 0.5],
                         [y1 - 0.5, x0 - 0.5]], dtype=float)
        scale, translate = self.session.geometry()
        width = max(1.0, layout.tile_size_level0 * 0.1)
        if layer is None:
            active = self.viewer.layers.selection.active
            kw: dict[str, Any] = {}
            info = self.session.info
            if info is not None and info.units:
                kw["units"] = info.units
            layer = self.viewer.add_shapes(
                [rect], shape_type="rectangle", edge_color="cyan", face_color="transparent",
                edge_width=width, name="selected patch", scale=scale, translate=translate,
                metadata={META_KEY: {"role": ROLE_SELECTION, "owner": self.session.owner}}, **kw,
            )
            self.outline = layer
            if active is not None and active in self.viewer.layers:
                self.viewer.layers.selection.active = active
        else:
            layer.scale = scale
            layer.translate = translate
            layer.data = [rect]
            layer.edge_width = width
            layer.edge_color = "cyan"
            layer.face_color = "transparent"
        self.to_top()

    def to_top(self) -> None:
        """Keep the outline above every other layer."""
        layer = self.outline
        if layer is not None and layer in self.viewer.layers:
            i = self.viewer.layers.index(layer)
            if i != len(self.viewer.layers) - 1:
                self.viewer.layers.move(i, len(self.viewer.layers))
