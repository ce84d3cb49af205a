"""Whether a weights file fits an encoder, and loading it only when it does.

A file fits an encoder when every tensor the encoder's published layout has is in the file
with the same shape (:func:`check_weights`, ``histoviz encoders --check NAME FILE``); what
differs is said in one line with what it suggests (another patch size, registers, depth,
width, another library's naming) and which registered encoder the file fits instead.
"""

from __future__ import annotations

import functools
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from histoviz.errors import WeightsMismatchError
from histoviz.features.encoders._files import load_state_dict_file, read_tensor_shapes
from histoviz.features.encoders._registry import create_encoder, encoder_info, list_encoders

if TYPE_CHECKING:
    from torch import nn

    from histoviz.features.encoders._base import PatchEncoder

__all__ = ["WeightsFit", "check_weights", "encoder_layout", "fit_shapes", "load_weights",
           "published_layout"]

#: keys an encoder computes at construction; a file may omit them
_DERIVED = ("attn_mask", "relative_position_index", "relative_coords_table")


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
