"""Spots in napari: circles of the true spot diameter on the slide, measured beside predicted.

- :func:`spot_reader`: the reader for spot files (``histoviz st-import`` / HEST-style ``.h5ad``,
  measured expression only) and per-spot prediction files (``histoviz predict --spots``:
  measured and predicted);
- the layers (:func:`spot_layers`): the slide, and a Points layer per side whose points are
  discs of the spot diameter in world units, coloured by one gene on **one** colour scale for
  both sides (so equal colours mean equal values); with predictions, a second copy of the slide
  sits to the right of the first; a label above each side names it, its gene and unit; napari's
  colour bar shows the shared scale;
- :class:`SpotWidget`: pick the gene shown on both sides (symbols when the import had them), see
  the colour bar with its limits and unit and the Pearson r across spots, and move the spots to
  the section's full-resolution image when the file was imported on the small tissue image.

Everything computed lives in :mod:`histoviz.viz.spots` and :func:`histoviz.viz.maps.display_range`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_plugin._layers import META_KEY, esc, slide_info_from_reader, slide_layer_data

if TYPE_CHECKING:
    import napari

__all__ = ["SpotWidget", "read_spot_file", "spot_layer_data", "spot_layers", "spot_reader"]

logger = logging.getLogger(__name__)
ROLE_SPOTS = "spots"
ROLE_SPOT_LABELS = "spot-labels"
ROLE_SPOT_SCALE = "spot-colour-scale"
ROLE_SPOT_SLIDE = "spot-slide"
GAP = 0.05  # fraction of the slide width between the measured and the predicted copy
CMAP = "inferno"
UNIT = "log1p(normalised counts)"


def spot_reader(path: str | os.PathLike) -> Any:
    """``read_spot_file`` for a spot ``.h5ad``, else ``None``."""
    from histoviz.viz.spots import is_spot_file

    return read_spot_file if str(path).lower().endswith(".h5ad") and is_spot_file(path) else None


def shared_limits(view: Any, gene: str) -> tuple[float, float]:
    """One contrast range for the measured and predicted values of ``gene``
    (:func:`histoviz.viz.maps.display_range` of both together)."""
    from histoviz.viz.maps import display_range

    vals = [v for v in (view.values(gene, "measured"), view.values(gene, "predicted")) if v is not None]
    return display_range(np.concatenate(vals) if vals else np.array([0.0, 1.0])).limits


def _side_title(view: Any, gene: str, which: str) -> str:
    model = f" ({view.model})" if which == "predicted" and view.model else ""
    return f"{which} {gene}{model}"


def spot_layer_data(view: Any, gene: str, which: str, *, scale: tuple[float, float] = (1.0, 1.0),
                    translate: tuple[float, float] = (0.0, 0.0), units: Any = None,
                    limits: tuple[float, float] | None = None) -> tuple[np.ndarray, dict[str, Any], str]:
    """Points layer data of one side (``which``: ``measured`` or ``predicted``) on the colour
    range ``limits`` (default: :func:`shared_limits`)."""
    from histoviz.viz.spots import spots_to_world

    vals = view.values(gene, which)
    if vals is None:
        vals = np.full(len(view.centres), np.nan)
    world, size = spots_to_world(view.centres, view.diameter, scale, translate)
    kwargs: dict[str, Any] = {
        "name": f"{which} {gene}",
        "size": size,
        "features": {"value": vals},
        "face_color": "value",
        "face_colormap": CMAP,
        "face_contrast_limits": limits or shared_limits(view, gene),
        "border_width": 0,
        "opacity": 0.9,
        "metadata": {META_KEY: {"role": ROLE_SPOTS, "which": which, "gene": gene, "source": view.source,
                                "diameter_px": float(view.diameter), "slide_path": view.slide_path}},
    }
    if units:
        kwargs["units"] = units
    return world, kwargs, "points"


def spot_layers(view: Any, gene: str | None = None, *, side_by_side: bool = True,
                predictions: str | None = None) -> list[Any]:
    """Layer data of a :class:`~histoviz.viz.spots.SpotView`: the slide (twice, side by side,
    with predictions), the spots of each side on one colour scale, a label above each side and
    a colour-scale layer whose napari colour bar shows the shared range."""
    from histoviz.io import open_slide

    gene = gene or view.default_gene()
    layers: list[Any] = []
    c = np.asarray(view.centres, np.float64)
    scale, translate, units = (1.0, 1.0), (0.0, 0.0), None
    width = float(c[:, 0].max() + view.diameter)
    if view.slide_path:
        reader = open_slide(view.slide_path)
        info = slide_info_from_reader(reader)
        scale, translate, units = info.scale, info.translate, info.units
        width = info.dimensions[0] * info.scale[1]
        data, kw, kind = slide_layer_data(reader, predictions=predictions)
        kw["metadata"][META_KEY]["spot_slide"] = True
        layers.append((data, kw, kind))
    else:
        logger.warning("%s: its slide is not on this machine; showing the spots alone", view.source)
    sides = ["measured"] if view.measured is not None else []
    if view.predicted is not None:
        sides.append("predicted")
    lim = shared_limits(view, gene)
    top = (float(c[:, 1].min()) - 1.5 * view.diameter) * scale[0] + translate[0]
    left = (float(c[:, 0].min()) - view.diameter / 2) * scale[1]
    label_pos, label_text = [], []
    for k, which in enumerate(sides):
        shift = (translate[0], translate[1] + (k * width * (1 + GAP) if side_by_side else 0.0))
        if k and view.slide_path and side_by_side:
            data, kw, kind = slide_layer_data(open_slide(view.slide_path))
            kw = {**kw, "name": f"{kw['name']} ({which})", "translate": shift}
            kw["metadata"][META_KEY].update(role=ROLE_SPOT_SLIDE, spot_slide=True)
            layers.append((data, kw, kind))
        layers.append(spot_layer_data(view, gene, which, scale=scale, translate=shift, units=units, limits=lim))
        label_pos.append((max(top, translate[0]), shift[1] + left))
        label_text.append(_side_title(view, gene, which))
    if sides:
        size = max(view.diameter * scale[0], 1e-6)
        layers.append((np.full((1, 1), np.nan, np.float32), {
            "name": f"colour scale: {gene} ({UNIT})", "colormap": CMAP, "contrast_limits": lim, "opacity": 0.0,
            "scale": (size, size), "translate": (label_pos[0][0], label_pos[0][1]),
            "metadata": {META_KEY: {"role": ROLE_SPOT_SCALE, "source": view.source, "gene": gene}},
            **({"units": units} if units else {})}, "image"))
        layers.append((np.asarray(label_pos, np.float64), {
            "name": "spot panels", "size": 0.0, "face_color": "transparent", "border_width": 0.0,
            "features": {"title": label_text},
            "text": {"string": "{title}", "color": "white", "size": 11, "anchor": "upper_left",
                     "translation": (-size, 0.0)},
            "metadata": {META_KEY: {"role": ROLE_SPOT_LABELS, "source": view.source}},
            **({"units": units} if units else {})}, "points"))
    return layers


def read_spot_file(path: str | list[str], *, gene: str | None = None, side_by_side: bool = True) -> list[Any]:
    """Layers of a spot file (see :func:`spot_layers`); default gene: the most variable measured one."""
    from histoviz.viz.spots import SpotView

    p = path[0] if isinstance(path, (list, tuple)) else path
    view = SpotView.read(p)
    return spot_layers(view, gene, side_by_side=side_by_side, predictions=str(Path(p).resolve()))


def _role_layers(viewer: Any, *roles: str) -> list[Any]:
    out = []
    for layer in viewer.layers:
        meta = layer.metadata.get(META_KEY, {}) if isinstance(layer.metadata, dict) else {}
        if meta.get("role") in roles:
            out.append(layer)
    return out


def _spot_layers(viewer: Any) -> list[Any]:
    return _role_layers(viewer, ROLE_SPOTS)


class SpotWidget(QWidget):
    """Gene picker for the spot layers of a viewer (measured and predicted sides together).

    Parameters
    ----------
    napari_viewer
        The viewer (injected by napari).

    Notes
    -----
    Scriptable: :meth:`show_gene` colours every spot layer by a gene and returns whether one
    had it; :meth:`refresh` relists the genes after layers are added;
    :meth:`use_full_resolution` moves the spots to the section's full-resolution image.
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self._views: dict[str, Any] = {}
        self.combo = QComboBox()
        self.combo.setEditable(True)
        self.title = QLabel("")
        self.title.setWordWrap(True)
        self.colorbar = QLabel()
        self.colorbar.setFixedHeight(14)
        self.colorbar.setScaledContents(True)
        self.cbar_lo, self.cbar_hi = QLabel(""), QLabel("")
        self.cbar_hi.setAlignment(Qt.AlignRight)
        self.info = QLabel("")
        self.info.setWordWrap(True)
        self.btn_full = QPushButton("Full-resolution image…")
        self.btn_full.setToolTip("The section's full-resolution image: the spots move onto it (scaled by the ratio "
                                 "of the image sizes)")
        self.btn_full.clicked.connect(self._choose_full)
        lay = QVBoxLayout(self)
        lay.addWidget(QLabel("Gene (measured | predicted spots, one colour scale)"))
        lay.addWidget(self.combo)
        lay.addWidget(self.title)
        lay.addWidget(self.colorbar)
        ends = QHBoxLayout()
        ends.addWidget(self.cbar_lo)
        ends.addWidget(self.cbar_hi)
        lay.addLayout(ends)
        lay.addWidget(self.info)
        lay.addWidget(self.btn_full)
        lay.addStretch(1)
        self.combo.currentTextChanged.connect(self.show_gene)
        napari_viewer.layers.events.inserted.connect(lambda *_: self.refresh())
        self.refresh()
        if self.combo.currentText():
            self.show_gene(self.combo.currentText())

    def _view(self, layer: Any) -> Any:
        from histoviz.viz.spots import SpotView

        src = layer.metadata[META_KEY].get("source")
        if not src:
            return None
        if src not in self._views:
            self._views[src] = SpotView.read(src)
        return self._views[src]

    def refresh(self) -> None:
        """Relist the genes of the viewer's spot layers."""
        genes: list[str] = []
        for layer in _spot_layers(self.viewer):
            v = self._view(layer)
            if v is not None:
                genes += [g for g in v.genes if g not in genes]
        shown = [la.metadata[META_KEY].get("gene") for la in _spot_layers(self.viewer)]
        current = self.combo.currentText() or next((g for g in shown if g), "")
        self.combo.blockSignals(True)
        self.combo.clear()
        self.combo.addItems(genes)
        if current in genes:
            self.combo.setCurrentText(current)
        self.combo.blockSignals(False)

    def show_gene(self, gene: str) -> bool:
        """Colour every spot layer by ``gene`` on one colour scale; False when no layer has it."""
        done = False
        views = []
        lim = None
        for layer in _spot_layers(self.viewer):
            v = self._view(layer)
            views.append(v)
            if v is not None and v.values(gene, layer.metadata[META_KEY]["which"]) is not None:
                lim = shared_limits(v, gene)
                break
        for layer in _spot_layers(self.viewer):
            meta = layer.metadata[META_KEY]
            v = self._view(layer)
            vals = None if v is None else v.values(gene, meta["which"])
            if vals is None or lim is None:
                continue
            layer.features = {"value": vals}
            layer.face_contrast_limits = lim
            layer.face_color = "value"
            layer.refresh_colors()
            layer.name = f"{meta['which']} {gene}"
            meta["gene"] = gene
            done = True
        if done:
            for layer in _role_layers(self.viewer, ROLE_SPOT_LABELS):
                v = self._views.get(layer.metadata[META_KEY].get("source"))
                if v is not None:
                    sides = [s for s in ("measured", "predicted")
                             if (v.measured if s == "measured" else v.predicted) is not None]
                    layer.features = {"title": [_side_title(v, gene, s) for s in sides][: len(layer.data)]}
                    layer.refresh_text()
            for layer in _role_layers(self.viewer, ROLE_SPOT_SCALE):
                layer.contrast_limits = lim
                layer.name = f"colour scale: {gene} ({UNIT})"
                layer.colorbar.visible = True
            self._draw_colorbar(gene, lim)
        r = next((v.pearson(gene) for v in views if v is not None and v.predicted is not None), float("nan"))
        self.info.setText(f"Pearson r, measured vs predicted across these spots: {r:.3f}" if np.isfinite(r) else "")
        if self.combo.currentText() != gene:
            self.combo.blockSignals(True)
            self.combo.setCurrentText(gene)
            self.combo.blockSignals(False)
        return done

    def _draw_colorbar(self, gene: str, lim: tuple[float, float]) -> None:
        from napari.utils.colormaps import ensure_colormap

        from napari_plugin._display import colormap_pixmap

        self.colorbar.setPixmap(colormap_pixmap(ensure_colormap(CMAP)))
        self.title.setText(f"<b>{esc(gene)}</b> ({esc(UNIT)}), measured and predicted")
        self.cbar_lo.setText(f"{lim[0]:.3g}")
        self.cbar_hi.setText(f"{lim[1]:.3g}")

    def colorbar_text(self) -> tuple[str, str, str]:
        """``(title, low end, high end)`` of the colour bar as shown."""
        import re

        return re.sub("<[^>]+>", "", self.title.text()), self.cbar_lo.text(), self.cbar_hi.text()

    def _choose_full(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Full-resolution image of the section")
        if path:
            self.use_full_resolution(path)

    def use_full_resolution(self, slide: str | Path) -> bool:
        """Show the spots of every spot file in the viewer on ``slide``, the full-resolution
        image of their section (:meth:`histoviz.viz.spots.SpotView.on_full_resolution`)."""
        from histoviz.errors import HistovizError

        gene = self.combo.currentText() or None
        done = False
        for src in {la.metadata[META_KEY].get("source") for la in _spot_layers(self.viewer)}:
            view = self._views.get(src)
            if view is None:
                continue
            try:
                full = view.on_full_resolution(slide)
            except HistovizError as e:
                self.info.setText(f"<span style='color:#e0475b'>{esc(str(e))}</span>")
                return False
            for layer in list(self.viewer.layers):
                meta = layer.metadata.get(META_KEY, {}) if isinstance(layer.metadata, dict) else {}
                if meta.get("source") == src or meta.get("spot_slide"):
                    self.viewer.layers.remove(layer)
            self._views[src] = full
            for data, kw, kind in spot_layers(full, gene):
                getattr(self.viewer, f"add_{kind}")(data, **kw)
            done = True
        if done:
            self.viewer.reset_view()
            self.show_gene(gene or self.combo.currentText())
        return done
