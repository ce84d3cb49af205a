"""npe2 sample data: File > Open Sample > histoviz.

Both samples return the slide layer (which names its prediction file in its metadata) and a
first map; the "Prediction maps" widget is docked and picks the predictions up, so every map
and the patch panel work at once. Files are made on first use and cached
(:func:`histoviz.viz.demo.sample_files`).
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["real_sample", "synthetic_sample"]

logger = logging.getLogger(__name__)


def _dock_widget() -> None:
    try:
        import napari

        viewer = napari.current_viewer()
        if viewer is not None and hasattr(viewer.window, "add_plugin_dock_widget"):
            viewer.window.add_plugin_dock_widget("histoviz", "Prediction maps")
    except Exception as e:  # noqa: BLE001 - docking is a convenience; never fail the sample
        logger.info("could not dock the histoviz widget: %s", e)


def _sample(kind: str, first_map: str) -> list[tuple[Any, dict[str, Any], str]]:
    from histoviz.viz.demo import sample_files
    from napari_plugin._reader import read_predictions_file

    _slide, pred = sample_files(kind)
    layers = read_predictions_file(str(pred), first_map=first_map)
    _dock_widget()
    return layers


def synthetic_sample() -> list[tuple[Any, dict[str, Any], str]]:
    """A synthetic slide (known ground truth) with predictions; first map: MKI67."""
    return _sample("synthetic", "gene:MKI67")


def real_sample() -> list[tuple[Any, dict[str, Any], str]]:
    """The shipped Aperio SVS (CMU-1-Small-Region) with simulated maps; first map: tumour weight."""
    return _sample("real", "cell_type:tumour")
