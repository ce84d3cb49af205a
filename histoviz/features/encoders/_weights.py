"""Weights files: where they are looked for, what they hold, whether they fit an encoder.

A file fits an encoder when every tensor the encoder's published layout has is in the file
with the same shape (:func:`check_weights`, ``histoviz encoders --check NAME FILE``). Files
are read as tensors only: safetensors, or torch files with ``weights_only=True``; a pickled
object is refused, never executed. Shapes are read without loading the data (the safetensors
header, or a torch file mapped to the ``meta`` device).
"""

from __future__ import annotations

import functools
import json
import os
import re
import struct
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from histoviz.errors import MissingWeightsError, WeightsMismatchError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from histoviz.features.encoders._base import PatchEncoder
    from histoviz.features.encoders._registry import EncoderInfo

__all__ = ["WeightsFit", "check_weights", "describe_weights_file", "find_weights",
           "load_state_dict_file", "load_weights", "read_tensor_shapes"]

_MAX_HEADER = 1 << 27  # a safetensors header larger than 128 MB is not a weights file
#: keys an encoder computes at construction; a file may omit them
_DERIVED = ("attn_mask", "relative_position_index", "relative_coords_table")
_WRAPPERS = ("state_dict", "model", "teacher", "student", "module")


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


def find_weights(info: EncoderInfo, weights: str | os.PathLike | None = None) -> Path | None:
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


def require_weights(info: EncoderInfo, weights: str | os.PathLike | None) -> Path:
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
                raise _unreadable(path, f"{size} bytes, shorter than a safetensors header")
            (n,) = struct.unpack("<Q", head)
            if not 2 <= n <= min(_MAX_HEADER, size - 8):
                raise _unreadable(path, f"header length {n} does not fit a {size}-byte file")
            meta = json.loads(fh.read(n))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise _unreadable(path, f"{type(e).__name__}: {str(e)[:120]}") from None
    if not isinstance(meta, dict):
        raise _unreadable(path, "its header is not a table of tensors")
    try:
        return {k: tuple(int(d) for d in v["shape"]) for k, v in meta.items() if k != "__metadata__"}
    except (TypeError, KeyError, ValueError):
        raise _unreadable(path, "its header is not a table of tensors") from None


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


# ------------------------------------------------------------------------------------------------
# does it fit
# ------------------------------------------------------------------------------------------------
@dataclass
class WeightsFit:
    """How a weights file compares with an encoder's published layout.

    ``fits`` when nothing is missing and no shape differs; ``extra`` tensors (not used by the
    encoder and not declared unused) are reported but do not stop loading.
    """

    encoder: str
    path: Path
    n_expected: int
    n_file: int
    prefix: str = ""
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    unused: int = 0
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)
    fits_instead: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        """All tensors present with the right shapes."""
        return not self.missing and not self.mismatched

    def summary(self) -> str:
        """One line: fits, or what differs and what that suggests."""
        if self.fits:
            s = f"{self.path}: fits encoder {self.encoder!r} ({self.n_expected} tensors"
            s += f", prefix {self.prefix!r} removed" if self.prefix else ""
            s += f", {self.unused} unused tensors of other parts" if self.unused else ""
            s += f", {len(self.extra)} extra tensors ignored, e.g. {self.extra[0]}" if self.extra else ""
            return s + ")"
        parts = []
        if self.mismatched:
            k, a, b = self.mismatched[0]
            parts.append(f"{len(self.mismatched)} of {self.n_expected} tensors differ in shape "
                         f"(e.g. {k}: file {a}, encoder {b})")
        if self.missing:
            parts.append(f"{len(self.missing)} of {self.n_expected} tensors missing (e.g. {self.missing[0]})")
        if self.extra:
            parts.append(f"{len(self.extra)} extra (e.g. {self.extra[0]})")
        s = f"{self.path}: does not fit encoder {self.encoder!r}: {'; '.join(parts)}"
        if self.hints:
            s += f"; suggests {'; '.join(self.hints)}"
        if self.fits_instead:
            s += f"; it fits encoder {', '.join(repr(n) for n in self.fits_instead)}"
        return s

    def report(self) -> str:
        """Several lines for ``histoviz encoders --check``."""
        lines = [self.summary()]
        for k, a, b in self.mismatched[:20]:
            lines.append(f"  differs  {k}: file {a}, encoder {b}")
        lines += [f"  missing  {k}" for k in self.missing[:20]]
        lines += [f"  extra    {k}" for k in self.extra[:20]]
        more = max(0, len(self.mismatched) - 20) + max(0, len(self.missing) - 20) + max(0, len(self.extra) - 20)
        if more:
            lines.append(f"  ... and {more} more")
        return "\n".join(lines)


def _strip_prefix(keys: list[str], expected: set[str]) -> tuple[str, dict[str, str]]:
    """The wrapper prefix (``module.``, ``visual.``, ...) whose removal matches most keys."""
    cands = {""}
    for k in keys:
        parts = k.split(".")
        for i in (1, 2):
            if len(parts) > i:
                cands.add(".".join(parts[:i]) + ".")
    best, best_n = "", -1
    for p in sorted(cands, key=len):
        n = sum(1 for k in keys if k.startswith(p) and k[len(p):] in expected)
        if n > best_n:
            best, best_n = p, n
    return best, {k[len(best):]: k for k in keys if k.startswith(best)}


def _block_count(keys: Any) -> int:
    idx = {int(m.group(1)) for k in keys for m in [re.search(r"(?:blocks|layer|layers|resblocks)\.(\d+)\.", k)] if m}
    return max(idx) + 1 if idx else 0


def _hints(file: dict[str, tuple[int, ...]], model: dict[str, tuple[int, ...]],
           mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]], n_matched: int) -> list[str]:
    hints = []
    for k, a, b in mismatched:
        if k.endswith(("patch_embed.proj.weight", "patch_embeddings.projection.weight")) and a[-2:] != b[-2:]:
            hints.append(f"another patch size (file {a[-1]} px, encoder {b[-1]} px)")
            break
    pos = [(k, a, b) for k, a, b in mismatched if k.endswith(("pos_embed", "position_embeddings"))]
    if pos and not hints and pos[0][1][-1] == pos[0][2][-1]:
        hints.append(f"another input size or number of class/register tokens (position table of "
                     f"{pos[0][1][-2]} tokens in the file, {pos[0][2][-2]} in the encoder)")
    widths = [(a[-1], b[-1]) for k, a, b in mismatched if k.endswith(("cls_token", "norm.weight", "layernorm.weight"))]
    if widths and widths[0][0] != widths[0][1]:
        hints.append(f"another model size (width {widths[0][0]} in the file, {widths[0][1]} in the encoder)")
    regs = [(a, b) for k, a, b in mismatched if k.endswith("reg_token")]
    if regs:
        hints.append(f"another number of register tokens (file {regs[0][0][1]}, encoder {regs[0][1][1]})")
    elif any(k.endswith("reg_token") for k in file) != any(k.endswith("reg_token") for k in model):
        hints.append("registers in one and not the other (a model with / without register tokens)")
    df, dm = _block_count(file), _block_count(model)
    if df and dm and df != dm:
        hints.append(f"another depth ({df} blocks in the file, {dm} in the encoder)")
    if n_matched < 0.5 * len(model):
        fk = next(iter(file), "?")
        mk = next(iter(model), "?")
        hints.append(f"another model or another library's naming (file names like {fk!r}, encoder "
                     f"names like {mk!r})")
    return hints


Layout = tuple[dict[str, tuple[int, ...]], tuple[str, ...]]


def encoder_layout(enc: PatchEncoder) -> Layout:
    """``(name -> shape of the published file's tensors, key prefixes the encoder does not use)``."""
    module = enc.weights_module()
    return ({k: tuple(v.shape) for k, v in module.state_dict().items()},
            tuple(getattr(enc, "unused_keys", ())))


@functools.cache
def published_layout(name: str) -> Layout:
    """:func:`encoder_layout` of a registered encoder, built once on the meta device."""
    import torch

    from histoviz.features.encoders._registry import create_encoder

    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return encoder_layout(create_encoder(name, pretrained=False))


def fit_shapes(layout: Layout, shapes: dict[str, tuple[int, ...]], path: str | os.PathLike,
               name: str) -> tuple[WeightsFit, dict[str, str]]:
    """Compare a file's ``name -> shape`` table with an encoder's layout (:func:`encoder_layout`).

    Returns the fit and the mapping ``encoder key -> file key`` used to load.
    """
    model, unused_pre = layout
    prefix, mapping = _strip_prefix(list(shapes), set(model))
    fit = WeightsFit(encoder=name, path=Path(path), n_expected=len(model), n_file=len(shapes),
                     prefix=prefix)
    fit.unused = len(shapes) - len(mapping)
    for k, shape in model.items():
        if k not in mapping:
            if not k.endswith(_DERIVED):
                fit.missing.append(k)
        elif shapes[mapping[k]] != shape:
            fit.mismatched.append((k, shapes[mapping[k]], shape))
    for k in mapping:
        if k not in model:
            if unused_pre and k.startswith(unused_pre):
                fit.unused += 1
            else:
                fit.extra.append(k)
    n_matched = len(model) - len(fit.missing) - len(fit.mismatched)
    if not fit.fits:
        fit.hints = _hints({k: shapes[v] for k, v in mapping.items()}, model, fit.mismatched, n_matched)
    return fit, mapping


def check_weights(name: str, path: str | os.PathLike, *, suggest: bool = True) -> WeightsFit:
    """Whether a weights file fits a registered encoder (every tensor present, same shape).

    Parameters
    ----------
    name
        Registry name.
    path
        The file (safetensors or a torch tensor file). Only its header / tensor table is read.
    suggest
        When it does not fit, also compare it with the other registered encoders that load
        downloaded weights and name those it fits (each built once on the meta device).

    Raises
    ------
    WeightsMismatchError
        The file is not a readable weights file (empty, random bytes, pickled objects).
    MissingWeightsError
        The file does not exist.
    """
    from histoviz.features.encoders._registry import encoder_info, list_encoders

    encoder_info(name)
    shapes = read_tensor_shapes(path)
    fit, _ = fit_shapes(published_layout(name), shapes, path, name)
    if not fit.fits and suggest:
        for info in list_encoders():
            if info.name == name or info.weights != "local":
                continue
            try:
                other, _ = fit_shapes(published_layout(info.name), shapes, path, info.name)
            except Exception:  # noqa: BLE001 - an encoder whose package is absent is skipped
                continue
            if other.fits:
                fit.fits_instead.append(info.name)
    return fit


def load_weights(enc: PatchEncoder, path: str | os.PathLike, name: str | None = None) -> None:
    """Load a weights file into ``enc`` after checking that it fits.

    Raises
    ------
    WeightsMismatchError
        One line: what differs and what it suggests (see :class:`WeightsFit`).
    """
    sd = load_state_dict_file(path)
    fit, mapping = fit_shapes(encoder_layout(enc), {k: tuple(v.shape) for k, v in sd.items()}, path,
                              name or enc.name)
    if not fit.fits:
        raise WeightsMismatchError(
            fit.summary() + f"; see `histoviz encoders --check {fit.encoder} {path}`")
    module: nn.Module = enc.weights_module()
    keys = set(module.state_dict())
    module.load_state_dict({k: sd[v] for k, v in mapping.items() if k in keys}, strict=False)
    enc.weights_source = str(path)
