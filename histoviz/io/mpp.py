"""Microns per pixel from every source a slide records, compared.

A slide can state its resolution in several places: OpenSlide's vendor-parsed
``openslide.mpp-x``, the TIFF ``XResolution``/``ResolutionUnit`` tags, OME
``PhysicalSizeX``, the Aperio description's ``MPP =`` and, indirectly, the objective power
(about ``10 / objective`` um/px). :func:`resolve_mpp` picks one value by a fixed priority,
warns when sources disagree by more than :data:`DISAGREEMENT` and refuses values outside
:data:`PLAUSIBLE_MPP`, saying why.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DISAGREEMENT",
    "MAX_UPSAMPLE",
    "PLAUSIBLE_MPP",
    "MppResolution",
    "check_mpp_value",
    "override_disagreement",
    "resolve_mpp",
    "tiff_mpp_sources",
]

#: slide scans lie between 40x-80x oil (~0.1 um/px) and a 1x overview (~10 um/px); Space Ranger's
#: low-resolution tissue image, which stands in for the slide of a stripped Visium folder, is
#: ~14 um/px, so the upper bound is 20 (a bogus 49 um/px resolution tag is still refused)
PLAUSIBLE_MPP = (0.1, 20.0)
#: relative difference between two sources that triggers a warning
DISAGREEMENT = 0.10
#: largest factor by which a target mpp may upsample the finest level (target >= slide / this)
MAX_UPSAMPLE = 2.0
#: sources in the order they are trusted; "objective" (10 / power) is only compared
PRIORITY = ("override", "given", "openslide", "dicom", "ome", "aperio", "tiff-resolution")

_UM_PER_UNIT = {2: 25400.0, 3: 10000.0}  # TIFF ResolutionUnit: inch, centimetre
_OME_SCALE = {"nm": 1e-3, "um": 1.0, "\u00b5m": 1.0, "\u03bcm": 1.0, "mm": 1e3, "cm": 1e4, "m": 1e6}


@dataclass(frozen=True)
class MppResolution:
    """Outcome of :func:`resolve_mpp`.

    Attributes
    ----------
    mpp, mpp_y
        Value used (``None``: no plausible source).
    source
        Name of the source used (``"none"`` when none).
    sources
        Every source's x value, plausible or not, in microns per pixel.
    warning
        Set when plausible sources disagree by more than :data:`DISAGREEMENT`.
    problem
        Why no value was used although some source gave one (all implausible).
    """

    mpp: float | None
    mpp_y: float | None
    source: str
    sources: dict[str, float] = field(default_factory=dict)
    warning: str = ""
    problem: str = ""


def _finite_positive(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) and f > 0 else None


def is_plausible(v: float | None) -> bool:
    """True for a finite value inside :data:`PLAUSIBLE_MPP`."""
    return v is not None and math.isfinite(v) and PLAUSIBLE_MPP[0] <= v <= PLAUSIBLE_MPP[1]


def check_mpp_value(v: Any, what: str) -> float:
    """Return ``v`` as a float or raise a ``ValueError`` saying why it cannot be an mpp.

    Parameters
    ----------
    v
        A candidate microns-per-pixel value (e.g. ``--mpp-override``).
    what
        How the value is named in the message (``"--mpp-override"``).
    """
    f = _finite_positive(v)
    if f is None:
        raise ValueError(f"{what} must be a finite number > 0 (microns per pixel), got {v!r}")
    if not is_plausible(f):
        raise ValueError(
            f"{what} = {f:g} um/px is outside the plausible range {PLAUSIBLE_MPP[0]}-"
            f"{PLAUSIBLE_MPP[1]:g} um/px of a slide scan (0.25 at 40x, 0.5 at 20x); check the value"
        )
    return f


def override_disagreement(value: float, sources: dict[str, float]) -> str:
    """A warning when an mpp override differs from what the slide itself records (by more than
    :data:`DISAGREEMENT`), naming both values; ``""`` when it agrees or the slide records none.

    Examples
    --------
    >>> override_disagreement(0.25, {"aperio": 0.499})
    "the mpp override 0.25 um/px differs from the slide's own 0.499 um/px (aperio) by 50%; keep it only if the file's value is wrong"
    >>> override_disagreement(0.5, {"aperio": 0.499, "objective": 0.5})
    ''
    """
    own = {k: v for k, v in sources.items() if k not in ("override", "given") and is_plausible(_finite_positive(v))}
    order = [k for k in PRIORITY if k in own] + sorted(k for k in own if k not in PRIORITY)
    for k in order:
        v = float(own[k])
        if abs(value - v) / v > DISAGREEMENT:
            return (f"the mpp override {value:g} um/px differs from the slide's own {v:.3g} um/px ({k}) by "
                    f"{abs(value - v) / v:.0%}; keep it only if the file's value is wrong")
    return ""


def resolve_mpp(
    sources: dict[str, tuple[float | None, float | None]], objective_power: float | None = None
) -> MppResolution:
    """Choose an mpp from the sources a slide records.

    Parameters
    ----------
    sources
        ``name -> (mpp_x, mpp_y)`` as read from the file (any value; ``None`` when absent).
    objective_power
        Scanner objective (``20`` for 20x), compared as ``10 / power`` um/px but never used.

    Returns
    -------
    :class:`MppResolution`.
    """
    xs = {k: _finite_positive(v[0]) for k, v in sources.items()}
    listed = {k: v for k, v in xs.items() if v is not None}
    obj = _finite_positive(objective_power)
    if obj is not None:
        listed["objective"] = round(10.0 / obj, 6)
    plausible = {k: v for k, v in listed.items() if is_plausible(v)}
    order = [k for k in PRIORITY if k in plausible and k in xs]
    order += sorted(k for k in plausible if k not in order and k != "objective")
    if not order:
        bad = {k: v for k, v in listed.items() if k != "objective"}
        problem = ""
        if bad:
            problem = "; ".join(f"{k} says {v:g} um/px" for k, v in bad.items())
            problem += (f", outside the plausible {PLAUSIBLE_MPP[0]}-{PLAUSIBLE_MPP[1]:g} um/px "
                        "of a slide scan (often a default DPI tag)")
        return MppResolution(None, None, "none", listed, "", problem)
    src = order[0]
    mpp = plausible[src]
    my = _finite_positive(sources[src][1])
    mpp_y = my if is_plausible(my) else mpp
    far = {k: v for k, v in plausible.items() if abs(v - mpp) / mpp > DISAGREEMENT}
    warning = ""
    if far:
        others = ", ".join(f"{k} {v:g}" for k, v in far.items())
        warning = (f"mpp sources disagree by more than {DISAGREEMENT:.0%}: {src} {mpp:g} vs "
                   f"{others} um/px; using {mpp:g} from {src} (pass --mpp-override if that is wrong)")
    return MppResolution(mpp, mpp_y, src, listed, warning, "")


def tiff_mpp_sources(tf: Any, page: Any) -> dict[str, tuple[float | None, float | None]]:
    """Resolution from a TIFF's OME metadata, Aperio description and resolution tags.

    Parameters
    ----------
    tf
        An open ``tifffile.TiffFile``.
    page
        Its level-0 page.
    """
    out: dict[str, tuple[float | None, float | None]] = {}
    ome = getattr(tf, "ome_metadata", None) if getattr(tf, "is_ome", False) else None
    if ome:
        mx = re.search(r'PhysicalSizeX="([^"]+)"', ome)
        my = re.search(r'PhysicalSizeY="([^"]+)"', ome)
        unit = re.search(r'PhysicalSizeXUnit="([^"]+)"', ome)
        scale = _OME_SCALE.get(unit.group(1) if unit else "um", 1.0)
        if mx:
            x = _finite_positive(mx.group(1))
            y = _finite_positive(my.group(1)) if my else x
            out["ome"] = (x * scale if x else None, y * scale if y else None)
    desc = page.description or ""
    m = re.search(r"MPP\s*=\s*([0-9.eE+-]+)", desc)
    if m:
        out["aperio"] = (_finite_positive(m.group(1)),) * 2
    tags = page.tags
    unit_tag = tags.get("ResolutionUnit")
    xres, yres = tags.get("XResolution"), tags.get("YResolution")
    if unit_tag is not None and xres is not None:
        try:
            unit = int(unit_tag.value)
            num, den = xres.value
        except (TypeError, ValueError):
            unit, num, den = 0, 0, 0
        if unit in _UM_PER_UNIT and num:
            x = _UM_PER_UNIT[unit] * den / num
            y = x
            if yres is not None:
                try:
                    yn, yd = yres.value
                    y = _UM_PER_UNIT[unit] * yd / yn if yn else x
                except (TypeError, ValueError):
                    y = x
            out["tiff-resolution"] = (x, y)
    return out
