"""Patch encoders, slide embedding and cohort embedding.

Importing this subpackage imports torch.
"""

from __future__ import annotations

from histoviz.features.embed import EmbedStats, embed_slide, resolve_device
from histoviz.features.encoders import (
    EncoderInfo,
    PatchEncoder,
    create_encoder,
    encoder_info,
    list_encoders,
    register_encoder,
)

__all__ = [
    "EmbedStats",
    "EncoderInfo",
    "PatchEncoder",
    "create_encoder",
    "embed_cohort",
    "embed_slide",
    "encoder_info",
    "list_encoders",
    "register_encoder",
    "resolve_device",
]


def embed_cohort(*args, **kwargs):
    """See :func:`histoviz.features.cohort.embed_cohort`."""
    from histoviz.features.cohort import embed_cohort as _f

    return _f(*args, **kwargs)
