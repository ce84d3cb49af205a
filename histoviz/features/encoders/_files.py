"""Weights files: where they are looked for and what they hold (tensors only, never objects).

Files are read as tensors only: safetensors, or torch files with ``weights_only=True``; a
pickled object is refused, never executed. Shapes are read without loading the data (the
safetensors header, or a torch file mapped to the ``meta`` device). Every failure of an
untrusted file is one :class:`~histoviz.errors.WeightsMismatchError` line.
"""

from __future__ import annotations

import json
import os
import struct
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from histoviz.errors import MissingWeightsError, WeightsMismatchError

if TYPE_CHECKING:
    import torch

__all__ = ["describe_weights_file", "find_weights", "load_state_dict_file", "read_tensor_shapes",
           "require_weights"]

_MAX_HEADER = 1 << 27  # a safetensors header larger than 128 MB is not a weights file
_WRAPPERS = ("state_dict", "model", "teacher", "student", "module")


class _Published(Protocol):
    """What the look-up needs of an :class:`~histoviz.features.encoders.EncoderInfo`."""

    name: str
    hf_repo: str | None
    hf_filename: str | None

    @property
    def filenames(self) -> tuple[str, ...]: ...


# ------------------------------------------------------------------------------------------------
# where
# ------------------------------------------------------------------------------------------------
def _hf_cache_dirs() -> list[Path]:
    dirs = []
    for env in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(env):
            dirs.append(Path(os.environ[env]))
    if os.environ.get("HF_HOME"):
        dirs.append(Path(os.environ["HF_HOME"]) / "hub")
    dirs.append(Path.home() / ".cache" / "huggingface" / "hub")
    return dirs


def find_weights(info: _Published, weights: str | os.PathLike | None = None) -> Path | None:
    """Locate a weights file for ``info`` without touching the network.

    Looked for in order: ``weights``; ``$HISTOVIZ_WEIGHTS_DIR/<name>.{safetensors,bin,pth,pt}``;
    ``$HISTOVIZ_WEIGHTS_DIR/<name>/<published file name>``; the Hugging Face cache
    (``models--<org>--<repo>/snapshots/<revision>/<published file name>``).
    """
    if weights is not None:
        p = Path(weights)
        return p if p.is_file() else None
    wdir = os.environ.get("HISTOVIZ_WEIGHTS_DIR")
    if wdir:
        for ext in (".safetensors", ".bin", ".pth", ".pt"):
            p = Path(wdir) / f"{info.name}{ext}"
            if p.is_file():
                return p
        for fname in info.filenames:
            if (Path(wdir) / info.name / fname).is_file():
                return Path(wdir) / info.name / fname
    if info.hf_repo:
        repo_dir = ("models--" + info.hf_repo.replace("/", "--")).lower()
        for cache in _hf_cache_dirs():
            # Hub ids are case-insensitive (MahmoodLab/UNI and MahmoodLab/uni are one repo)
            found = [d for d in (cache.iterdir() if cache.is_dir() else ()) if d.name.lower() == repo_dir]
            for snaps in (d / "snapshots" for d in sorted(found)):
                if not snaps.is_dir():
                    continue
                for fname in info.filenames:
                    for snap in sorted(snaps.iterdir()):
                        p = snap / fname
                        if p.is_file():
                            return p
    return None


def require_weights(info: _Published, weights: str | os.PathLike | None) -> Path:
    """:func:`find_weights` or a one-line :class:`MissingWeightsError` saying where to put it."""
    p = find_weights(info, weights)
    if p is None:
        where = f"--weights PATH, $HISTOVIZ_WEIGHTS_DIR/{info.name}.safetensors"
        if info.hf_repo:
            where += f", or the Hugging Face cache ({info.hf_repo}/{info.hf_filename})"
        given = f" ({weights} does not exist)" if weights else ""
        raise MissingWeightsError(
            f"encoder {info.name!r} needs pretrained weights{given}; none are downloaded. Put "
            f"them at {where}, or use pretrained=False / --random-weights for random weights"
        )
    return p


# ------------------------------------------------------------------------------------------------
# what a file holds
# ------------------------------------------------------------------------------------------------
def describe_weights_file(path: str | os.PathLike) -> str:
    """Say what a weights file is without loading it (see :meth:`EncoderInfo.weights_status`)."""
    import zipfile

    p = Path(path)
    if p.stat().st_size == 0:
        return f"unusable ({p}: empty file, 0 bytes; copy the weights again)"
    if p.suffix == ".safetensors":
        try:
            tensors = _safetensors_header(p)
        except WeightsMismatchError as e:
            return f"unusable ({e})"
        return f"available ({p}, safetensors, {len(tensors)} tensors)"
    kind = "zip" if zipfile.is_zipfile(p) else "legacy"
    return (f"found, unverified ({p}: torch pickle ({kind}) file, checked only when loaded; "
            "histoviz accepts tensors only (weights_only=True); prefer a .safetensors copy)")


def _unreadable(path: Path, why: str) -> WeightsMismatchError:
    return WeightsMismatchError(
        f"{path}: not a readable weights file ({why}); histoviz reads .safetensors files and "
        "torch tensor files (weights_only), never pickled objects: download the published file again")


def _safetensors_header(path: Path) -> dict[str, tuple[int, ...]]:
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise _unreadable(path, f"not a safetensors file: {size} bytes, shorter than a safetensors header")
            (n,) = struct.unpack("<Q", head)
            if not 2 <= n <= min(_MAX_HEADER, size - 8):
                raise _unreadable(path, f"not a safetensors file: header length {n} does not fit a {size}-byte file")
            meta = json.loads(fh.read(n))
    except WeightsMismatchError:
        raise
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise _unreadable(path, f"not a safetensors file: {type(e).__name__}: {str(e)[:120]}") from None
    if not isinstance(meta, dict):
        raise _unreadable(path, "not a safetensors file: its header is not a table of tensors")
    try:
        return {k: tuple(int(d) for d in v["shape"]) for k, v in meta.items() if k != "__metadata__"}
    except (TypeError, KeyError, ValueError):
        raise _unreadable(path, "not a safetensors file: its header is not a table of tensors") from None


def _torch_load(path: Path, *, map_location: str, mmap: bool = False) -> Any:
    import torch

    try:
        if path.stat().st_size == 0:
            raise _unreadable(path, "the file is empty")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except WeightsMismatchError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure of an untrusted file is one line
        msg = str(e).strip().splitlines()[0][:120] if str(e).strip() else ""
        if type(e).__name__ == "UnpicklingError" and "Weights only load failed" in str(e):
            msg = "it holds pickled objects, not only tensors"
        raise _unreadable(path, f"{type(e).__name__}{': ' + msg if msg else ''}") from None


def _tensors_of(obj: Any, path: Path) -> dict[str, Any]:
    """The flat ``name -> tensor`` table of a loaded torch file (unwrapping ``state_dict`` etc.)."""
    import torch

    for _ in range(3):
        if isinstance(obj, Mapping):
            inner = [obj[k] for k in _WRAPPERS if isinstance(obj.get(k), Mapping)]
            if inner and not any(isinstance(v, torch.Tensor) for v in obj.values()):
                obj = inner[0]
                continue
        break
    if not isinstance(obj, Mapping):
        raise _unreadable(path, f"it holds a {type(obj).__name__}, not a table of tensors")
    out = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not out:
        raise _unreadable(path, "it holds no tensors")
    return out


def _with_data(sd: dict[str, Any], path: Path) -> dict[str, Any]:
    if any(v.is_meta for v in sd.values()):
        raise _unreadable(path, "its tensors carry shapes but no data (saved from the meta device)")
    return sd


def read_tensor_shapes(path: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """``name -> shape`` of every tensor in a weights file, without reading the data."""
    p = Path(path)
    if not p.is_file():
        raise MissingWeightsError(f"{p}: no such weights file")
    if p.suffix == ".safetensors":
        return _safetensors_header(p)
    return {k: tuple(v.shape) for k, v in _tensors_of(_torch_load(p, map_location="meta"), p).items()}


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load the tensors of a weights file (safetensors, or torch with ``weights_only``)."""
    p = Path(path)
    if p.suffix == ".safetensors":
        _safetensors_header(p)  # one line for a broken file, before safetensors' own error
        from safetensors.torch import load_file

        try:
            return load_file(str(p))
        except Exception as e:  # noqa: BLE001
            raise _unreadable(p, f"{type(e).__name__}: {str(e)[:120]}") from None
    return _with_data(_tensors_of(_torch_load(p, map_location="cpu", mmap=_is_zip(p)), p), p)


def _is_zip(p: Path) -> bool:
    import zipfile

    return zipfile.is_zipfile(p)
