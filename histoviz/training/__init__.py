"""Fit loops, losses, configs, cross-validation and checkpoints of the slide-level models.

Entry points: :func:`histoviz.training.config.load_config` and
:func:`histoviz.training.runner.run_experiment` (what ``histoviz train`` calls);
:func:`histoviz.training.checkpoint.load_checkpoint` rebuilds a fitted model without pickle.
Submodules are imported on use so that importing this package stays light.
"""

from __future__ import annotations

__all__: list[str] = []
