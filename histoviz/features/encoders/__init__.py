"""Patch encoders: a registry of image models that map tiles to embeddings.

Every encoder takes a ``uint8`` tensor ``(B, 3, H, W)`` (or an already normalised float
tensor) and returns ``(B, embed_dim)`` float features. Resizing, cropping and normalisation
happen inside the module, so they run on the GPU with the forward pass.

Weights are never downloaded. Pretrained encoders look for a local file (``weights=``,
``$HISTOVIZ_WEIGHTS_DIR``, or an existing Hugging Face cache), check that it fits
(:func:`check_weights`) and raise :class:`~histoviz.errors.MissingWeightsError` naming the
file they expected, or :class:`~histoviz.errors.WeightsMismatchError` saying what differs.

Modules: ``_registry`` (the registry), ``_base`` (base classes), ``_files`` (finding and
reading weights files), ``_weights`` (checking that a file fits, loading), ``builtin`` (test, CNN and weight-free encoders),
``foundation`` (pathology foundation models as published), ``precision`` (int8 / bf16).
"""

from __future__ import annotations

from histoviz.features.encoders import builtin, foundation  # noqa: F401 - registers the encoders
from histoviz.features.encoders._base import IMAGENET_MEAN, IMAGENET_STD, PatchEncoder, TimmEncoder
from histoviz.features.encoders._files import (
    describe_weights_file,
    find_weights,
    load_state_dict_file,
    read_tensor_shapes,
    require_weights,
)
from histoviz.features.encoders._registry import (
    EncoderInfo,
    create_encoder,
    encoder_info,
    list_encoders,
    register_encoder,
)
from histoviz.features.encoders._weights import WeightsFit, check_weights, load_weights
from histoviz.features.encoders.builtin import EfficientNetLite0Encoder, MorphologyEncoder
from histoviz.features.encoders.foundation import PUBLISHED, Published
from histoviz.features.encoders.precision import PRECISIONS, apply_precision, check_precision_device

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PRECISIONS",
    "PUBLISHED",
    "EfficientNetLite0Encoder",
    "EncoderInfo",
    "MorphologyEncoder",
    "PatchEncoder",
    "Published",
    "TimmEncoder",
    "WeightsFit",
    "apply_precision",
    "check_precision_device",
    "check_weights",
    "create_encoder",
    "describe_weights_file",
    "encoder_info",
    "find_weights",
    "list_encoders",
    "load_state_dict_file",
    "load_weights",
    "read_tensor_shapes",
    "register_encoder",
    "require_weights",
]
