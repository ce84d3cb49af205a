"""Reduced-precision encoders for machines without a GPU.

``int8``: PyTorch dynamic quantisation of every ``nn.Linear`` (weights stored as int8, activations
quantised per batch; CPU only). ``bf16``: the network's weights and activations in bfloat16
(fast where the CPU has AVX512-BF16 or AMX, or on a GPU). Preprocessing stays in float32 and
the embeddings come out as float32 in every case.

The precision is part of a bag's recipe (:mod:`histoviz.features.recipe`), so bags made at
another precision are never mixed with fp32 bags; ``bench/bench_precision.py`` measures the
speed, the cosine to fp32 embeddings on real H&E tiles and the change in a downstream model.
"""

from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING

from histoviz.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from histoviz.features.encoders._base import PatchEncoder

__all__ = ["PRECISIONS", "apply_precision", "bf16_supported", "check_precision", "check_precision_device"]

log = logging.getLogger(__name__)

#: the precisions an encoder can run at
PRECISIONS = ("fp32", "bf16", "int8")


def check_precision(precision: str) -> str:
    """``precision`` if known, else a one-line :class:`ConfigError`."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    return precision


def bf16_supported() -> bool:
    """Whether this machine's CPU has native bfloat16 matrix instructions (AVX512-BF16 or AMX)."""
    import torch

    try:
        cap = torch.backends.cpu.get_cpu_capability()
    except AttributeError:  # pragma: no cover - older torch
        cap = ""
    if "AMX" in cap.upper():
        return True
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # pragma: no cover - torch without oneDNN
        return False


def check_precision_device(precision: str, device: torch.device | str) -> None:
    """Refuse a precision the device cannot run (int8 on a GPU; bf16 on a CPU without it)."""
    import torch

    dev = torch.device(device)
    if precision == "int8" and dev.type != "cpu":
        raise ConfigError(f"precision int8 (dynamic quantisation) runs on the CPU only, not on {dev}; "
                          "use --device cpu, or --precision bf16 on the GPU")
    if precision == "bf16" and dev.type == "cpu" and not bf16_supported():
        raise ConfigError("precision bf16 needs a CPU with AVX512-BF16 or AMX instructions, which "
                          "this one lacks (it would be slower than fp32); use --precision int8")


def apply_precision(enc: PatchEncoder, precision: str) -> PatchEncoder:
    """Put an encoder's network at ``precision`` (in place) and record it on the encoder.

    Parameters
    ----------
    enc
        A built encoder (eval mode).
    precision
        ``"fp32"`` (unchanged), ``"bf16"`` (weights cast to bfloat16, inputs cast before the
        network, outputs back to float32) or ``"int8"`` (dynamic int8 quantisation of the
        linear layers; the encoder then runs on the CPU only).

    Raises
    ------
    ConfigError
        Unknown precision, or an encoder without learned weights (nothing to reduce).
    """
    import torch
    from torch import nn

    check_precision(precision)
    if precision == "fp32":
        return enc
    module = enc.weights_module()
    if not any(True for _ in module.parameters()):
        raise ConfigError(f"encoder {enc.name!r} has no learned weights, so --precision {precision} "
                          "changes nothing; leave it at fp32")
    if precision == "bf16":
        module.to(torch.bfloat16)
        enc.compute_dtype = torch.bfloat16
    else:
        if any(p.device.type != "cpu" for p in module.parameters()):
            raise ConfigError(f"precision int8 quantises on the CPU; build {enc.name!r} on the CPU")
        with warnings.catch_warnings():  # torch.ao.quantization announces its successor (torchao)
            warnings.simplefilter("ignore")
            torch.ao.quantization.quantize_dynamic(module, {nn.Linear}, dtype=torch.qint8, inplace=True)
    enc.precision = precision
    log.info("encoder %s runs at %s", enc.name, precision)
    return enc
