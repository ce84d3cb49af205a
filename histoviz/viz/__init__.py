"""Per-patch maps to arrays, colormaps and thumbnails. No Qt or Streamlit imports here."""

from __future__ import annotations

__all__: list[str] = []
