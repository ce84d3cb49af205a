"""Target blocks: the targets of one modality for a set of patients, as every model sees them.

:class:`TargetBlock` is the regression block of :mod:`histoviz.tasks` (the outcome blocks,
:class:`~histoviz.data.outcomes.ClassBlock` and :class:`~histoviz.data.outcomes.SurvivalBlock`,
live with the outcomes); :class:`OutputTransform` maps normalised values to a block's target
space (count models predict fractions); :func:`apply_transform` is the value transform
(``log10p1`` as in the multi-omics paper, ``log1p``, ``log2p1``, ``none``) shared by the omics
import, the output transform and the spot runner. The omics importer
(:mod:`histoviz.data.omics`) builds blocks; ``histoviz.data.omics`` still exports these names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from histoviz.errors import ConfigError, DataError
from histoviz.task_kinds import TaskKind

__all__ = ["TRANSFORMS", "OutputTransform", "TargetBlock", "apply_transform", "scale_label"]

TRANSFORMS = ("none", "log10p1", "log1p", "log2p1")
"""Value transforms: identity, ``log10(1+x)`` (paper), ``ln(1+x)``, ``log2(1+x)``."""


def apply_transform(x: np.ndarray, transform: str) -> np.ndarray:
    """Apply one of :data:`TRANSFORMS` elementwise (NaN stays NaN)."""
    x = np.asarray(x, dtype=np.float64)
    if transform == "none":
        return x.copy()
    if transform == "log10p1":
        return np.log10(1.0 + x)
    if transform == "log1p":
        return np.log1p(x)
    if transform == "log2p1":
        return np.log2(1.0 + x)
    raise ConfigError(f"unknown transform {transform!r}; choose from {list(TRANSFORMS)}")


def scale_label(normalize: str, target_sum: float, transform: str) -> str:
    """The unit of a modality's values after normalisation and transform, for colour bars.

    Examples
    --------
    >>> scale_label("total", 1e4, "log10p1"), scale_label("none", 1e4, "log2p1")
    ('log10(1 + CP10k)', 'log2(1 + value)')
    """
    if normalize == "total":
        base = {1e4: "CP10k", 1e5: "CP100k", 1e6: "CPM"}.get(float(target_sum), f"counts per {float(target_sum):g}")
    else:
        base = "value"
    fmt = {"none": "{}", "log10p1": "log10(1 + {})", "log1p": "ln(1 + {})", "log2p1": "log2(1 + {})"}
    if transform not in fmt:
        raise ConfigError(f"unknown transform {transform!r}; choose from {list(TRANSFORMS)}")
    out = fmt[transform].format(base)
    return "as in the omics table" if out == "value" else out


@dataclass
class OutputTransform:
    """Maps *normalised* values (post-``normalize``, pre-``transform``) to model targets.

    Count models (CPNN) predict expression fractions; ``apply(fractions * target_sum)``
    puts them into the same space as the targets every other model is trained and scored on.
    """

    transform: str
    target_sum: float
    mean: np.ndarray | None = None
    std: np.ndarray | None = None

    def apply(self, normalized: np.ndarray, columns: np.ndarray | None = None) -> np.ndarray:
        """Transform (and standardise) ``normalized``; ``columns`` picks a target subset."""
        y = apply_transform(np.clip(normalized, 0.0, None), self.transform)
        if self.mean is not None and self.std is not None:
            mu = self.mean if columns is None else self.mean[columns]
            sd = self.std if columns is None else self.std[columns]
            y = (y - mu) / sd
        return y

    def to_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """JSON-able metadata and arrays (for safetensors)."""
        arrays = {}
        if self.mean is not None:
            arrays = {"mean": np.asarray(self.mean), "std": np.asarray(self.std)}
        return {"transform": self.transform, "target_sum": float(self.target_sum)}, arrays

    @classmethod
    def from_state(cls, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> OutputTransform:
        """Inverse of :meth:`to_state`."""
        return cls(meta["transform"], float(meta["target_sum"]), arrays.get("mean"), arrays.get("std"))


@dataclass
class TargetBlock:
    """Targets of one modality for a set of patients, as models see them.

    Attributes
    ----------
    modality, targets
        Names.
    values
        ``(n, m)`` float32 processed targets (``NaN`` rows where ``present`` is False).
    present
        ``(n,)`` bool mask (the masked loss uses it).
    counts, library
        Raw counts of these targets and raw totals over the table (count modalities only).
    output
        :class:`OutputTransform` from normalised values to ``values`` (count modalities).
    """

    modality: str
    targets: list[str]
    values: np.ndarray
    present: np.ndarray
    counts: np.ndarray | None = None
    library: np.ndarray | None = None
    output: OutputTransform | None = None

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.float32)
        self.present = np.asarray(self.present, dtype=bool)
        if self.values.ndim != 2 or self.values.shape[1] != len(self.targets):
            raise DataError(
                f"{self.modality}: values {self.values.shape} do not match {len(self.targets)} targets"
            )
        if len(self.present) != len(self.values):
            raise DataError(f"{self.modality}: present mask has {len(self.present)} rows for {len(self.values)}")

    def subset(self, rows: np.ndarray) -> TargetBlock:
        """Rows (patients) ``rows``."""
        rows = np.asarray(rows)
        return TargetBlock(
            self.modality,
            self.targets,
            self.values[rows],
            self.present[rows],
            None if self.counts is None else self.counts[rows],
            None if self.library is None else self.library[rows],
            self.output,
        )

    def permuted(self, perm: np.ndarray) -> TargetBlock:
        """Same patients, labels reassigned by ``perm`` (the shuffled-label control)."""
        return self.subset(perm)

    @property
    def kind(self) -> str:
        """Task kind (:mod:`histoviz.tasks`): always ``"regression"``."""
        return TaskKind.REGRESSION

    @property
    def name(self) -> str:
        """Block name (the modality)."""
        return self.modality

    def __len__(self) -> int:
        return len(self.values)
