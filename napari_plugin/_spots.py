"""Spots in napari: circles of the true spot diameter on the slide, measured beside predicted.

- :func:`spot_reader`: the reader for spot files (``histoviz st-import`` / HEST-style ``.h5ad``,
  measured expression only) and per-spot prediction files (``histoviz predict --spots``:
  measured and predicted);
- the layers: the slide, and a Points layer per side whose points are discs of the spot
  diameter in world units, coloured by one gene; with predictions, a second copy of the slide
  sits to the right of the first with the predicted values (each side its own colour range);
- :class:`SpotWidget`: pick the gene shown on both sides (and see their Pearson r across spots).

Everything computed lives in :mod:`histoviz.viz.spots`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtWidgets import QComboBox, QLabel, QVBoxLayout, QWidget

from napari_plugin._layers import META_KEY, slide_info_from_reader, slide_layer_data

if TYPE_CHECKING:
    import napari

__all__ = ["SpotWidget", "read_spot_file", "spot_layer_data", "spot_reader"]

logger = logging.getLogger(__name__)
ROLE_SPOTS = "spots"
GAP = 0.05  # fraction of the slide width between the measured and the predicted copy


def spot_reader(path: str | os.PathLike) -> Any:
    """``read_spot_file`` for a spot ``.h5ad``, else ``None``."""
    from histoviz.viz.spots import is_spot_file

    return read_spot_file if str(path).lower().endswith(".h5ad") and is_spot_file(path) else None


def _limits(v: np.ndarray) -> tuple[float, float]:
    f = v[np.isfinite(v)]
    if not f.size:
        return 0.0, 1.0
    lo, hi = (float(x) for x in np.percentile(f, [1, 99]))
    if not hi > lo:
        lo, hi = float(f.min()) - 0.5, float(f.max()) + 0.5
    return lo, hi


def spot_layer_data(view: Any, gene: str, which: str, *, scale: tuple[float, float] = (1.0, 1.0),
                    translate: tuple[float, float] = (0.0, 0.0), units: Any = None) -> tuple[np.ndarray, dict[str, Any], str]:
    """Points layer data of one side (``which``: ``measured`` or ``predicted``)."""
    from histoviz.viz.spots import spots_to_world

    vals = view.values(gene, which)
    if vals is None:
        vals = np.full(len(view.centres), np.nan)
    world, size = spots_to_world(view.centres, view.diameter, scale, translate)
    lo, hi = _limits(vals)
    kwargs: dict[str, Any] = {
        "name": f"{which} {gene}",
        "size": size,
        "features": {"value": vals},
        "face_color": "value",
        "face_colormap": "inferno",
        "face_contrast_limits": (lo, hi),
        "border_width": 0,
        "opacity": 0.9,
        "metadata": {META_KEY: {"role": ROLE_SPOTS, "which": which, "gene": gene, "source": view.source,
                                "diameter_px": float(view.diameter)}},
    }
    if units:
        kwargs["units"] = units
    return world, kwargs, "points"


def read_spot_file(path: str | list[str], *, gene: str | None = None, side_by_side: bool = True) -> list[Any]:
    """Layers of a spot file: the slide (twice, side by side, when there are predictions) and the
    measured / predicted spots coloured by ``gene`` (default: the most variable measured gene)."""
    from histoviz.io import open_slide
    from histoviz.viz.spots import SpotView

    p = path[0] if isinstance(path, (list, tuple)) else path
    view = SpotView.read(p)
    gene = gene or view.default_gene()
    layers: list[Any] = []
    scale, translate, units, width = (1.0, 1.0), (0.0, 0.0), None, float(view.centres[:, 0].max() + view.diameter)
    if view.slide_path:
        reader = open_slide(view.slide_path)
        info = slide_info_from_reader(reader)
        scale, translate, units = info.scale, info.translate, info.units
        width = info.dimensions[0] * info.scale[1]
        layers.append(slide_layer_data(reader, predictions=str(Path(p).resolve())))
    else:
        logger.warning("%s: its slide is not on this machine; showing the spots alone", p)
    sides = ["measured"] if view.measured is not None else []
    if view.predicted is not None:
        sides.append("predicted")
    for k, which in enumerate(sides):
        shift = (translate[0], translate[1] + (k * width * (1 + GAP) if side_by_side else 0.0))
        if k and view.slide_path and side_by_side:
            data, kw, kind = slide_layer_data(open_slide(view.slide_path))
            kw = {**kw, "name": f"{kw['name']} ({which})", "translate": shift}
            layers.append((data, kw, kind))
        layers.append(spot_layer_data(view, gene, which, scale=scale, translate=shift, units=units))
    return layers


def _spot_layers(viewer: Any) -> list[Any]:
    out = []
    for layer in viewer.layers:
        meta = layer.metadata.get(META_KEY, {}) if isinstance(layer.metadata, dict) else {}
        if meta.get("role") == ROLE_SPOTS:
            out.append(layer)
    return out


class SpotWidget(QWidget):
    """Gene picker for the spot layers of a viewer (measured and predicted sides together).

    Parameters
    ----------
    napari_viewer
        The viewer (injected by napari).

    Notes
    -----
    Scriptable: :meth:`show_gene` colours every spot layer by a gene and returns whether one
    had it; :meth:`refresh` relists the genes after layers are added.
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self._views: dict[str, Any] = {}
        self.combo = QComboBox()
        self.combo.setEditable(True)
        self.info = QLabel("")
        self.info.setWordWrap(True)
        lay = QVBoxLayout(self)
        lay.addWidget(QLabel("Gene (measured | predicted spots)"))
        lay.addWidget(self.combo)
        lay.addWidget(self.info)
        lay.addStretch(1)
        self.combo.currentTextChanged.connect(self.show_gene)
        napari_viewer.layers.events.inserted.connect(lambda *_: self.refresh())
        self.refresh()

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
        """Colour every spot layer by ``gene``; False when no layer has it."""
        done = False
        views = []
        for layer in _spot_layers(self.viewer):
            meta = layer.metadata[META_KEY]
            v = self._view(layer)
            views.append(v)
            vals = None if v is None else v.values(gene, meta["which"])
            if vals is None:
                continue
            layer.features = {"value": vals}
            layer.face_contrast_limits = _limits(vals)
            layer.face_color = "value"
            layer.refresh_colors()
            layer.name = f"{meta['which']} {gene}"
            meta["gene"] = gene
            done = True
        r = next((v.pearson(gene) for v in views if v is not None and v.predicted is not None), float("nan"))
        self.info.setText(f"Pearson r, measured vs predicted across these spots: {r:.3f}" if np.isfinite(r) else "")
        if self.combo.currentText() != gene:
            self.combo.blockSignals(True)
            self.combo.setCurrentText(gene)
            self.combo.blockSignals(False)
        return done
