"""npe2 sample data: File > Open Sample > histoviz (a thin adapter over :mod:`histoviz.demo.samples`).

Both samples return the slide layer and a first map (the map layer names its prediction file
in its metadata); the "Prediction maps" widget is docked and picks the predictions up, so every
map, the patch inspector and the slide-level prediction work at once.

- "synthetic": a synthetic slide of a patient outside the training cohort, with maps predicted
  by models trained on a small synthetic cohort (CPNN expression and composition; ABMIL grade
  and survival with split-conformal uncertainty);
- "real" (the napari sample key; :data:`histoviz.demo.samples.SAMPLES` calls it
  ``svs-simulated``): the shipped Aperio SVS with *simulated* maps (every map name says so).

A sample not yet in the cache is built by :func:`histoviz.demo.samples.open_sample` in a fresh
process (about a minute for "synthetic"), never in the viewer's: its steps show in napari's
activity panel while the viewer keeps drawing.
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


def _sample(kind: str) -> Any:
    """The sample's files; a build runs in its own process, its steps in a napari progress bar."""
    from histoviz.demo.samples import cached_sample, open_sample

    if cached_sample(kind) is not None:
        return open_sample(kind)
    from napari.utils import progress
    from qtpy.QtWidgets import QApplication

    bar: Any = None

    def step(k: int, n: int, text: str) -> None:
        nonlocal bar
        if bar is None:
            bar = progress(total=n, desc=f"histoviz sample {kind!r} (first use, in its own process)")
        bar.set_description(f"histoviz sample {kind!r}: {text}")
        if k - 1 > bar.n:
            bar.update(k - 1 - bar.n)

    try:
        return open_sample(kind, on_progress=step, idle=QApplication.processEvents)
    finally:
        if bar is not None:
            bar.close()


def _open(pred: Any, first_map: str) -> list[tuple[Any, dict[str, Any], str]]:
    from napari_plugin._reader import read_predictions_file

    layers = read_predictions_file(str(pred), first_map=first_map)
    _dock_widget()
    return layers


def synthetic_sample() -> list[tuple[Any, dict[str, Any], str]]:
    """A synthetic slide with maps from models trained on synthetic slides; first map: risk."""
    return _open(_sample("synthetic").predictions, "risk")


def real_sample() -> list[tuple[Any, dict[str, Any], str]]:
    """napari's "real" sample: the shipped Aperio SVS with simulated maps; first map: simulated tumour weight."""
    return _open(_sample("svs-simulated").predictions, "cell_type:tumour")
