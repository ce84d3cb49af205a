"""Pieces of the PathGen model (:mod:`histoviz.models.slide.pathgen`): the networks, the per-gene
scaling and reproducible per-slide sampling.

Not a model file (the leading underscore keeps the registry from importing it as one).
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from histoviz.errors import DataError

__all__ = ["GeneScaling", "build_net", "patch_seeds", "randn_per_slide", "slide_seed"]


@dataclass
class GeneScaling:
    """Per-gene scaling of the gene-group vector, fitted on training patients.

    ``minmax`` (PathGen: each gene to ``[0, 1]`` over the training patients) or ``zscore``.
    ``clip`` is the range the diffusion's predicted ``x0`` is kept in while sampling: the
    training range widened by half its span on each side.
    """

    kind: str
    a: np.ndarray
    b: np.ndarray
    clip: tuple[float, float]

    @classmethod
    def fit(cls, kind: str, values: np.ndarray) -> GeneScaling:
        """Fit on ``(n_train, m)`` values (rows of patients with expression)."""
        v = np.asarray(values, np.float64)
        if len(v) < 2:
            raise DataError(f"{len(v)} training patient(s) with expression; gene scaling needs at least 2")
        if kind == "minmax":
            a, hi = v.min(axis=0), v.max(axis=0)
            b = hi - a
        elif kind == "zscore":
            a, b = v.mean(axis=0), v.std(axis=0)
        else:
            raise DataError(f"scaling must be 'minmax' or 'zscore', got {kind!r}")
        b = np.where(b > 1e-8, b, 1.0)
        s = (v - a) / b
        lo, hi = float(s.min()), float(s.max())
        span = max(hi - lo, 1e-6)
        return cls(kind, a, b, (lo - 0.5 * span, hi + 0.5 * span))

    def forward(self, values: np.ndarray) -> np.ndarray:
        """Block values -> scaled."""
        return (np.asarray(values, np.float64) - self.a) / self.b

    def inverse(self, scaled: np.ndarray) -> np.ndarray:
        """Scaled -> block values."""
        return np.asarray(scaled, np.float64) * self.b + self.a

    def to_state(self, prefix: str = "scale") -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """JSON metadata and arrays (``<prefix>_a``, ``<prefix>_b``)."""
        return {"kind": self.kind, "clip": list(self.clip)}, {f"{prefix}_a": self.a, f"{prefix}_b": self.b}

    @classmethod
    def from_state(cls, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray], prefix: str = "scale") -> GeneScaling:
        """Inverse of :meth:`to_state`."""
        c = meta["clip"]
        return cls(str(meta["kind"]), np.asarray(arrays[f"{prefix}_a"], np.float64),
                   np.asarray(arrays[f"{prefix}_b"], np.float64), (float(c[0]), float(c[1])))


def slide_seed(bag: np.ndarray, seed: int) -> int:
    """A seed from the slide's features (and ``seed``): the same slide gets the same synthesised
    expression whatever else is predicted with it."""
    crc = zlib.crc32(np.ascontiguousarray(bag, dtype=np.float32).tobytes())
    return int(np.random.SeedSequence([int(seed), crc]).generate_state(1)[0])


def patch_seeds(bag: np.ndarray, seed: int) -> list[int]:
    """One seed per patch of a slide (derived from the slide's seed and the patch index)."""
    base = slide_seed(bag, seed)
    return [int(s) for s in np.random.SeedSequence([base, 1]).generate_state(len(bag))]


def randn_per_slide(seeds: Sequence[int], rows_per_seed: int, width: int, device: Any) -> Any:
    """``randn(shape)`` drawing rows ``b * rows_per_seed .. `` from slide ``b``'s own generator."""
    import torch

    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]

    def randn(shape: tuple[int, ...]) -> Any:
        if shape != (len(gens) * rows_per_seed, width):
            raise ValueError(f"unexpected sample shape {shape}")
        return torch.cat([torch.randn((rows_per_seed, width), generator=g) for g in gens]).to(device)

    return randn


def build_net(arch: Mapping[str, Any]) -> Any:
    """The ``ModuleDict`` of an architecture description: ``denoiser`` (diffusion) and / or
    ``mcat`` (co-attention grade and survival)."""
    from torch import nn

    from histoviz.nn.coattention import GeneGroupMCAT
    from histoviz.nn.diffusion import GeneGroupDenoiser

    mods: dict[str, nn.Module] = {}
    groups = [list(map(int, g)) for g in arch["groups"]]
    if arch.get("denoiser"):
        d = arch["denoiser"]
        mods["denoiser"] = GeneGroupDenoiser(arch["in_dim"], groups, arch["n_genes"], dim=d["dim"], heads=d["heads"],
                                             blocks=d["blocks"], dropout=d["dropout"], enc_layers=d["enc_layers"])
    if arch.get("mcat"):
        c = arch["mcat"]
        mods["mcat"] = GeneGroupMCAT(arch["in_dim"], groups, dim=c["dim"], heads=c["heads"], tf_heads=c["tf_heads"],
                                     layers=c["layers"], snn_layers=c["snn_layers"], dropout=c["dropout"],
                                     n_classes=c["n_classes"], n_bins=c["n_bins"])
    return nn.ModuleDict(mods)
