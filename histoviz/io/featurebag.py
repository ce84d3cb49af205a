"""``FeatureBag``: patch coordinates + embeddings of one slide, stored as CLAM/TRIDENT HDF5."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from histoviz._atomic import atomic_path
from histoviz._version import __version__
from histoviz.errors import DataError

__all__ = ["REQUIRED_ATTRS", "FeatureBag", "FeatureBagWriter", "is_complete_bag", "read_bag_attrs"]

REQUIRED_ATTRS = ("slide_id", "encoder", "embed_dim", "tile_size", "mpp", "tile_size_level0")


@dataclass
class FeatureBag:
    """Features of the patches of one slide.

    Attributes
    ----------
    coords
        ``(N, 2)`` int64 level-0 top-left corners ``(x, y)``.
    features
        ``(N, D)`` float32 embeddings.
    attrs
        ``slide_id, encoder, embed_dim, tile_size, mpp, tile_size_level0, histoviz_version``
        plus anything else (slide path, dimensions, ``recipe``).
    quality
        Optional per-tile scores ``name -> (N,)`` (``tissue``, ``artifact``, ``background``,
        ``sharpness``; see :mod:`histoviz.tiling.quality`), stored in the HDF5 group
        ``quality`` beside the CLAM/TRIDENT ``coords`` and ``features`` datasets.
    """

    coords: np.ndarray
    features: np.ndarray
    attrs: dict[str, Any] = field(default_factory=dict)
    quality: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.coords = np.asarray(self.coords, dtype=np.int64)
        self.features = np.asarray(self.features, dtype=np.float32)
        if self.coords.ndim != 2 or self.coords.shape[1] != 2:
            raise DataError(f"coords must be (N, 2), got {self.coords.shape}")
        if self.features.ndim != 2 or len(self.features) != len(self.coords):
            raise DataError(
                f"features must be (N, D) with N = {len(self.coords)} coords, got {self.features.shape}"
            )
        self.attrs.setdefault("embed_dim", int(self.features.shape[1]))
        self.quality = {k: np.asarray(v, np.float32) for k, v in self.quality.items()}
        bad = [k for k, v in self.quality.items() if v.shape != (len(self.coords),)]
        if bad:
            raise DataError(f"quality score(s) {bad} must have one value per tile ({len(self.coords)})")

    def __len__(self) -> int:
        return len(self.coords)

    def select(self, keep: np.ndarray) -> FeatureBag:
        """The bag restricted to ``keep`` (boolean ``(N,)`` or indices), e.g. in-focus tiles::

            bag.select(bag.quality["sharpness"] >= histoviz.tiling.BLUR_THRESHOLD)
        """
        keep = np.asarray(keep)
        return FeatureBag(self.coords[keep], self.features[keep], dict(self.attrs),
                          {k: v[keep] for k, v in self.quality.items()})

    @property
    def slide_id(self) -> str:
        """Slide identifier."""
        return str(self.attrs.get("slide_id", ""))

    @property
    def embed_dim(self) -> int:
        """Feature dimension D."""
        return int(self.features.shape[1])

    @property
    def tile_size_level0(self) -> int:
        """Side of one patch in level-0 pixels."""
        return int(self.attrs["tile_size_level0"])

    @property
    def centers(self) -> np.ndarray:
        """``(N, 2)`` float level-0 patch centres (``obsm["spatial"]`` convention)."""
        return self.coords + self.tile_size_level0 / 2.0

    def to_h5(self, path: str | os.PathLike) -> Path:
        """Write atomically to ``path`` (temp file + rename)."""
        with atomic_path(path) as tmp:
            import h5py

            with h5py.File(tmp, "w") as f:
                f.create_dataset("coords", data=self.coords)
                f.create_dataset("features", data=self.features, chunks=True)
                for k, v in self.quality.items():
                    f.create_dataset(f"quality/{k}", data=v)
                for k, v in self.attrs.items():
                    if v is not None:
                        f.attrs[k] = v
                f.attrs.setdefault("histoviz_version", __version__)
        return Path(path)

    @classmethod
    def from_h5(cls, path: str | os.PathLike, *, load_features: bool = True) -> FeatureBag:
        """Read a bag; raises :class:`DataError` naming the file when the contract is broken."""
        import h5py

        path = Path(path)
        if not path.exists():
            raise DataError(f"{path}: feature file not found")
        try:
            with h5py.File(path, "r") as f:
                missing = [k for k in ("coords", "features") if k not in f]
                if missing:
                    raise DataError(f"{path}: missing dataset(s) {missing}; not a histoviz/CLAM bag")
                coords = f["coords"][()]
                feats = f["features"][()] if load_features else np.zeros((len(coords), 0), np.float32)
                attrs = {k: _py(v) for k, v in f.attrs.items()}
                coord_attrs = {k: _py(v) for k, v in f["coords"].attrs.items()}
                quality = {}
                if isinstance(f.get("quality"), h5py.Group):
                    quality = {k: d[()] for k, d in f["quality"].items()
                               if isinstance(d, h5py.Dataset) and d.shape == (len(coords),)}
        except OSError as e:
            raise DataError(f"{path}: not a readable HDF5 file ({e})") from e
        if coords.ndim == 3:  # some CLAM files store (1, N, 2)
            coords = coords[0]
        if feats.ndim == 3:
            feats = feats[0]
        attrs.setdefault("slide_id", path.name.split(".")[0])
        _foreign_attrs(attrs, coord_attrs)
        bag = cls(coords, feats, attrs, quality)
        if load_features:
            bag.attrs["embed_dim"] = bag.embed_dim
        return bag


def _foreign_attrs(attrs: dict[str, Any], coord_attrs: dict[str, Any]) -> None:
    """Fill histoviz attributes from a TRIDENT or CLAM bag (kept on the ``coords`` dataset).

    TRIDENT writes ``patch_size``, ``patch_size_level0``, ``target_magnification``,
    ``level0_magnification`` and ``name`` (the slide); CLAM writes ``patch_size`` and
    ``patch_level``. Missing values stay missing (``tile_size_level0`` is then unknown and maps
    cannot be placed, but the bag trains).
    """
    if not coord_attrs:
        return
    attrs.setdefault("source_format", "trident" if "patch_size_level0" in coord_attrs else "clam")
    if "patch_size_level0" in coord_attrs:
        attrs.setdefault("tile_size_level0", int(coord_attrs["patch_size_level0"]))
    if "patch_size" in coord_attrs:
        attrs.setdefault("tile_size", int(coord_attrs["patch_size"]))
        if "tile_size_level0" not in attrs and int(coord_attrs.get("patch_level", -1) or 0) == 0:
            attrs.setdefault("tile_size_level0", int(coord_attrs["patch_size"]))
    if "name" in coord_attrs and isinstance(coord_attrs["name"], str):
        attrs.setdefault("slide_id", coord_attrs["name"])
    attrs.setdefault("encoder", str(coord_attrs.get("encoder", "unknown (external bag)")))


def _py(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v


def read_bag_attrs(path: str | os.PathLike) -> dict[str, Any]:
    """The attributes of a bag without reading its arrays (:class:`DataError` if unreadable)."""
    import h5py

    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            return {k: _py(v) for k, v in f.attrs.items()}
    except (OSError, FileNotFoundError) as e:
        raise DataError(f"{path}: not a readable HDF5 feature bag ({e})") from e


def is_complete_bag(
    path: str | os.PathLike,
    *,
    encoder: str | None = None,
    tile_size: int | None = None,
    mpp: float | None = None,
) -> bool:
    """True when ``path`` is a finished bag (and, when given, of that encoder, tile size, mpp).

    All attributes present, as many feature rows as coordinates, and (when given) the same
    encoder, tile size and target mpp (``mpp=-1`` stands for native level-0 pixels). For the
    whole embedding recipe see :func:`histoviz.features.recipe.compare_recipes`.
    """
    import h5py

    path = Path(path)
    if not path.exists():
        return False
    try:
        with h5py.File(path, "r") as f:
            if "coords" not in f or "features" not in f:
                return False
            if any(k not in f.attrs for k in REQUIRED_ATTRS):
                return False
            if f["coords"].shape[0] != f["features"].shape[0]:
                return False
            if encoder is not None and _py(f.attrs["encoder"]) != encoder:
                return False
            if tile_size is not None and int(f.attrs["tile_size"]) != int(tile_size):
                return False
            if mpp is not None and abs(float(f.attrs["mpp"]) - float(mpp)) > 1e-9:
                return False
            return bool(f.attrs.get("complete", True))
    except OSError:
        return False


class FeatureBagWriter:
    """Stream features into ``<slide_id>.h5`` without holding them all in memory.

    Rows are written into a temporary file as batches arrive (in any order); ``close()``
    renames it over the final name. An exception (or interruption) leaves no final file.

    A bag that cannot fit in the free space is refused before anything is written; a disk that
    fills (or turns read-only) while writing is a :class:`~histoviz.errors.StorageError`, and the
    temporary file is removed. Rows are flushed every few MB and before closing: HDF5 cannot
    recover from a write that fails inside its close (it crashes the process later), so that
    close is left with almost nothing to write.
    """

    #: HDF5 structure beyond the raw arrays (superblock, object headers, attributes, B-trees)
    OVERHEAD_BYTES = 1 << 16
    #: features written between flushes (a failed flush is recoverable, a failed close is not)
    FLUSH_BYTES = 8 << 20

    def __init__(
        self, path: str | os.PathLike, coords: np.ndarray, embed_dim: int, attrs: dict[str, Any],
        quality: dict[str, np.ndarray] | None = None,
    ) -> None:
        import h5py

        self.path = Path(path)
        n = len(coords)
        self._check_space(n * (16 + 4 * int(embed_dim) + 4 * (len(quality or {}) + 1)))
        self._f: Any = None
        self._unflushed = 0
        self._ctx: Any = atomic_path(self.path)
        self._tmp = self._ctx.__enter__()
        try:
            with self._guard():
                self._f = h5py.File(self._tmp, "w")
                self._f.create_dataset("coords", data=np.asarray(coords, np.int64))
                # rows are flushed chunk by chunk as they arrive: memory does not grow with the slide
                self._feats = self._f.create_dataset(
                    "features", shape=(n, embed_dim), dtype="float32",
                    chunks=(min(max(n, 1), 256), embed_dim),
                )
                self._written = np.zeros(n, dtype=bool)
                for k, v in (quality or {}).items():
                    self._f.create_dataset(f"quality/{k}", data=np.asarray(v, np.float32))
                for k, v in {**attrs, "embed_dim": int(embed_dim), "histoviz_version": __version__}.items():
                    if v is not None:
                        self._f.attrs[k] = v
                self._f.flush()
        except BaseException:
            self.abort()
            raise

    def _check_space(self, data_bytes: int) -> None:
        from histoviz._atomic import require_space

        require_space(self.path, data_bytes + self.OVERHEAD_BYTES, what="the feature bag")

    @contextlib.contextmanager
    def _guard(self) -> Any:
        """Turn a failed HDF5 write (no space, read-only, quota) into a StorageError."""
        from histoviz._atomic import storage_error

        try:
            yield
        except (OSError, RuntimeError) as e:  # h5py raises RuntimeError for a failed flush
            err = storage_error(self.path, e, write_only=True)
            if err is None:
                raise
            self._detach()
            raise err from e

    def _detach(self) -> None:
        """After a failed write, let HDF5 release the file without writing to it again: its
        descriptor is pointed at /dev/null (a second failure inside HDF5 crashes the process)."""
        f, self._f = self._f, None
        if f is None:
            return
        try:
            fd = f.id.get_vfd_handle()
            nul = os.open(os.devnull, os.O_RDWR)
            try:
                os.dup2(nul, fd)
            finally:
                os.close(nul)
            f.close()
        except (OSError, RuntimeError, ValueError, TypeError):
            pass

    def write(self, start: int, features: np.ndarray) -> None:
        """Write rows ``start : start + len(features)``."""
        stop = start + len(features)
        x = np.asarray(features, np.float32)
        with self._guard():
            self._feats[start:stop] = x
            self._unflushed += x.nbytes
            if self._unflushed >= self.FLUSH_BYTES:
                self._f.flush()
                self._unflushed = 0
        self._written[start:stop] = True

    def write_quality(self, name: str, start: int, values: np.ndarray) -> None:
        """Write a per-tile score (e.g. ``sharpness``) for rows ``start : start + len(values)``."""
        key = f"quality/{name}"
        with self._guard():
            if key not in self._f:
                self._f.create_dataset(key, shape=(len(self._written),), dtype="float32", fillvalue=np.nan)
            self._f[key][start : start + len(values)] = np.asarray(values, np.float32)

    def close(self) -> Path:
        """Finish: verify every row was written, then rename into place."""
        if not self._written.all():
            missing = int((~self._written).sum())
            self.abort()
            raise DataError(f"{self.path}: {missing} feature rows were never written")
        try:
            with self._guard():
                self._f.flush()
                self._f.close()
                self._f = None
        except BaseException:
            self.abort()
            raise
        ctx, self._ctx = self._ctx, None
        ctx.__exit__(None, None, None)
        return self.path

    def abort(self) -> None:
        """Discard the temporary file (nothing more is written to it)."""
        self._detach()
        ctx, self._ctx = self._ctx, None
        if ctx is not None:
            ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)

    def __enter__(self) -> FeatureBagWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
