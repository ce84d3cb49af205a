"""Backend-agnostic whole-slide reading at a requested resolution.

All coordinates are level-0 pixels ``(x, y)`` with the origin at the top-left, as in OpenSlide.
Readers return RGB ``uint8`` arrays of shape ``(height, width, 3)``; pixels outside the slide
are white.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from histoviz.errors import ImplausibleMppError, MissingMppError

if TYPE_CHECKING:
    import dask.array as da

__all__ = ["SlideMeta", "SlideReader", "resize_rgb"]

#: relative tolerance when matching a requested mpp to a pyramid level
MPP_TOLERANCE = 0.02


@dataclass(frozen=True)
class SlideMeta:
    """Metadata of an opened slide.

    ``level_dimensions`` are ``(width, height)`` per level; ``mpp`` is microns per level-0
    pixel (``None`` when the file does not say); ``mpp_source`` says where it came from,
    ``mpp_sources`` what every source said (see :mod:`histoviz.io.mpp`), ``mpp_warning``
    whether they disagree and ``mpp_problem`` why a recorded value was refused.
    """

    path: str | None
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    mpp: float | None
    mpp_y: float | None = None
    objective_power: float | None = None
    vendor: str = "unknown"
    backend: str = "unknown"
    mpp_source: str = "none"
    properties: dict[str, str] = field(default_factory=dict, compare=False, repr=False)
    mpp_sources: dict[str, float] = field(default_factory=dict, compare=False)
    mpp_warning: str = ""
    mpp_problem: str = ""

    @property
    def dimensions(self) -> tuple[int, int]:
        """Level-0 ``(width, height)``."""
        return self.level_dimensions[0]

    @property
    def level_count(self) -> int:
        """Number of pyramid levels."""
        return len(self.level_dimensions)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly summary (used by ``histoviz info --json``)."""
        return {
            "path": self.path,
            "backend": self.backend,
            "vendor": self.vendor,
            "dimensions": list(self.dimensions),
            "level_count": self.level_count,
            "level_dimensions": [list(d) for d in self.level_dimensions],
            "level_downsamples": [round(float(d), 6) for d in self.level_downsamples],
            "mpp": self.mpp,
            "mpp_y": self.mpp_y,
            "mpp_source": self.mpp_source,
            "mpp_sources": dict(self.mpp_sources),
            "mpp_warning": self.mpp_warning,
            "mpp_problem": self.mpp_problem,
            "objective_power": self.objective_power,
        }


def resize_rgb(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an RGB uint8 image to ``size=(width, height)``.

    Downsampling uses box (area) filtering, upsampling bilinear; integer factors use
    PIL's fast ``reduce``.
    """
    from PIL import Image

    w, h = int(size[0]), int(size[1])
    if img.shape[1] == w and img.shape[0] == h:
        return img
    pil = Image.fromarray(np.ascontiguousarray(img))
    fx, fy = img.shape[1] / w, img.shape[0] / h
    if fx >= 1 and fy >= 1:
        if fx == fy and fx.is_integer() and img.shape[1] % w == 0:
            return np.asarray(pil.reduce(int(fx)))
        return np.asarray(pil.resize((w, h), Image.Resampling.BOX))
    return np.asarray(pil.resize((w, h), Image.Resampling.BILINEAR))


class SlideReader(ABC):
    """A lazily read whole-slide image.

    Subclasses implement :meth:`_read_level` (a region at one pyramid level, already clipped
    to the level's bounds); everything else (padding, reads at a target mpp, thumbnails, dask
    pyramids) is shared. Readers are cheap to pickle-free re-open in worker processes through
    :meth:`reopen_args`.
    """

    backend: str = "abstract"

    def __init__(self, meta: SlideMeta, *, slide_id: str | None = None) -> None:
        self.meta = meta
        self.slide_id = slide_id or (Path(meta.path).name.split(".")[0] if meta.path else "array")

    # --- metadata shortcuts ---------------------------------------------------------------
    @property
    def path(self) -> str | None:
        """File the slide was read from (``None`` for in-memory arrays)."""
        return self.meta.path

    @property
    def dimensions(self) -> tuple[int, int]:
        """Level-0 ``(width, height)``."""
        return self.meta.dimensions

    @property
    def level_count(self) -> int:
        """Number of pyramid levels."""
        return self.meta.level_count

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        """``(width, height)`` per level."""
        return self.meta.level_dimensions

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        """Downsample factor of each level relative to level 0."""
        return self.meta.level_downsamples

    @property
    def mpp(self) -> float | None:
        """Microns per level-0 pixel, or ``None`` when unknown."""
        return self.meta.mpp

    def with_mpp(self, mpp: float) -> SlideReader:
        """Override the slide's mpp (e.g. for a PNG or a TIFF without resolution tags).

        Raises :class:`~histoviz.errors.ImplausibleMppError` for a value that is not finite or
        outside :data:`histoviz.io.mpp.PLAUSIBLE_MPP`; a value that differs from the slide's own
        sets ``meta.mpp_warning`` naming both.
        """
        from histoviz.io.mpp import check_mpp_value

        try:
            v = check_mpp_value(mpp, "mpp override")
        except ValueError as e:
            raise ImplausibleMppError(f"{self._name()}: {e}") from None
        from histoviz.io.mpp import override_disagreement

        sources = {**self.meta.mpp_sources, "override": v}
        self.meta = replace(self.meta, mpp=v, mpp_y=v, mpp_source="override", mpp_sources=sources,
                            mpp_warning=override_disagreement(v, self.meta.mpp_sources), mpp_problem="")
        return self

    def require_mpp(self) -> float:
        """Return the mpp or raise a :class:`MissingMppError` that names the file and says why."""
        if self.mpp is None:
            if self.meta.mpp_problem:
                raise ImplausibleMppError(
                    f"{self._name()}: refusing the recorded resolution: {self.meta.mpp_problem}; "
                    "pass --mpp-override with the scanner's value (e.g. 0.5 at 20x, 0.25 at 40x)"
                )
            hint = ""
            obj = self.meta.objective_power
            if obj:
                hint = f"; the objective ({obj:g}x) suggests about {10 / obj:g}"
            raise MissingMppError(
                f"{self._name()}: the slide does not record its resolution (microns per pixel); "
                "pass mpp_override / --mpp-override with the scanner's value (e.g. 0.5 at 20x, "
                f"0.25 at 40x){hint}"
            )
        return self.mpp

    def _name(self) -> str:
        return str(self.path) if self.path else f"<array {self.slide_id}>"

    # --- reading ----------------------------------------------------------------------------
    @abstractmethod
    def _read_level(self, x: int, y: int, w: int, h: int, level: int) -> np.ndarray:
        """Read ``(h, w, 3)`` uint8 at ``level`` with top-left ``(x, y)`` in *level* pixels.

        The box is guaranteed to lie inside the level.
        """

    def read_region(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> np.ndarray:
        """Read a region as OpenSlide does.

        Parameters
        ----------
        location
            Top-left ``(x, y)`` in level-0 pixels.
        level
            Pyramid level to read from.
        size
            ``(width, height)`` in pixels of ``level``.

        Returns
        -------
        RGB uint8 array of shape ``(height, width, 3)``; outside the slide is white. The
        array may be read-only (no copy is made when a backend hands out its buffer): copy it
        before writing in place.
        """
        if not 0 <= level < self.level_count:
            raise IndexError(f"{self._name()}: level {level} out of range 0..{self.level_count - 1}")
        ds = self.level_downsamples[level]
        lw, lh = self.level_dimensions[level]
        w, h = int(size[0]), int(size[1])
        x = int(math.floor(location[0] / ds))
        y = int(math.floor(location[1] / ds))
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + w, lw), min(y + h, lh)
        if x0 == x and y0 == y and x1 == x + w and y1 == y + h:
            return self._read_level(x, y, w, h, level)
        out = np.full((h, w, 3), 255, dtype=np.uint8)
        if x1 > x0 and y1 > y0:
            out[y0 - y : y1 - y, x0 - x : x1 - x] = self._read_level(x0, y0, x1 - x0, y1 - y0, level)
        return out

    def best_level_for_downsample(self, downsample: float) -> int:
        """Highest-resolution-saving level whose downsample does not exceed ``downsample``."""
        best = 0
        for i, d in enumerate(self.level_downsamples):
            if d <= downsample * (1 + MPP_TOLERANCE):
                best = i
        return best

    def read_region_mpp(
        self, location: tuple[int, int], size: tuple[int, int], mpp: float
    ) -> np.ndarray:
        """Read ``size=(w, h)`` pixels at ``mpp`` microns/pixel starting at level-0 ``location``.

        Picks the pyramid level closest above the requested resolution and resizes from it.
        """
        base = self.require_mpp()
        ds = mpp / base
        return self.read_region_downsample(location, size, ds)

    def read_region_downsample(
        self, location: tuple[int, int], size: tuple[int, int], downsample: float
    ) -> np.ndarray:
        """Read ``size`` output pixels covering ``size * downsample`` level-0 pixels."""
        level = self.best_level_for_downsample(downsample)
        lds = self.level_downsamples[level]
        rel = downsample / lds
        if abs(rel - 1) <= MPP_TOLERANCE:
            return self.read_region(location, level, size)
        src = (max(1, round(size[0] * rel)), max(1, round(size[1] * rel)))
        return resize_rgb(self.read_region(location, level, src), size)

    def get_thumbnail(self, max_size: int | tuple[int, int] = 1024) -> np.ndarray:
        """Whole-slide RGB thumbnail fitting in ``max_size`` (aspect preserved)."""
        if isinstance(max_size, int):
            max_size = (max_size, max_size)
        w0, h0 = self.dimensions
        ds = max(w0 / max_size[0], h0 / max_size[1], 1.0)
        size = (max(1, int(w0 / ds)), max(1, int(h0 / ds)))
        return self.read_region_downsample((0, 0), size, ds)

    # --- lazy pyramids for viewers -----------------------------------------------------------
    def to_dask(self, level: int = 0, chunk: int = 1024) -> da.Array:
        """Level ``level`` as a lazy ``(height, width, 3)`` dask array read chunk by chunk."""
        import dask
        import dask.array as da

        lw, lh = self.level_dimensions[level]
        ds = self.level_downsamples[level]

        @dask.delayed(pure=True)
        def _chunk(x: int, y: int, w: int, h: int) -> np.ndarray:
            # the smallest level-0 position that maps back to (x, y) at this downsample
            return self.read_region((math.ceil(x * ds - 1e-9), math.ceil(y * ds - 1e-9)), level, (w, h))

        rows = []
        for y in range(0, lh, chunk):
            h = min(chunk, lh - y)
            row = []
            for x in range(0, lw, chunk):
                w = min(chunk, lw - x)
                row.append(da.from_delayed(_chunk(x, y, w, h), shape=(h, w, 3), dtype=np.uint8))
            rows.append(da.concatenate(row, axis=1))
        return da.concatenate(rows, axis=0)

    def jpeg_tiles(self, level: int) -> Any:
        """Stored JPEG tiles of ``level`` for decoding elsewhere (e.g. on a GPU), or ``None``.

        Backends that read a TIFF's own tiles return an object with ``w, h`` (level size),
        ``tw, th`` (tile size) and ``jpeg_stream(tx, ty) -> bytes | None``.
        """
        return None

    # --- lifecycle ------------------------------------------------------------------------------
    def reopen_args(self) -> dict[str, Any]:
        """Keyword arguments for :func:`histoviz.io.open_slide` that reopen this slide."""
        return {
            "path_or_array": self.path,
            "mpp": self.mpp if self.meta.mpp_source == "override" else None,
            "slide_id": self.slide_id,
        }

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release file handles."""

    def __enter__(self) -> SlideReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        w, h = self.dimensions
        return (
            f"{type(self).__name__}({self.slide_id!r}, {w}x{h}, levels={self.level_count}, "
            f"mpp={self.mpp})"
        )
