"""Neural building blocks below the models: fit loop, batching, losses, pooling, attention.

- :mod:`histoviz.nn.loop`: :class:`~histoviz.nn.loop.BagBatcher` (padded bag batches) and
  :func:`~histoviz.nn.loop.train_module` (AdamW, validation-based selection, early stopping);
- :mod:`histoviz.nn.losses`: masked MSE, negative binomial, InfoNCE, the discrete-time
  survival NLL and cross-entropy helpers;
- :mod:`histoviz.nn.abmil`: gated attention MIL pooling and mean pooling.

Every submodule imports torch; importing this package does not.
"""

from __future__ import annotations

__all__: list[str] = []
