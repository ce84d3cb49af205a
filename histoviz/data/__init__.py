"""Cohort tables, omics tables, spatial datasets and the synthetic cohort generator.

Submodules are imported on use (``histoviz.data.synthetic``, ``histoviz.data.cohort``, ...),
so importing this package stays light.
"""

from __future__ import annotations

__all__: list[str] = []
