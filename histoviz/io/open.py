"""``open_slide``: pick the right backend for a path or an array."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from histoviz.errors import SlideOpenError
from histoviz.io.backends import _dcm_files, dicom_series_file
from histoviz.io.slide import SlideReader

__all__ = ["IMAGE_SUFFIXES", "SLIDE_SUFFIXES", "dicom_series_file", "open_slide", "slide_id_from_path"]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
TIFF_SUFFIXES = {".tif", ".tiff", ".btf", ".tf8", ".tf2", ".ome.tif", ".ome.tiff"}
OPENSLIDE_SUFFIXES = {".svs", ".ndpi", ".mrxs", ".scn", ".bif", ".vms", ".vmu", ".svslide", ".dcm"}
SLIDE_SUFFIXES = IMAGE_SUFFIXES | TIFF_SUFFIXES | OPENSLIDE_SUFFIXES
_OPENSLIDE_VENDOR_FIRST = {
    "aperio", "hamamatsu", "leica", "mirax", "philips", "sakura", "trestle", "ventana", "zeiss",
    "dicom", "synthetic",
}


def slide_id_from_path(path: str | os.PathLike) -> str:
    """``/a/b/TCGA-XX.ome.tif`` -> ``TCGA-XX`` (everything before the first dot).

    A folder (a DICOM series) keeps its whole name.
    """
    p = Path(path)
    if p.is_dir():
        return p.name
    return p.name.split(".")[0]


def open_slide(
    path_or_array: str | os.PathLike | np.ndarray,
    *,
    mpp: float | None = None,
    slide_id: str | None = None,
    backend: str = "auto",
    tile_decode: bool = True,
    **kwargs: Any,
) -> SlideReader:
    """Open a whole-slide image, an image file or an in-memory array.

    Parameters
    ----------
    path_or_array
        A slide file (SVS, NDPI, MRXS, SCN, BIF, TIFF, OME-TIFF, ...), a PNG/JPEG, or an RGB
        ``(H, W, 3)`` uint8 array.
    mpp
        Microns per level-0 pixel. Overrides the file's value (use for images without one).
    slide_id
        Identifier used in outputs; defaults to the file name before its first dot.
    backend
        ``"auto"``, ``"openslide"``, ``"tifffile"`` or ``"array"``.
    tile_decode
        For TIFF-structured OpenSlide formats, read pixels by decoding the file's own tiles
        (faster; same pixels).

    Returns
    -------
    A :class:`~histoviz.io.SlideReader`.

    Examples
    --------
    >>> import numpy as np
    >>> r = open_slide(np.zeros((64, 96, 3), np.uint8), mpp=0.5)
    >>> r.dimensions, r.mpp
    ((96, 64), 0.5)
    """
    from histoviz.io.backends import ArrayReader, OpenSlideReader, TiffReader

    if not isinstance(path_or_array, (np.ndarray, str, os.PathLike)):
        raise SlideOpenError(f"cannot open {type(path_or_array).__name__} as a slide; give a path or an array")
    if isinstance(path_or_array, np.ndarray):
        if path_or_array.ndim not in (2, 3):
            raise SlideOpenError(f"array slide must be (H, W) or (H, W, C), got {path_or_array.shape}")
        return ArrayReader(path_or_array, mpp=mpp, slide_id=slide_id or "array")

    path = Path(path_or_array)
    _check_name(path)
    _check_access(path)
    if path.is_dir():
        if _dcm_files(path):
            sid = slide_id or path.name
            reader = OpenSlideReader(path, slide_id=sid, tile_decode=False)
            if mpp is not None:
                reader.with_mpp(mpp)
            return reader
        raise SlideOpenError(
            f"{path}: is a directory without DICOM (.dcm) files; give a slide file or a DICOM "
            "whole-slide series folder"
        )
    if path.stat().st_size == 0:
        raise SlideOpenError(f"{path}: file is empty")
    sid = slide_id or slide_id_from_path(path)
    name = path.name.lower()
    suffix = ".ome.tif" if name.endswith((".ome.tif", ".ome.tiff")) else path.suffix.lower()

    reader: SlideReader
    if backend == "array" or (backend == "auto" and suffix in IMAGE_SUFFIXES):
        reader = _open_image(path, sid)
    elif backend == "tifffile":
        reader = TiffReader(path, slide_id=sid)
    elif backend == "openslide":
        reader = OpenSlideReader(path, slide_id=sid, tile_decode=tile_decode, **kwargs)
    elif backend == "auto":
        reader = _open_auto(path, sid, suffix, tile_decode, **kwargs)
    else:
        raise SlideOpenError(f"unknown backend {backend!r}; use auto, openslide, tifffile or array")
    if mpp is not None:
        reader.with_mpp(mpp)
    return reader


def _open_auto(path: Path, sid: str, suffix: str, tile_decode: bool, **kwargs: Any) -> SlideReader:
    import openslide

    from histoviz.io.backends import OpenSlideReader, TiffReader

    if suffix == ".dcm":
        from histoviz.io.backends import check_dicom_headers

        check_dicom_headers(path)  # before OpenSlide reads a header that may be hostile
    try:
        fmt = openslide.OpenSlide.detect_format(str(path))
    except Exception:  # detect_format raises on some unreadable files
        fmt = None
    if fmt in _OPENSLIDE_VENDOR_FIRST:
        return OpenSlideReader(path, slide_id=sid, tile_decode=tile_decode, **kwargs)
    if suffix in OPENSLIDE_SUFFIXES:
        # a vendor file OpenSlide does not recognise is damaged: tifffile would read what is
        # left of a truncated SVS without a word
        raise SlideOpenError(
            f"{path}: OpenSlide does not recognise this {suffix} file: it is truncated or corrupt "
            f"(or not really {suffix}); re-copy or re-export the slide"
        )
    with open(path, "rb") as fh:
        magic = fh.read(4)
    is_tiff = magic[:2] in (b"II", b"MM")
    if is_tiff:
        return TiffReader(path, slide_id=sid)
    if fmt is not None:
        return OpenSlideReader(path, slide_id=sid, tile_decode=tile_decode, **kwargs)
    if suffix in TIFF_SUFFIXES | OPENSLIDE_SUFFIXES:
        raise SlideOpenError(f"{path}: not a valid {suffix} file (corrupt, truncated or misnamed)")
    try:
        return _open_image(path, sid)
    except SlideOpenError:
        raise SlideOpenError(
            f"{path}: unsupported format; histoviz reads {', '.join(sorted(SLIDE_SUFFIXES))}"
        ) from None


def _open_image(path: Path, sid: str) -> SlideReader:
    from PIL import Image, UnidentifiedImageError

    from histoviz.io.backends import MAX_IMAGE_PIXELS, ArrayReader, _too_big

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > MAX_IMAGE_PIXELS:  # checked on the header, before decoding
                    raise SlideOpenError(_too_big(str(path), w, h))
                if im.mode.startswith("I;16") or im.mode in ("I", "F"):
                    # 16-bit or float grey: PIL's convert("RGB") clips it to white; scale instead
                    arr = np.asarray(im)
                    if im.mode == "I" and arr.size and int(arr.max()) <= 255:
                        arr = arr.astype(np.uint8)  # 8-bit values in a 32-bit image
                    elif arr.dtype.kind in "iu":
                        arr = np.clip(arr, 0, 65535).astype(np.uint16)
                else:
                    arr = np.asarray(im.convert("RGBA" if im.mode in ("RGBA", "LA", "PA", "P") else "RGB"))
    except Image.DecompressionBombError as e:
        raise SlideOpenError(f"{path}: {e}; convert it to a tiled pyramidal TIFF") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        if isinstance(e, SlideOpenError):
            raise
        raise SlideOpenError(f"{path}: cannot read image ({e})") from e
    return ArrayReader(arr, path=str(path), slide_id=sid)


def _check_access(path: Path) -> None:
    """Say in one line why a path cannot be read: missing, a dangling link or a link loop, or
    permissions (before any reader blames the file's content)."""
    import errno

    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise SlideOpenError(f"{path}: a symbolic link to {os.readlink(path)}, which does not exist; "
                                 "point the link at the slide or give the slide's own path") from None
        raise SlideOpenError(f"{path}: slide file not found") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise SlideOpenError(f"{path}: a loop of symbolic links (it leads back to itself, never to a "
                                 "file); point the link at the slide file") from None
        if e.errno in (errno.EACCES, errno.EPERM):
            raise SlideOpenError(f"{path}: permission denied on a folder on its way; ask for access to it "
                                 "or copy the slide somewhere readable") from None
        raise SlideOpenError(f"{path}: cannot be read ({e.strerror or e})") from None
    import stat

    try:
        if stat.S_ISDIR(st.st_mode):
            os.listdir(path)
        else:
            with open(path, "rb") as fh:
                fh.read(1)
    except PermissionError:
        raise SlideOpenError(f"{path}: permission denied: this user cannot read it; ask for read access "
                             "(e.g. chmod a+r) or copy the slide somewhere readable") from None
    except OSError as e:
        raise SlideOpenError(f"{path}: cannot be read ({e.strerror or e}); check the disk or copy the "
                             "slide again") from None


def _check_name(path: Path) -> None:
    """Refuse file names that are not valid UTF-8 (they cannot be written into outputs)."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(path).decode("utf-8", "backslashreplace")
        raise SlideOpenError(
            f"{shown}: the file name is not valid UTF-8, so it cannot be recorded in outputs; "
            "rename the file (e.g. with convmv or a UTF-8 name)"
        ) from None
