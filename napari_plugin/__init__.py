"""napari plugin of histoviz: open slides, show prediction maps on the tissue, export them.

A thin adapter over :mod:`histoviz` (npe2 manifest: ``napari.yaml``):

- reader (:mod:`napari_plugin._reader`): slides as lazy multiscale layers in micrometres, and
  histoviz prediction ``.h5ad`` files;
- widget (:class:`napari_plugin._widget.PredictionWidget`): load or compute predictions, pick a
  map, click a patch, export;
- sample data (:mod:`napari_plugin._sample_data`) and writers (:mod:`napari_plugin._writer`).
"""

from __future__ import annotations

from histoviz._version import __version__

__all__ = ["__version__"]
