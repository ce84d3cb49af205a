"""The embedding recipe: everything that decides what a feature bag holds.

Two bags can be mixed (in one training set, or a resumed run) only when they were made the
same way: same encoder and weights, same tiles (size, resolution, overlap) chosen by the same
tissue detection. The recipe is stored in every bag (attribute ``recipe``, JSON) and in
``embed_config.json`` of a feature folder; :func:`compare_recipes` lists the differences.

For a consumer (e.g. ``predict`` checking that a bag fits a model)::

    from histoviz.features.recipe import compare_recipes, embedding_recipe

    diffs = compare_recipes(model_recipe, embedding_recipe(bag), keys=("encoder", "mpp", "tile_size"))
    if diffs: raise DataError(f"{path}: made differently from the model's bags: {'; '.join(diffs)}")

This module does not import torch.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "RECIPE_KEYS",
    "TILING_KEYS",
    "compare_recipes",
    "embedding_recipe",
    "file_digest",
    "make_recipe",
    "weights_digest",
]

#: keys that describe the tiles (everything but the encoder)
TILING_KEYS = ("tile_size", "mpp", "overlap", "min_tissue_fraction", "max_artifact_fraction",
               "min_sharpness", "mask_method", "mask_mpp", "mask_weights", "mpp_override")
#: every key of a recipe, in the order differences are listed
RECIPE_KEYS = ("encoder", "weights", "precision", *TILING_KEYS)

_DIGESTS: dict[tuple[str, int, int], str] = {}
_DIGEST_LOCK = threading.Lock()


def file_digest(path: str | os.PathLike) -> str:
    """``sha256:<hex>`` of a file (cached per path, size and mtime in this process)."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    with _DIGEST_LOCK:
        if key in _DIGESTS:
            return _DIGESTS[key]
    h = hashlib.sha256()
    with open(p, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    d = f"sha256:{h.hexdigest()}"
    with _DIGEST_LOCK:
        _DIGESTS[key] = d
    return d


def weights_digest(encoder: str, encoder_kwargs: Mapping[str, Any] | None = None) -> str:
    """What identifies an encoder's weights, without building it.

    Parameters
    ----------
    encoder
        Registry name.
    encoder_kwargs
        Its arguments (``pretrained``, ``weights``, ...).

    Returns
    -------
    ``"sha256:<hex>"`` of the weights file that would be loaded; ``"none"`` for weight-free
    encoders; ``"random:seed=0"`` for random weights (deterministic, see
    :func:`histoviz.features.create_encoder`).
    """
    from histoviz.features.encoders import encoder_info, find_weights

    kw = dict(encoder_kwargs or {})
    info = encoder_info(encoder)
    if info.weights == "none":
        return "none"
    if not kw.get("pretrained", True) or info.weights == "builtin":
        if kw.get("weights") is not None:
            return file_digest(kw["weights"])
        return f"random:seed={int(kw.get('seed', 0))}"
    if kw.get("weights") is not None:
        return file_digest(kw["weights"])
    if info.weights.startswith("package:"):
        return file_digest(info.package_weights())
    path = find_weights(info)
    return file_digest(path) if path is not None else "missing"


def _num(v: Any) -> float | None:
    if v is None:
        return None
    f = float(v)
    return None if math.isnan(f) or f < 0 else round(f, 9)


def make_recipe(
    encoder: str,
    tiling: Mapping[str, Any] | Any | None = None,
    *,
    weights: str | None = None,
    encoder_kwargs: Mapping[str, Any] | None = None,
    precision: str | None = None,
) -> dict[str, Any]:
    """The recipe of bags made with an encoder and a tiling configuration.

    Parameters
    ----------
    encoder
        Registry name.
    tiling
        A :class:`~histoviz.tiling.TilingConfig` or its fields (defaults fill the rest).
    weights
        Weights digest; computed with :func:`weights_digest` from ``encoder_kwargs`` when
        omitted.
    encoder_kwargs
        Arguments the encoder is built with.
    precision
        ``fp32``, ``bf16`` or ``int8`` (see :func:`~histoviz.features.encoders.apply_precision`);
        taken from ``encoder_kwargs`` when omitted.

    Returns
    -------
    A JSON-ready dict with :data:`RECIPE_KEYS`.
    """
    from dataclasses import asdict, is_dataclass

    from histoviz.tiling.grid import TilingConfig

    if tiling is None:
        cfg = TilingConfig()
    elif is_dataclass(tiling):
        cfg = tiling
    else:
        cfg = TilingConfig(**dict(tiling))
    t = asdict(cfg)
    mask_w = t.get("mask_weights")
    return {
        "encoder": encoder,
        "weights": weights if weights is not None else weights_digest(encoder, encoder_kwargs),
        "precision": str(precision or (encoder_kwargs or {}).get("precision") or "fp32"),
        "tile_size": int(t["tile_size"]),
        "mpp": _num(t["mpp"]),
        "overlap": _num(t["overlap"]),
        "min_tissue_fraction": _num(t["min_tissue_fraction"]),
        "max_artifact_fraction": _num(t["max_artifact_fraction"]),
        "min_sharpness": _num(t["min_sharpness"]),
        "mask_method": str(t["mask_method"]),
        "mask_mpp": _num(t["mask_mpp"]),
        "mask_weights": file_digest(mask_w) if mask_w else None,
        "mpp_override": _num(t["mpp_override"]),
    }


def embedding_recipe(bag_or_attrs: Any) -> dict[str, Any]:
    """The recipe a bag was made with.

    Parameters
    ----------
    bag_or_attrs
        A :class:`~histoviz.io.FeatureBag`, its ``attrs`` mapping, or the path of a ``.h5`` bag.

    Returns
    -------
    The stored recipe (attribute ``recipe``). Bags of older histoviz versions or of other
    tools (CLAM, TRIDENT) have none: what their attributes say is returned (``encoder``,
    ``tile_size``, ``mpp``), the other keys are ``None`` and ``"recipe": "unrecorded"`` is set.
    """
    attrs: Mapping[str, Any]
    if isinstance(bag_or_attrs, (str, os.PathLike)):
        from histoviz.io.featurebag import read_bag_attrs

        attrs = read_bag_attrs(bag_or_attrs)
    elif hasattr(bag_or_attrs, "attrs") and not isinstance(bag_or_attrs, Mapping):
        attrs = bag_or_attrs.attrs
    else:
        attrs = bag_or_attrs
    raw = attrs.get("recipe")
    if raw:
        rec = json.loads(raw) if isinstance(raw, (str, bytes)) else dict(raw)
        out = {k: rec.get(k) for k in RECIPE_KEYS}
        if out["precision"] is None:  # recipes before precision existed: full-precision weights
            out["precision"] = "fp32"
        return out
    out: dict[str, Any] = dict.fromkeys(RECIPE_KEYS)
    out["encoder"] = attrs.get("encoder")
    out["tile_size"] = int(attrs["tile_size"]) if attrs.get("tile_size") is not None else None
    out["mpp"] = _num(attrs.get("mpp"))
    out["recipe"] = "unrecorded"
    return out


def compare_recipes(a: Mapping[str, Any], b: Mapping[str, Any],
                    keys: Iterable[str] | None = None) -> list[str]:
    """Differences between two recipes, one readable string per key.

    Parameters
    ----------
    a, b
        Recipes (:func:`make_recipe`, :func:`embedding_recipe`).
    keys
        Keys to compare (default :data:`RECIPE_KEYS`). A key unrecorded on either side (a bag
        from an older version) counts as a difference: nothing is assumed.

    Returns
    -------
    ``["mpp: 0.5 vs 1.0", "weights: sha256:ab12.. vs random:seed=0", ...]``; empty when equal.

    Examples
    --------
    >>> compare_recipes({"encoder": "uni", "mpp": 0.5}, {"encoder": "uni", "mpp": 1.0}, ["encoder", "mpp"])
    ['mpp: 0.5 vs 1.0']
    """
    def show(v: Any) -> str:
        if isinstance(v, str) and v.startswith("sha256:"):
            return v[:19] + ".."
        return repr(v)

    legacy = a.get("recipe") == "unrecorded" or b.get("recipe") == "unrecorded"
    diffs = []
    keys = list(keys) if keys is not None else list(RECIPE_KEYS)
    for k in keys:
        va, vb = a.get(k), b.get(k)
        if legacy and (va is None or vb is None):
            continue  # said once below
        if isinstance(va, (int, float)) and isinstance(vb, (int, float)):
            same = math.isclose(float(va), float(vb), rel_tol=1e-9, abs_tol=1e-12)
        else:
            same = va == vb
        if not same:
            diffs.append(f"{k}: {show(va)} vs {show(vb)}")
    unknown = [k for k in keys if a.get(k) is None or b.get(k) is None]
    if legacy and unknown:
        diffs.append(f"{', '.join(unknown)}: not recorded (a bag made by histoviz < 0.2 or another "
                     "tool), so they cannot be checked")
    return diffs
