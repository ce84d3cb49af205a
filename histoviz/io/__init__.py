"""Slide reading, feature bags and prediction files.

``open_slide`` picks a backend (OpenSlide, tifffile, in-memory); ``FeatureBag`` is the
``<slide_id>.h5`` contract; ``predictions`` holds the per-slide ``.h5ad`` contract.
"""

from __future__ import annotations

from histoviz.io.featurebag import FeatureBag, FeatureBagWriter, is_complete_bag, read_bag_attrs
from histoviz.io.open import SLIDE_SUFFIXES, open_slide, slide_id_from_path
from histoviz.io.slide import SlideMeta, SlideReader

__all__ = [
    "SLIDE_SUFFIXES",
    "FeatureBag",
    "FeatureBagWriter",
    "SlideMeta",
    "SlideReader",
    "is_complete_bag",
    "open_slide",
    "read_bag_attrs",
    "slide_id_from_path",
]
