"""Configs and cross-validation runners of the slide- and spot-level models.

Entry points: :func:`histoviz.training.config.load_config` and
:func:`histoviz.training.runner.run_experiment` (what ``histoviz train`` calls);
:func:`histoviz.models.checkpoint.load_checkpoint` rebuilds a fitted model without pickle.
Submodules are imported on use so that importing this package stays light.
"""

from __future__ import annotations

__all__: list[str] = []
