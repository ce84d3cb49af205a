"""histoviz: predict molecular profiles from H&E whole-slide images and show them on the tissue.

The top-level import is light (no torch); subpackages load what they need on first use.
"""

from __future__ import annotations

from histoviz._version import __version__
from histoviz.errors import HistovizError

__all__ = ["HistovizError", "__version__", "open_slide"]


def open_slide(*args, **kwargs):
    """Open a slide; see :func:`histoviz.io.open_slide`."""
    from histoviz.io import open_slide as _open

    return _open(*args, **kwargs)
