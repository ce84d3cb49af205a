"""Feature bags made elsewhere (TRIDENT, CLAM) as a cohort's features under their encoder name.

TRIDENT writes ``<job>/<mag>x_<size>px_<overlap>px_overlap/features_<encoder>/<slide>.h5`` and CLAM
``<dir>/h5_files/<slide>.h5``: datasets ``coords`` (level-0 top-left corners) and ``features``;
TRIDENT keeps ``patch_size``, ``patch_size_level0``, ``target_magnification`` on ``coords``,
CLAM ``patch_size`` and ``patch_level``; neither records microns per pixel.

:func:`link_feature_folder` writes, for every cohort slide with a bag, a small
``<features>/<encoder>/<slide_id>.h5`` whose ``coords`` and ``features`` are HDF5 *external links*
to the original file (nothing is copied) and whose attributes say what histoviz needs: slide id,
encoder, dimension, tile size and, where it can be known, the tile resolution: the slide's own
mpp times ``patch_size_level0 / patch_size`` (the slide was opened), else ``10 / magnification``
(an estimate, said so in ``mpp_source``), else none (maps still place, resolution checks are
skipped with a note).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from histoviz.errors import DataError

__all__ = ["encoder_from_folder", "feature_files", "link_feature_folder"]


def feature_files(folder: str | os.PathLike) -> tuple[Path, list[Path]]:
    """The folder that holds the ``.h5`` bags under ``folder`` (itself, one ``features_*`` or
    ``h5_files`` folder below it) and its bags.

    Raises
    ------
    DataError
        No bags, or several ``features_*`` folders (the caller must pick one).
    """
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"{root}: feature folder not found")
    own = sorted(root.glob("*.h5"))
    if own:
        return root, own
    subs = sorted({p.parent for p in root.rglob("*.h5") if p.parent.name.startswith(("features_", "h5_files"))})
    if len(subs) > 1:
        raise DataError(f"{root}: holds several feature folders ({[str(s.relative_to(root)) for s in subs][:5]}); "
                        "pass the one of the encoder you want")
    if not subs:
        raise DataError(f"{root}: no .h5 feature files here (TRIDENT: .../features_<encoder>/, CLAM: .../h5_files/)")
    return subs[0], sorted(subs[0].glob("*.h5"))


def encoder_from_folder(folder: str | os.PathLike) -> str | None:
    """``uni_v1`` for a TRIDENT ``features_uni_v1`` folder, else ``None``."""
    name = Path(folder).name
    return name[len("features_"):] if name.startswith("features_") and len(name) > 9 else None


def _attrs_of(path: Path) -> tuple[dict[str, Any], dict[str, Any], tuple[int, ...], tuple[int, ...]]:
    import h5py

    from histoviz.io.featurebag import _py

    try:
        with h5py.File(path, "r") as f:
            if "coords" not in f or "features" not in f:
                raise DataError(f"{path}: no 'coords' and 'features' datasets; not a TRIDENT/CLAM feature file")
            return ({k: _py(v) for k, v in f.attrs.items()}, {k: _py(v) for k, v in f["coords"].attrs.items()},
                    tuple(f["coords"].shape), tuple(f["features"].shape))
    except OSError as e:
        raise DataError(f"{path}: not a readable HDF5 feature file ({e})") from e


def _match(stem: str, keys: Mapping[str, str]) -> str | None:
    for k in (stem, stem.split(".")[0]):
        if k in keys:
            return keys[k]
    return None


def link_feature_folder(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    slides: pd.DataFrame,
    encoder: str,
) -> dict[str, Any]:
    """Link the bags of ``src`` for the cohort's slides into ``dst`` (see the module docstring).

    Parameters
    ----------
    src
        TRIDENT/CLAM feature folder (or a job folder holding one ``features_*`` folder).
    dst
        The cohort's ``features/<encoder>`` folder (created).
    slides
        The cohort table: ``slide_id``, ``path`` and, when the slides were opened, ``mpp``,
        ``width``, ``height``.
    encoder
        Encoder name recorded in the bags (``uni_v1``, ``conch_v15``, ...).

    Returns
    -------
    ``{"folder", "encoder", "linked", "embed_dim", "without_bag": [...], "unused_files": n,
    "mpp_source": {...}}``.

    Raises
    ------
    DataError
        Unreadable files, bags whose dimensions differ, no bag for any cohort slide.
    """
    import h5py

    folder, files = feature_files(src)
    keys: dict[str, str] = {}
    for sid, p in slides[["slide_id", "path"]].itertuples(index=False):
        keys[str(sid)] = str(sid)
        name = Path(str(p)).name
        keys[name.rsplit(".", 1)[0]] = str(sid)
    meta = slides.set_index("slide_id")
    out = Path(dst)
    out.mkdir(parents=True, exist_ok=True)
    dims: dict[int, list[str]] = {}
    linked, unused, mpp_src = [], 0, {}
    for f in files:
        sid = _match(f.stem, keys)
        if sid is None:
            unused += 1
            continue
        root_attrs, coord_attrs, cshape, fshape = _attrs_of(f)
        if len(fshape) == 3:
            fshape = fshape[1:]
        dims.setdefault(int(fshape[-1]), []).append(sid)
        size = coord_attrs.get("patch_size", root_attrs.get("patch_size", root_attrs.get("tile_size")))
        lvl0 = coord_attrs.get("patch_size_level0", root_attrs.get("tile_size_level0"))
        if lvl0 is None and size is not None and int(coord_attrs.get("patch_level", 0) or 0) == 0:
            lvl0 = size
        mpp, how = root_attrs.get("mpp"), "bag"
        smpp = meta.loc[sid, "mpp"] if "mpp" in meta.columns else None
        if mpp is None and smpp is not None and pd.notna(smpp) and size and lvl0:
            mpp, how = float(smpp) * float(lvl0) / float(size), "slide mpp x patch_size_level0 / patch_size"
        elif mpp is None and coord_attrs.get("target_magnification"):
            mpp, how = 10.0 / float(coord_attrs["target_magnification"]), "estimated as 10 / target magnification"
        elif mpp is None:
            how = "unknown"
        mpp_src[how] = mpp_src.get(how, 0) + 1
        attrs = {"slide_id": sid, "encoder": encoder, "embed_dim": int(fshape[-1]), "source_file": str(f.resolve()),
                 "source_format": "trident" if "patch_size_level0" in coord_attrs else "clam"}
        for k, v in (("tile_size", size), ("tile_size_level0", lvl0), ("mpp", mpp)):
            if v is not None:
                attrs[k] = float(v) if k == "mpp" else int(v)
        spath = meta.loc[sid, "path"]
        attrs["slide_path"] = str(spath)
        for k, c in (("slide_width", "width"), ("slide_height", "height"), ("slide_mpp", "mpp")):
            if c in meta.columns and pd.notna(meta.loc[sid, c]):
                attrs[k] = meta.loc[sid, c].item() if hasattr(meta.loc[sid, c], "item") else meta.loc[sid, c]
        target = out / f"{sid}.h5"
        tmp = out / f".{sid}.linking.h5"
        with h5py.File(tmp, "w") as h:
            h["coords"] = h5py.ExternalLink(str(f.resolve()), "/coords")
            h["features"] = h5py.ExternalLink(str(f.resolve()), "/features")
            for k, v in attrs.items():
                h.attrs[k] = v
        os.replace(tmp, target)
        linked.append(sid)
    if len(dims) > 1:
        raise DataError(f"{folder}: feature dimensions differ between files ("
                        + "; ".join(f"{d}-d: {v[:3]}" for d, v in sorted(dims.items()))
                        + "); give one encoder's folder")
    if not linked:
        raise DataError(f"{folder}: none of its {len(files)} feature files is named after a cohort slide (e.g. "
                        f"{[f.stem for f in files[:3]]} vs {sorted(slides['slide_id'].astype(str))[:3]})")
    return {"folder": str(folder), "encoder": encoder, "linked": len(linked), "embed_dim": next(iter(dims)),
            "without_bag": sorted(set(slides["slide_id"].astype(str)) - set(linked)), "unused_files": unused,
            "mpp_source": mpp_src}
