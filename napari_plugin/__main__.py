"""``python -m napari_plugin --set-default-reader``: make histoviz napari's reader for slides.

napari's builtin reader also claims ``.svs`` and ``.tif``; with two candidates, ``napari
SLIDE.svs`` asks which to use. This writes napari's reader preference (Preferences >
Plugins > File extension readers) so slide files open with histoviz: lazily, as a multiscale
pyramid in micrometres. ``--unset`` removes histoviz's entries again. Equivalent one-off:
``napari --plugin histoviz SLIDE.svs``.
"""

from __future__ import annotations

import argparse
import logging
import sys

__all__ = ["SLIDE_PATTERNS", "main", "set_default_reader"]

logger = logging.getLogger(__name__)

#: extensions histoviz opens as slides (OME-TIFF included through *.tif / *.tiff)
SLIDE_PATTERNS = ("*.svs", "*.ndpi", "*.mrxs", "*.scn", "*.bif", "*.vms", "*.vmu", "*.svslide",
                  "*.tif", "*.tiff", "*.btf", "*.h5ad")


def set_default_reader(enable: bool = True) -> dict[str, str]:
    """Set (or with ``enable=False`` remove) histoviz as napari's reader for slide files.

    Returns the new ``extension -> reader`` preferences (saved in napari's settings file).
    """
    from napari.settings import get_settings

    settings = get_settings()
    prefs = dict(settings.plugins.extension2reader)
    for pat in SLIDE_PATTERNS:
        if enable:
            prefs[pat] = "histoviz"
        elif prefs.get(pat) == "histoviz":
            del prefs[pat]
    settings.plugins.extension2reader = prefs
    settings.save()
    return prefs


def main(argv: list[str] | None = None) -> int:
    """Command-line entry."""
    ap = argparse.ArgumentParser(prog="python -m napari_plugin", description=__doc__.splitlines()[0])
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--set-default-reader", action="store_true", help="open slides with histoviz")
    g.add_argument("--unset", action="store_true", help="remove histoviz's reader preferences")
    a = ap.parse_args(argv)
    prefs = set_default_reader(enable=a.set_default_reader)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    mine = sorted(k for k, v in prefs.items() if v == "histoviz")
    logger.info("histoviz is napari's reader for: %s", ", ".join(mine) if mine else "nothing")
    return 0


if __name__ == "__main__":
    sys.exit(main())
