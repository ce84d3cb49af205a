"""What the panels of the "Prediction maps" widget share: the predictions shown and the slide
layer they sit on (:class:`Session`), and how a panel action reports problems
(:func:`reports_errors`).

Each panel owns its own state (the map panel its map layers and display settings, the
inspector its selection, the regions panel its shapes...) and listens to the session: a new
set of predictions (``changed``), a new placement on the slide (``moved``, e.g. after an mpp
is entered) or nothing shown any more (``changed`` with ``adata is None``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import QObject, Signal

from histoviz.errors import HistovizError

if TYPE_CHECKING:
    import anndata as ad
    import napari

    from histoviz.viz.maps import PatchLayout, PredictionMaps
    from napari_plugin._layers import SlideInfo

__all__ = ["Session", "reports_errors"]

logger = logging.getLogger(__name__)


def reports_errors(action: str, default: Any = False) -> Callable:
    """Turn exceptions of a panel action into a red message (user errors) or a logged bug; the
    panel has a ``session`` to say it through."""

    def deco(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return fn(self, *args, **kwargs)
            except HistovizError as e:
                self.session.say(f"{action}: {e}", error=True)
            except Exception as e:  # noqa: BLE001 - a GUI must keep working; report and go on
                logger.exception("histoviz widget: %s failed", action)
                self.session.say(f"{action} failed unexpectedly ({type(e).__name__}: {e}).", error=True)
            return default

        return wrapper

    return deco


class Session(QObject):
    """The predictions shown and their slide; panels read it and listen to its signals.

    Signals
    -------
    changed()
        Other predictions are shown (or none: ``adata is None``).
    moved()
        The same predictions sit elsewhere (slide layer, its scale or translate changed).
    said(str, bool)
        A status message and whether it is an error.
    warned(object)
        The warning about the predictions shown (``None``: none).
    """

    changed = Signal()
    moved = Signal()
    said = Signal(str, bool)
    warned = Signal(object)

    def __init__(self, viewer: napari.viewer.Viewer, owner: int) -> None:
        super().__init__()
        self.viewer = viewer
        self.owner = owner
        self.adata: ad.AnnData | None = None
        self.maps: PredictionMaps | None = None
        self.layout: PatchLayout | None = None
        self.info: SlideInfo | None = None
        self.slide: Any = None
        self.source = ""
        self.generation = 0
        self.message = ""
        self.message_is_error = False
        self.warning: str | None = None
        self._connections: list[tuple[Any, Callable]] = []

    # ---- viewer events -------------------------------------------------------------------------
    def on_layers(self, event: str, callback: Callable) -> None:
        """Connect ``callback`` to ``viewer.layers.events.<event>`` until :meth:`detach`."""
        emitter = getattr(self.viewer.layers.events, event)
        emitter.connect(callback)
        self._connections.append((emitter, callback))

    def detach(self) -> None:
        """Disconnect every panel from the viewer (the widget is closing)."""
        for emitter, callback in self._connections:
            with contextlib.suppress(Exception):
                emitter.disconnect(callback)
        self._connections.clear()

    # ---- messages ------------------------------------------------------------------------------
    def say(self, text: str, *, error: bool = False) -> None:
        """Show ``text`` in the widget's status line (red for errors) and log it."""
        self.message, self.message_is_error = text, error
        (logger.warning if error else logger.info)("%s", text)
        with contextlib.suppress(RuntimeError):  # widget deleted
            self.said.emit(text, error)

    def warn(self, text: str | None) -> None:
        """Set (or with ``None`` clear) the warning about the predictions shown."""
        self.warning = text or None
        if text:
            logger.warning("%s", text)
        with contextlib.suppress(RuntimeError):
            self.warned.emit(self.warning)

    # ---- state ---------------------------------------------------------------------------------
    def geometry(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """World ``(scale, translate)`` of one level-0 pixel of the slide (pixels without one)."""
        if self.info is not None:
            return self.info.scale, self.info.translate
        return (1.0, 1.0), (0.0, 0.0)

    def source_file(self) -> str | None:
        """The prediction file shown, when the predictions came from one (not from a model run)."""
        return self.source if self.source and Path(self.source).is_file() else None

    def show(self, adata: ad.AnnData, maps: PredictionMaps, layout: PatchLayout, *, info: SlideInfo | None,
             slide: Any, source: str) -> None:
        """Make ``adata`` the predictions shown and tell the panels."""
        self.generation += 1
        self.adata, self.maps, self.layout = adata, maps, layout
        self.info, self.slide, self.source = info, slide, source
        self.changed.emit()

    def place(self, info: SlideInfo | None, slide: Any) -> None:
        """The same predictions on another slide layer (or the same one, rescaled)."""
        self.info, self.slide = info, slide
        self.moved.emit()

    def clear(self) -> None:
        """Nothing is shown any more: every panel forgets what belonged to the predictions."""
        if self.adata is None and self.slide is None:
            return
        self.generation += 1
        self.adata = self.maps = self.layout = None
        self.info = self.slide = None
        self.source = ""
        self.warn(None)
        self.changed.emit()
