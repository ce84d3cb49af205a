"""Slide reader backends: OpenSlide (vendor formats), tifffile (TIFF / OME-TIFF), numpy arrays."""

from __future__ import annotations

import logging
import os
import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from histoviz.errors import SlideOpenError
from histoviz.io.slide import SlideMeta, SlideReader

__all__ = ["MAX_IMAGE_PIXELS", "MAX_SEGMENT_PIXELS", "ArrayReader", "OpenSlideReader", "TiffReader"]

log = logging.getLogger(__name__)
_DEFAULT_CACHE_BYTES = 192 * 2**20
#: largest image held in memory (PNG/JPEG files, arrays, untiled planar TIFF pages): 2**27 px
#: (134 Mpx, 0.4 GB as RGB). Larger images must be tiled pyramids (``vips tiffsave --pyramid``).
MAX_IMAGE_PIXELS = 2**27
#: largest single stored tile or strip decoded at once
MAX_SEGMENT_PIXELS = 2**26


def _meta_mpp(path: str | None, sources: dict[str, tuple[float | None, float | None]],
              objective: float | None) -> dict[str, Any]:
    """SlideMeta fields from the recorded mpp sources (logs a disagreement once)."""
    from histoviz.io.mpp import resolve_mpp

    res = resolve_mpp(sources, objective)
    if res.warning:
        log.warning("%s: %s", path, res.warning)
    return {"mpp": res.mpp, "mpp_y": res.mpp_y, "mpp_source": res.source,
            "mpp_sources": res.sources, "mpp_warning": res.warning, "mpp_problem": res.problem}


def _to_rgb(arr: np.ndarray) -> np.ndarray:
    """Coerce a decoded image to ``(h, w, 3)`` uint8 (alpha composited on white)."""
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.integer):
            arr = (arr >> (8 * (arr.dtype.itemsize - 1))).astype(np.uint8)
        else:
            arr = np.clip(arr * (255.0 if arr.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    if arr.shape[2] == 2:  # grey + alpha
        arr = np.concatenate([arr[..., :1], arr[..., :1], arr[..., :1], arr[..., 1:2]], axis=2)
    if arr.shape[2] == 4:
        a = arr[..., 3:4].astype(np.uint16)
        if np.all(a == 255):
            return np.ascontiguousarray(arr[..., :3])
        rgb = (arr[..., :3].astype(np.uint16) * a + 255 * (255 - a)) // 255
        return rgb.astype(np.uint8)
    if arr.shape[2] == 1:
        return np.repeat(arr, 3, axis=2)
    return np.ascontiguousarray(arr[..., :3])


# APP14 "Adobe" marker with transform 0: the three components are R, G, B (no YCbCr)
_ADOBE_RGB = b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00"


class _LRU:
    """Thread-safe byte-bounded LRU cache of decoded tiles."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._d: OrderedDict[Any, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: Any) -> np.ndarray | None:
        with self._lock:
            v = self._d.get(key)
            if v is not None:
                self._d.move_to_end(key)
            return v

    def put(self, key: Any, value: np.ndarray) -> None:
        with self._lock:
            if key in self._d:
                return
            self._d[key] = value
            self._bytes += value.nbytes
            while self._bytes > self.max_bytes and len(self._d) > 1:
                _, old = self._d.popitem(last=False)
                self._bytes -= old.nbytes


# ------------------------------------------------------------------------------------------------
# tifffile backend
# ------------------------------------------------------------------------------------------------
class _TiffLevel:
    """One pyramid level of a TIFF: decodes its own tiles (or memory-maps strips)."""

    def __init__(self, path: str, page: Any, fh: Any, fh_lock: threading.Lock, cache: _LRU) -> None:
        self.path = path
        self.page = page
        self.fh = fh
        self.fh_lock = fh_lock
        self.cache = cache
        shape = page.shape
        self.planar = page.planarconfig == 2 and page.samplesperpixel > 1
        if self.planar:
            self.h, self.w = shape[-2], shape[-1]
        else:
            self.h, self.w = shape[0], shape[1]
        self.tiled = bool(page.is_tiled) and not self.planar and page.imagedepth == 1
        self.is_stored_tiled = self.tiled
        contiguous_raw = page.is_contiguous and page.compression == 1 and page.fillorder == 1
        if not self.tiled and not self.planar and page.imagedepth == 1 and not contiguous_raw:
            # compressed strips: decode strip by strip (bounded memory), like tiles
            rps = int(min(page.rowsperstrip or self.h, self.h))
            if rps * self.w > MAX_SEGMENT_PIXELS:
                raise SlideOpenError(
                    f"{path}: stored as compressed strips of {self.w} x {rps} px, too large to "
                    f"decode ({MAX_SEGMENT_PIXELS / 1e6:.0f} Mpx at most per strip); convert it to a "
                    "tiled pyramidal TIFF (e.g. vips tiffsave IN OUT.tif --tile --pyramid)"
                )
            self.tiled = True
        elif self.tiled and page.tilewidth * page.tilelength > MAX_SEGMENT_PIXELS:
            raise SlideOpenError(f"{path}: TIFF tiles of {page.tilewidth} x {page.tilelength} px are "
                                 "implausibly large (corrupt header?)")
        self._full: np.ndarray | None = None
        try:  # positional reads (pread) are safe across threads and forked processes
            self._fd: int | None = fh.fileno() if fh.is_file else None
        except (AttributeError, OSError, ValueError):
            self._fd = None
        if self.tiled:
            if self.is_stored_tiled:
                self.tw, self.th = page.tilewidth, page.tilelength
            else:
                self.tw, self.th = self.w, int(min(page.rowsperstrip or self.h, self.h))
            self.ntx = -(-self.w // self.tw)
            self.nty = -(-self.h // self.th)
            self.offsets = page.dataoffsets
            self.counts = page.databytecounts
            self.jpegtables = page.jpegtables
            self.decode = page.decode
            if len(self.offsets) < self.ntx * self.nty:
                raise SlideOpenError(f"{path}: TIFF tile table is incomplete (corrupt file)")

    def check_truncation(self, file_size: int) -> None:
        if self.tiled:
            ends = np.asarray(self.offsets, dtype=np.int64) + np.asarray(self.counts, dtype=np.int64)
            if ends.size and int(ends.max()) > file_size:
                raise SlideOpenError(
                    f"{self.path}: file is truncated ({file_size} bytes, tiles reference up to "
                    f"{int(ends.max())}); re-copy or re-export the slide"
                )
        elif self.page.dataoffsets:
            ends = np.asarray(self.page.dataoffsets, dtype=np.int64) + np.asarray(
                self.page.databytecounts, dtype=np.int64
            )
            if int(ends.max()) > file_size:
                raise SlideOpenError(f"{self.path}: file is truncated; re-copy or re-export the slide")
        page = self.page
        if page.compression == 1 and page.dtype is not None:
            bits = int(page.bitspersample) * page.samplesperpixel  # 1-bit images pack 8 pixels a byte
            need = -(-self.w * bits // 8) * self.h
            have = int(np.sum(np.asarray(page.databytecounts, dtype=np.int64)))
            if have < need:
                raise SlideOpenError(
                    f"{self.path}: the header claims {self.w} x {self.h} px but the file holds "
                    f"{have} of the {need} bytes they need: truncated or corrupt; re-copy or "
                    "re-export the slide"
                )

    def _tile(self, tx: int, ty: int) -> np.ndarray:
        key = (id(self), tx, ty)
        t = self.cache.get(key)
        if t is not None:
            return t
        idx = ty * self.ntx + tx
        off, cnt = self.offsets[idx], self.counts[idx]
        if cnt == 0:  # sparse tile: empty
            t = np.full((self.th, self.tw, 3), 255, np.uint8)
        else:
            if self._fd is not None:
                data = os.pread(self._fd, cnt, off)
            else:
                with self.fh_lock:
                    self.fh.seek(off)
                    data = self.fh.read(cnt)
            try:
                seg, _, _ = self.decode(data, idx, jpegtables=self.jpegtables)
            except Exception as e:  # decoder errors come in many types
                raise SlideOpenError(
                    f"{self.path}: cannot decode tile {idx} ({type(e).__name__}: {e}); the file "
                    "is corrupt or truncated"
                ) from e
            t = self._rgb(np.asarray(seg).reshape(seg.shape[-3:]))
        self.cache.put(key, t)
        return t

    @property
    def jpeg_ok(self) -> bool:
        """Stored as 8-bit RGB/YCbCr JPEG tiles that a JPEG decoder can take one by one."""
        p = self.page
        return (self.is_stored_tiled and p.compression == 7 and p.samplesperpixel == 3
                and p.photometric in (2, 6) and p.bitspersample == 8)

    def jpeg_stream(self, tx: int, ty: int) -> bytes | None:
        """Stored tile ``(tx, ty)`` as a complete JPEG stream (``None`` for a sparse tile).

        Shared tables (TIFF ``JPEGTables``) are spliced in, and tiles whose components are
        RGB (photometric RGB, as Aperio writes them) get an Adobe marker saying so: decoders
        otherwise assume YCbCr.
        """
        idx = ty * self.ntx + tx
        off, cnt = self.offsets[idx], self.counts[idx]
        if cnt == 0:
            return None
        if self._fd is not None:
            data = os.pread(self._fd, cnt, off)
        else:
            with self.fh_lock:
                self.fh.seek(off)
                data = self.fh.read(cnt)
        head = b"\xff\xd8"
        if self.page.photometric == 2:
            head += _ADOBE_RGB
        tables = self.jpegtables or b""
        if tables.startswith(b"\xff\xd8"):
            tables = tables[2:]
        if tables.endswith(b"\xff\xd9"):
            tables = tables[:-2]
        body = data[2:] if data.startswith(b"\xff\xd8") else data
        return head + tables + body

    def _load_full(self) -> np.ndarray:
        if self._full is None:
            page = self.page
            try:
                if page.is_contiguous and page.compression == 1 and page.fillorder == 1 and not self.planar:
                    off = int(page.dataoffsets[0])
                    arr = np.memmap(self.path, dtype=page.dtype, mode="r", offset=off, shape=page.shape)
                else:
                    if self.w * self.h > MAX_IMAGE_PIXELS:
                        raise SlideOpenError(_too_big(self.path, self.w, self.h))
                    arr = page.asarray()
            except SlideOpenError:
                raise
            except Exception as e:
                raise SlideOpenError(f"{self.path}: cannot decode image data ({e}); the file is "
                                     "truncated or corrupt") from e
            if self.planar:
                arr = np.moveaxis(arr, 0, -1)
            self._full = arr
        return self._full

    def _rgb(self, arr: np.ndarray) -> np.ndarray:
        """Decoded samples as RGB: CMYK, palette and white-is-zero images are converted first."""
        ph = int(self.page.photometric)
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[..., 0]
        if ph == 5 and arr.ndim == 3 and arr.shape[2] >= 4:  # CMYK (separated, InkSet CMYK)
            a = arr.astype(np.float32) / (np.iinfo(arr.dtype).max if arr.dtype.kind in "iu" else 1.0)
            rgb = (1.0 - a[..., :3]) * (1.0 - a[..., 3:4])
            return np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)
        if ph == 3 and self.page.colormap is not None and arr.ndim == 2:  # palette
            cmap = np.asarray(self.page.colormap)
            lut = (cmap >> 8 if cmap.max() > 255 else cmap).astype(np.uint8).T  # (n, 3)
            return lut[np.clip(arr.astype(np.int64), 0, len(lut) - 1)]
        if ph == 0 and arr.ndim == 2:  # white is zero
            arr = ~arr if arr.dtype == bool else (np.iinfo(arr.dtype).max - arr if arr.dtype.kind == "u" else arr)
        return _to_rgb(arr)

    def read(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        if not self.tiled:
            return self._rgb(np.asarray(self._load_full()[y : y + h, x : x + w]))
        tx0, tx1 = x // self.tw, (x + w - 1) // self.tw
        ty0, ty1 = y // self.th, (y + h - 1) // self.th
        if tx0 == tx1 and ty0 == ty1:
            t = self._tile(tx0, ty0)
            ox, oy = x - tx0 * self.tw, y - ty0 * self.th
            return t[oy : oy + h, ox : ox + w].copy()
        out = np.empty((h, w, 3), np.uint8)
        for ty in range(ty0, ty1 + 1):
            sy0 = max(y, ty * self.th)
            sy1 = min(y + h, (ty + 1) * self.th)
            for tx in range(tx0, tx1 + 1):
                sx0 = max(x, tx * self.tw)
                sx1 = min(x + w, (tx + 1) * self.tw)
                t = self._tile(tx, ty)
                out[sy0 - y : sy1 - y, sx0 - x : sx1 - x] = t[
                    sy0 - ty * self.th : sy1 - ty * self.th, sx0 - tx * self.tw : sx1 - tx * self.tw
                ]
        return out


def _tiff_sources_of(path: str) -> dict[str, tuple[float | None, float | None]]:
    """mpp sources from the TIFF structure of a vendor file (empty when it is not a TIFF)."""
    with open(path, "rb") as fh:
        if fh.read(2) not in (b"II", b"MM"):
            return {}
    try:
        import tifffile

        from histoviz.io.mpp import tiff_mpp_sources

        with tifffile.TiffFile(path) as tf:
            return tiff_mpp_sources(tf, tf.pages[0])
    except Exception:  # vendor TIFF variants tifffile cannot parse: OpenSlide's value stands
        return {}


class TiffReader(SlideReader):
    """Generic, pyramidal and OME-TIFF (and Aperio SVS) through tifffile.

    Tiled levels are read by decoding the file's own tiles (libjpeg-turbo for JPEG through
    imagecodecs) into a byte-bounded LRU cache, so a row-major sweep decodes each stored
    tile once. Uncompressed strip images are memory-mapped.
    """

    backend = "tifffile"

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        slide_id: str | None = None,
        cache_bytes: int = _DEFAULT_CACHE_BYTES,
    ) -> None:
        import tifffile

        path = str(path)
        try:
            self._tf = tifffile.TiffFile(path)
            series = self._tf.series[0]
            levels = list(series.levels)
        except SlideOpenError:
            raise
        except Exception as e:
            raise SlideOpenError(f"{path}: not a readable TIFF ({type(e).__name__}: {e})") from e
        self._fh_lock = threading.Lock()
        self._cache = _LRU(cache_bytes)
        self._levels: list[_TiffLevel] = []
        size = Path(path).stat().st_size
        for lv in levels:
            page = lv.keyframe if hasattr(lv, "keyframe") else lv.pages[0]
            if page is None:
                continue
            if page.samplesperpixel not in (1, 2, 3, 4) or page.dtype is None:
                raise SlideOpenError(f"{path}: unsupported TIFF layout (samples={page.samplesperpixel})")
            if int(page.photometric) not in (0, 1, 2, 3, 5, 6):
                raise SlideOpenError(f"{path}: TIFF colour space {page.photometric.name} is not supported; "
                                     "export the slide as RGB (or greyscale)")
            tl = _TiffLevel(path, page, self._tf.filehandle, self._fh_lock, self._cache)
            tl.check_truncation(size)
            self._levels.append(tl)
        if not self._levels:
            raise SlideOpenError(f"{path}: TIFF holds no image")
        w0, h0 = self._levels[0].w, self._levels[0].h
        dims = tuple((lv.w, lv.h) for lv in self._levels)
        ds = tuple(float(np.mean([w0 / w, h0 / h])) for (w, h) in dims)
        page0 = self._levels[0].page
        from histoviz.io.mpp import tiff_mpp_sources

        desc = page0.description or ""
        obj = None
        m = re.search(r"AppMag\s*=\s*([0-9.]+)", desc) or re.search(
            r'NominalMagnification="([0-9.]+)"', self._tf.ome_metadata or ""
        )
        if m:
            obj = float(m.group(1))
        vendor = "aperio" if self._tf.is_svs else ("ome" if self._tf.is_ome else "generic-tiff")
        meta = SlideMeta(
            path=path,
            level_dimensions=dims,
            level_downsamples=ds,
            objective_power=obj,
            vendor=vendor,
            backend=self.backend,
            properties={"tiled": str(self._levels[0].is_stored_tiled),
                        "compression": str(page0.compression)},
            **_meta_mpp(path, tiff_mpp_sources(self._tf, page0), obj),
        )
        super().__init__(meta, slide_id=slide_id)

    @property
    def is_tiled(self) -> bool:
        """True when level 0 is stored as tiles (the fast decoding path applies)."""
        return self._levels[0].is_stored_tiled

    def _read_level(self, x: int, y: int, w: int, h: int, level: int) -> np.ndarray:
        return self._levels[level].read(x, y, w, h)

    def jpeg_tiles(self, level: int) -> Any:
        """The level's stored JPEG tiles (``jpeg_stream(tx, ty)``, ``tw``, ``th``) or ``None``."""
        lv = self._levels[level]
        return lv if lv.jpeg_ok else None

    def close(self) -> None:
        """Close the TIFF file."""
        self._tf.close()


# ------------------------------------------------------------------------------------------------
# OpenSlide backend
# ------------------------------------------------------------------------------------------------
class OpenSlideReader(SlideReader):
    """Vendor formats (SVS, NDPI, MRXS, SCN, BIF, ...) through OpenSlide.

    With ``tile_decode=True`` and a TIFF-structured file (Aperio SVS, tiled generic TIFF)
    whose levels tifffile sees identically, pixel reads go through :class:`TiffReader`'s
    direct tile decoding; metadata still comes from OpenSlide.
    """

    backend = "openslide"

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        slide_id: str | None = None,
        tile_decode: bool = True,
        cache_bytes: int = _DEFAULT_CACHE_BYTES,
    ) -> None:
        import openslide

        path = str(path)
        open_path = path
        if Path(path).is_dir():  # a DICOM series: OpenSlide finds the rest from one instance
            open_path = str(dicom_series_file(Path(path)))
        if open_path.lower().endswith(".dcm"):
            check_dicom_headers(Path(path))
        try:
            self._osr = openslide.OpenSlide(open_path)
        except Exception as e:
            raise SlideOpenError(
                f"{path}: OpenSlide cannot open it; the file is truncated or corrupt "
                f"({type(e).__name__}: {e}); re-copy or re-export the slide"
            ) from e
        p = dict(self._osr.properties)

        def _f(key: str) -> float | None:
            try:
                return float(p[key])
            except (KeyError, ValueError):
                return None

        vendor = p.get("openslide.vendor", "unknown")
        sources = {("dicom" if vendor == "dicom" else "openslide"):
                   (_f("openslide.mpp-x"), _f("openslide.mpp-y"))}
        if open_path == path:
            sources.update(_tiff_sources_of(path))
        obj = _f("openslide.objective-power")
        meta = SlideMeta(
            path=path,
            level_dimensions=tuple(tuple(int(v) for v in d) for d in self._osr.level_dimensions),
            level_downsamples=tuple(float(d) for d in self._osr.level_downsamples),
            objective_power=obj,
            vendor=vendor,
            backend=self.backend,
            properties=p,
            **_meta_mpp(path, sources, obj),
        )
        super().__init__(meta, slide_id=slide_id)
        self._tf = None
        self._tile_decode_requested = tile_decode
        self._fast: dict[int, _TiffLevel] = {}
        if tile_decode and meta.vendor in ("aperio", "generic-tiff"):
            self._init_tile_decoding(path, cache_bytes)

    def _init_tile_decoding(self, path: str, cache_bytes: int) -> None:
        """Map OpenSlide levels to the TIFF's own tiled pages (same dimensions)."""
        import tifffile

        try:
            tf = tifffile.TiffFile(path)
            size = Path(path).stat().st_size
            lock, cache = threading.Lock(), _LRU(cache_bytes)
            by_dims = {}
            for page in tf.pages:
                if page.is_tiled and page.samplesperpixel in (3, 4) and page.planarconfig == 1:
                    by_dims.setdefault((page.imagewidth, page.imagelength), page)
            for lvl, dims in enumerate(self.level_dimensions):
                page = by_dims.get(dims)
                if page is not None:
                    tl = _TiffLevel(path, page, tf.filehandle, lock, cache)
                    tl.check_truncation(size)
                    self._fast[lvl] = tl
        except Exception:  # fall back to OpenSlide for every read
            self._fast = {}
        if self._fast:
            from dataclasses import replace

            self._tf = tf
            self.backend = "openslide+tiles"
            self.meta = replace(self.meta, backend=self.backend)

    @property
    def tile_decode(self) -> bool:
        """Whether reads decode the slide's own tiles directly (fast path)."""
        return bool(self._fast)

    def reopen_args(self) -> dict[str, Any]:
        """Reopen with the same tile-decoding choice."""
        return {**super().reopen_args(), "tile_decode": self._tile_decode_requested}

    def jpeg_tiles(self, level: int) -> Any:
        """The level's stored JPEG tiles when read directly (see :meth:`TiffReader.jpeg_tiles`)."""
        lv = self._fast.get(level)
        return lv if lv is not None and lv.jpeg_ok else None

    def _read_level(self, x: int, y: int, w: int, h: int, level: int) -> np.ndarray:
        fast = self._fast.get(level)
        if fast is not None:
            return fast.read(x, y, w, h)
        ds = self.level_downsamples[level]
        try:
            img = self._osr.read_region((round(x * ds), round(y * ds)), level, (w, h))
        except Exception as e:
            raise SlideOpenError(f"{self.path}: read failed ({type(e).__name__}: {e})") from e
        if img.getchannel("A").getextrema()[0] == 255:  # fully opaque: drop alpha in C
            return np.asarray(img.convert("RGB"))  # read-only view, no copy
        return _to_rgb(np.asarray(img))

    def close(self) -> None:
        """Close OpenSlide (and the tile decoder)."""
        self._osr.close()
        if self._tf is not None:
            self._tf.close()


# ------------------------------------------------------------------------------------------------
# In-memory backend
# ------------------------------------------------------------------------------------------------
def _too_big(name: str, w: int, h: int) -> str:
    return (f"{name}: image of {w} x {h} px ({w * h / 1e6:.0f} Mpx) is larger than the "
            f"{MAX_IMAGE_PIXELS / 1e6:.0f} Mpx histoviz holds in memory; convert it to a tiled "
            "pyramidal TIFF (e.g. vips tiffsave IN OUT.tif --tile --pyramid --compression jpeg)")


def _half(prev: np.ndarray, rows: int = 1024) -> np.ndarray:
    """2x box downsample (floor of the mean), in row blocks so temporaries stay small."""
    h2, w2 = prev.shape[0] // 2, prev.shape[1] // 2
    out = np.empty((h2, w2, 3), np.uint8)
    for r0 in range(0, h2, rows):
        r1 = min(h2, r0 + rows)
        blk = prev[2 * r0 : 2 * r1, : 2 * w2]
        acc = blk[0::2, 0::2].astype(np.uint16)
        acc += blk[1::2, 0::2]
        acc += blk[0::2, 1::2]
        acc += blk[1::2, 1::2]
        acc >>= 2
        out[r0:r1] = acc
    return out


class ArrayReader(SlideReader):
    """An RGB numpy array (or a PNG/JPEG file) as a slide, with a 2x virtual pyramid."""

    backend = "array"

    def __init__(
        self,
        image: np.ndarray,
        *,
        mpp: float | None = None,
        path: str | None = None,
        slide_id: str | None = None,
        min_level_side: int = 512,
    ) -> None:
        arr = np.asarray(image)
        name = path or "<array>"
        if arr.ndim >= 2 and arr.shape[0] * arr.shape[1] > MAX_IMAGE_PIXELS:
            raise SlideOpenError(_too_big(name, arr.shape[1], arr.shape[0]))
        img = _to_rgb(arr)
        levels = [img]
        while max(levels[-1].shape[:2]) >= 2 * min_level_side:
            levels.append(_half(levels[-1]))
        self._levels = levels
        h0, w0 = img.shape[:2]
        if mpp is not None:
            from histoviz.errors import ImplausibleMppError
            from histoviz.io.mpp import check_mpp_value

            try:
                mpp = check_mpp_value(mpp, "mpp")
            except ValueError as e:
                raise ImplausibleMppError(f"{name}: {e}") from None
        meta = SlideMeta(
            path=path,
            level_dimensions=tuple((lv.shape[1], lv.shape[0]) for lv in levels),
            level_downsamples=tuple(float(w0 / lv.shape[1]) for lv in levels),
            mpp=mpp,
            mpp_y=mpp,
            vendor="image" if path else "array",
            backend=self.backend,
            mpp_source="given" if mpp is not None else "none",
            mpp_sources={"given": mpp} if mpp is not None else {},
        )
        super().__init__(meta, slide_id=slide_id or (None if path else "array"))

    def _read_level(self, x: int, y: int, w: int, h: int, level: int) -> np.ndarray:
        return self._levels[level][y : y + h, x : x + w].copy()

    def reopen_args(self) -> dict[str, Any]:
        """In-memory arrays reopen from the array itself (same process only)."""
        if self.path is None:
            return {"path_or_array": self._levels[0], "mpp": self.mpp, "slide_id": self.slide_id}
        return super().reopen_args()


def _dcm_files(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.suffix.lower() == ".dcm" and p.is_file())
    except OSError:
        return []


#: most pixels a DICOM whole-slide header may claim (about 520k x 520k px; scans are ~200k x 100k)
MAX_DICOM_PIXELS = 2**38


def check_dicom_headers(path: Path) -> None:
    """Refuse DICOM files whose header claims more than a slide has or the file holds, before
    OpenSlide sizes its tables from that header (a hostile one makes it allocate gigabytes).

    Every ``.dcm`` file OpenSlide would read is checked: those of a series folder, or a file and
    its siblings (OpenSlide gathers the series from the file's folder).

    Raises
    ------
    SlideOpenError
        A header that claims more pixels than any scan, more frames than the file can hold, or
        a tiled image whose frames are missing.
    """
    import pydicom

    for f in _dcm_files(path if path.is_dir() else path.parent) or [path]:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True, defer_size="1 KB", force=False)
            n_frames = int(ds.get("NumberOfFrames", 1) or 1)
            r, c = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
            tc = int(ds.get("TotalPixelMatrixColumns", c) or c)
            tr = int(ds.get("TotalPixelMatrixRows", r) or r)
            tiled_full = str(ds.get("DimensionOrganizationType", "")).upper() == "TILED_FULL"
        except (pydicom.errors.InvalidDicomError, ValueError, TypeError, OSError, EOFError):
            continue  # not DICOM (or unreadable here): OpenSlide decides, as for any file
        size = f.stat().st_size
        if tc * tr > MAX_DICOM_PIXELS:
            raise SlideOpenError(f"{f}: the DICOM header claims a {tc} x {tr} px image, more than any slide scan; "
                                 "the file is corrupt: re-export the slide")
        if n_frames > size // 8 + 1:  # a frame takes at least its 8-byte item header
            raise SlideOpenError(f"{f}: the DICOM header claims {n_frames} frames but the file holds {size} bytes: "
                                 "truncated or corrupt; re-copy or re-export the slide")
        need = -(-tc // c) * -(-tr // r) if (tiled_full and r > 0 and c > 0) else 0
        if need > n_frames:
            raise SlideOpenError(f"{f}: the DICOM header claims a {tc} x {tr} px image in {c} x {r} px frames "
                                 f"({need} frames) but holds {n_frames}: truncated or corrupt; re-copy or "
                                 "re-export the slide")


def dicom_series_file(folder: Path) -> Path:
    """One instance of the DICOM whole-slide series in ``folder`` (OpenSlide finds the rest).

    Parameters
    ----------
    folder
        A folder holding the ``.dcm`` files of one series.
    """
    files = _dcm_files(folder)
    if not files:
        raise SlideOpenError(f"{folder}: no .dcm files in this folder")
    return max(files, key=lambda p: p.stat().st_size)  # the base level is the largest
