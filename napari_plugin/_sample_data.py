"""npe2 sample data: File > Open Sample > histoviz.

Both samples return the slide layer and a first map (the map layer names its prediction file
in its metadata); the "Prediction maps" widget is docked and picks the predictions up, so every
map, the patch inspector and the slide-level prediction work at once.

- "synthetic": a synthetic slide with maps predicted by models trained on a small synthetic
  cohort (CPNN expression and composition; ABMIL grade and survival with split-conformal
  uncertainty), built on first use (about a minute) and cached (:func:`histoviz.samples.synthetic_sample`);
- "real": the shipped Aperio SVS with *simulated* maps (every map name says so).
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


def _notify(text: str) -> None:
    try:
        from napari.utils.notifications import show_info

        show_info(text)
    except Exception:  # noqa: BLE001 - a notification is a convenience
        logger.info("%s", text)


def _open(pred: Any, first_map: str) -> list[tuple[Any, dict[str, Any], str]]:
    from napari_plugin._reader import read_predictions_file

    layers = read_predictions_file(str(pred), first_map=first_map)
    _dock_widget()
    return layers


def synthetic_sample() -> list[tuple[Any, dict[str, Any], str]]:
    """A synthetic slide with maps from models trained on synthetic slides; first map: risk."""
    from histoviz.samples import synthetic_sample as build

    return _open(build(echo=_notify).predictions, "risk")


def real_sample() -> list[tuple[Any, dict[str, Any], str]]:
    """The shipped Aperio SVS (CMU-1-Small-Region) with simulated maps; first map: simulated tumour weight."""
    from histoviz.samples import real_sample as build

    return _open(build().predictions, "cell_type:tumour")
