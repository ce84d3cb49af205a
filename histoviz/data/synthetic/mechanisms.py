"""Mechanism knobs of the synthetic generator: each switches one paper's mechanism on or off, so
that a comparison can come out either way (a generator in which the favoured method cannot lose,
or cannot win, proves nothing). At their defaults nothing changes: the cohort is byte for byte
the one made without the knob (no random draw of an existing stream moves).

=================== ======= =====================================================================
knob                default what it does
=================== ======= =====================================================================
focal_share         0       > 0: grade and survival are driven by a per-patient latent ``z ~ U(0,
                            1)`` (``focal_latent`` in ``truth/patients.csv``) that the slide
                            shows **only inside a focal region** covering this share of the
                            tissue (1: the whole tissue, diffuse; 0.01: a lesion of 1%). The
                            region has a fixed, recognisable tint (it can be found) and a second
                            tint whose strength is ``z`` (what it says); tumour content no longer
                            drives the outcome. Mean pooling dilutes the region by its share;
                            attention can find it (ABMIL vs mean pooling).
hidden_visibility   0       With ``hidden_factor`` > 0: the hidden per-patient factor ``h`` of the
                            gene groups becomes visible in the tumour's cytoplasm through a
                            non-linear map, a tint ``visibility * tanh(1.5 h)`` (0: hidden, as
                            before; 1: fully visible). PathGen's synthesised gene groups can only
                            carry what the slide shows.
composition_signal  1       Share of bulk expression driven by cell composition (log scale): 1 =
                            the prototype sum (as before); 0 = a composition-free profile shifted
                            gene by gene by a per-patient factor ``psi`` that the slide shows as
                            a tint of all tissue (``visible_factor`` in ``truth/patients.csv``).
                            CPNN's prototype bottleneck fits the first, not the second.
modality_shared     1       Share of the protein and miRNA signal read from the gene programmes the
                            genes share (1, as before); the rest, ``1 - modality_shared``, reads a
                            per-patient factor ``xi`` that the genes do not carry but the slide
                            shows (a tint of all tissue; ``modality_factor`` in
                            ``truth/patients.csv``). Multi-task learning can borrow only what
                            the modalities share.
reference_mismatch  0       Log-normal noise of this SD on the prototypes of the written
                            scRNA reference (``reference_sc.h5ad``): 0 = the reference matches
                            the tissue's cell types; 1 = a mismatched reference.
spot_interface      0       Spots: a third of the signal genes rise by ``exp(2 * spot_interface *
                            b)``, ``b = exp(-((f - 0.5) / 0.15)^2)`` of the spot's tumour-cell
                            share ``f`` (an interface programme, highest where tumour meets
                            stroma): a non-linear, non-monotone morphology-to-expression map
                            (linear spot models cannot follow it).
=================== ======= =====================================================================

MTL vs STL is also swept with the existing ``missing_fraction`` (patients per non-gene
modality); patients per modality and spots per sample with ``n_slides`` and ``slide_size``. The oracles that
check each knob works live in :mod:`histoviz.data.synthetic.oracles`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = [
    "FOCAL_MARK",
    "FOCAL_SIGNAL",
    "KNOB_DEFAULTS",
    "focal_mask",
    "interface_genes",
    "mix_shared",
    "patient_latents",
    "slide_shift",
    "validate_knobs",
]

#: defaults of the knobs (a manifest lists a knob only when it is set)
KNOB_DEFAULTS: dict[str, float] = {
    "focal_share": 0.0,
    "hidden_visibility": 0.0,
    "composition_signal": 1.0,
    "modality_shared": 1.0,
    "reference_mismatch": 0.0,
    "spot_interface": 0.0,
}
#: optical-density tints (R, G, B) added to the cytoplasm / matrix of the label grid
FOCAL_MARK = np.array([0.30, 0.00, 0.10])  # the focal region's own tint: found whatever z is
FOCAL_SIGNAL = np.array([0.00, 0.25, 0.00])  # times z: what the focal region says
_HIDDEN_TINT = np.array([0.00, 0.00, 0.20])  # times visibility * tanh(1.5 h), tumour only
_PSI_TINT = np.array([0.15, 0.00, 0.00])  # times tanh(psi), all tissue
_PSI_SCALE = 0.8  # log-expression loading scale of psi
_XI_TINT = np.array([0.00, 0.15, 0.00])  # times tanh(xi), all tissue


def validate_knobs(cfg: Any, bad: Callable[[str, str], Exception]) -> None:
    """Check and normalise the knob fields of ``cfg`` (a ``SyntheticConfig`` being built; raises
    ``bad(name, why)``)."""
    ranges = {"focal_share": (0.0, 1.0), "hidden_visibility": (0.0, 1.0), "composition_signal": (0.0, 1.0),
              "modality_shared": (0.0, 1.0), "reference_mismatch": (0.0, 3.0), "spot_interface": (0.0, 3.0)}
    for name, (lo, hi) in ranges.items():
        val = getattr(cfg, name)
        if not isinstance(val, (int, float)) or isinstance(val, bool) or not lo <= val <= hi:
            raise bad(name, f"must be a number in [{lo:g}, {hi:g}]")
        object.__setattr__(cfg, name, float(val))
    if cfg.hidden_visibility > 0 and cfg.hidden_factor <= 0:
        raise bad("hidden_visibility", "needs hidden_factor > 0 (it shows the hidden factor in the slides)")


def patient_latents(cfg: Any, n_patients: int) -> dict[str, np.ndarray]:
    """Per-patient latents of the knobs that are on: ``focal`` (``z``), ``hidden`` (``h``, the
    same draws as the gene groups' hidden factor) and ``psi``."""
    from histoviz.data.synthetic.render import _rng

    out: dict[str, np.ndarray] = {}
    if cfg.focal_share > 0:
        out["focal"] = _rng(cfg.seed, "focal-latent").uniform(0.0, 1.0, n_patients)
    if cfg.hidden_visibility > 0:
        out["hidden"] = _rng(cfg.seed, "hidden").standard_normal(n_patients)
    if cfg.composition_signal < 1:
        out["psi"] = _rng(cfg.seed, "visible-factor").standard_normal(n_patients)
    if cfg.modality_shared < 1:
        out["xi"] = _rng(cfg.seed, "modality-factor").standard_normal(n_patients)
    return out


def focal_mask(rng: np.random.Generator, labels: np.ndarray, share: float) -> np.ndarray:
    """A compact region of ``share`` of the tissue cells of a label grid: the tissue cells
    nearest a random tissue cell (all tissue when ``share`` is 1)."""
    tissue = labels > 0
    if share >= 1.0 or not tissue.any():
        return tissue.copy()
    ys, xs = np.nonzero(tissue)
    k = int(rng.integers(len(ys)))
    d = (ys - ys[k]) ** 2 + (xs - xs[k]) ** 2
    n = max(1, int(round(share * len(ys))))
    keep = np.argsort(d, kind="stable")[:n]
    mask = np.zeros_like(tissue)
    mask[ys[keep], xs[keep]] = True
    return mask


def slide_shift(cfg: Any, slide_index: int, latents: dict[str, float]
                ) -> tuple[Callable[[np.ndarray], np.ndarray | None], dict[str, Any]] | None:
    """The tint a slide's patient carries, as a function of the slide's label grid returning an
    ``(h, w, 3)`` optical-density shift (``None``: no knob on). The second item collects truth
    arrays (``focal``: the focal region on the label grid)."""
    from histoviz.data.synthetic.render import TISSUE_TYPES, _rng

    if not latents:
        return None
    extra: dict[str, Any] = {}

    def shift(labels: np.ndarray) -> np.ndarray | None:
        out = np.zeros(labels.shape + (3,))
        tissue = labels > 0
        if "focal" in latents:
            m = focal_mask(_rng(cfg.seed, "focal-region", slide_index), labels, cfg.focal_share)
            extra["focal"] = m
            out[m] += FOCAL_MARK + latents["focal"] * FOCAL_SIGNAL
        if "hidden" in latents:
            tum = labels == TISSUE_TYPES.index("tumour")
            out[tum] += cfg.hidden_visibility * math.tanh(1.5 * latents["hidden"]) * _HIDDEN_TINT
        if "psi" in latents:
            out[tissue] += math.tanh(latents["psi"]) * _PSI_TINT
        if "xi" in latents:
            out[tissue] += math.tanh(latents["xi"]) * _XI_TINT
        return out

    return shift, extra


def mix_shared(cfg: Any, shared: np.ndarray, xi: np.ndarray | None, layer: str, j: int) -> np.ndarray:
    """A protein / miRNA signal: ``shared`` (read from the gene programmes) as is when
    ``modality_shared`` is 1, else ``s * shared + (1 - s) * load * sd(shared) * tanh(xi)`` with a
    per-target loading of random sign (the modality's own factor, at the shared part's scale)."""
    from histoviz.data.synthetic.render import _rng

    s = cfg.modality_shared
    if s >= 1 or xi is None:
        return shared
    load = _rng(cfg.seed, "modality-factor-load", ("protein", "mirna").index(layer), j).uniform(0.8, 1.2)
    sign = 1.0 if _rng(cfg.seed, "modality-factor-sign", ("protein", "mirna").index(layer), j).random() < 0.5 else -1.0
    own = sign * load * float(np.std(shared)) * np.tanh(np.asarray(xi, np.float64)) / 0.63  # sd(tanh(N(0,1))) ~ 0.63
    return s * shared + (1.0 - s) * own


def interface_genes(signal: np.ndarray) -> np.ndarray:
    """Indices of the genes of the spot interface programme: every third signal gene."""
    return np.flatnonzero(signal)[::3]


def interface_multiplier(cfg: Any, signal: np.ndarray, tumour_share: np.ndarray) -> np.ndarray | None:
    """``(n_spots, n_genes)`` multipliers of spot expression (``None`` when the knob is off)."""
    if cfg.spot_interface <= 0:
        return None
    b = np.exp(-(((np.asarray(tumour_share, np.float64) - 0.5) / 0.15) ** 2))
    mult = np.ones((len(b), len(signal)))
    mult[:, interface_genes(signal)] = np.exp(2.0 * cfg.spot_interface * b)[:, None]
    return mult


def bulk_mean(cfg: Any, cells: np.ndarray, prototypes: np.ndarray, signal: np.ndarray,
              psi: np.ndarray | None) -> np.ndarray | None:
    """Bulk expected counts with ``composition_signal < 1`` (``None`` when 1): on the log scale,
    ``c`` times the prototype sum plus ``1 - c`` times the composition-free profile (the
    cohort-mean mix, same cell count) shifted by ``psi`` with per-gene loadings."""
    from histoviz.data.synthetic.render import _rng

    c = cfg.composition_signal
    if c >= 1 or psi is None:
        return None
    n = cells.sum(axis=1, keepdims=True)
    mix = cells.sum(axis=0) / max(cells.sum(), 1e-12)
    comp = cells @ prototypes
    free = (n * mix[None, :]) @ prototypes
    load = _rng(cfg.seed, "visible-factor-loadings").normal(0.0, 1.0, prototypes.shape[1]) * signal
    log_mu = c * np.log(np.maximum(comp, 1e-12)) + (1 - c) * (np.log(np.maximum(free, 1e-12))
                                                             + _PSI_SCALE * np.asarray(psi)[:, None] * load[None, :])
    return np.exp(log_mu)


def reference_prototypes(cfg: Any, prototypes: np.ndarray) -> np.ndarray:
    """The prototypes the scRNA reference is drawn around (perturbed with ``reference_mismatch``)."""
    from histoviz.data.synthetic.render import _rng

    if cfg.reference_mismatch <= 0:
        return prototypes
    noise = _rng(cfg.seed, "reference-mismatch").normal(0.0, cfg.reference_mismatch, prototypes.shape)
    return prototypes * np.exp(noise)
