"""What a model was trained on, and whether a slide is synthetic.

A model trained on histoviz's synthetic slides (:mod:`histoviz.data.synthetic`) learns the
generator's colours and textures, not tissue: applied to a real slide it still paints confident
maps (CPNN once labelled 38 of 48 patches of a real skin slide "lymphocyte"). The front ends
(``histoviz predict``, napari, the dashboard) ask this module and say so.

How synthetic data are recognised: the generator writes ``manifest.json`` (``"generator":
"histoviz.data.synthetic"``, the list of slide files) at the root of every cohort it makes.

- :func:`slide_is_synthetic`: a slide file listed in the manifest of the cohort folder it sits in;
- :func:`cohort_is_synthetic`: a cohort table next to such a manifest;
- :func:`training_data`: what a run directory was trained on (encoder, cohort, synthetic or not),
  from its ``config.yaml`` (and the slides named in its feature bags when the cohort table has
  moved);
- :func:`synthetic_mismatch`: the one-line warning when a synthetic-trained model meets a slide
  that is not synthetic (``None`` when there is nothing to say);
- :func:`prediction_warning`: the same for a prediction AnnData (``uns["histoviz"]``).

Answers are ``True`` / ``False`` / ``None`` (unknown: the files that would tell are not here).
This module reads JSON, YAML and HDF5 attributes only; it imports nothing above :mod:`histoviz.io`.

Examples
--------
>>> slide_is_synthetic("no/such/slide.tif") is None
True
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "GENERATOR",
    "cohort_is_synthetic",
    "prediction_trained_on",
    "prediction_warning",
    "slide_is_synthetic",
    "synthetic_mismatch",
    "training_data",
]

log = logging.getLogger(__name__)

#: ``manifest.json["generator"]`` of the synthetic cohorts
GENERATOR = "histoviz.data.synthetic"


def _manifest(root: Path) -> dict[str, Any] | None:
    p = root / "manifest.json"
    try:
        doc = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.get("generator") == GENERATOR else None


def slide_is_synthetic(path: str | os.PathLike | None) -> bool | None:
    """Whether a slide file was made by the synthetic generator.

    Parameters
    ----------
    path
        Slide file.

    Returns
    -------
    ``True`` when the file is listed in the ``manifest.json`` of a synthetic cohort folder
    above it (up to three levels), ``False`` for an existing file that is not, ``None`` when
    there is no path or the file is not on this machine.
    """
    if not path:
        return None
    p = Path(path)
    if not p.is_file():
        return None
    p = p.resolve()
    for root in list(p.parents)[:3]:
        man = _manifest(root)
        if man is None:
            continue
        rel = p.relative_to(root).as_posix()
        files = man.get("files") or []
        slides = {f"slides/{s}.tif" for s in man.get("slides") or []}
        if rel in files or rel in slides:
            return True
    return False


def cohort_is_synthetic(cohort: str | os.PathLike | None) -> bool | None:
    """Whether a cohort table (or cohort folder) is a synthetic cohort (``None``: not here)."""
    if not cohort:
        return None
    p = Path(cohort)
    root = p if p.is_dir() else p.parent
    if not p.exists():
        return None
    return _manifest(root) is not None


def _read_config(run_dir: Path) -> dict[str, Any]:
    import yaml

    p = run_dir / "config.yaml"
    try:
        doc = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _bag_slides(features_dir: Path, limit: int = 3) -> list[str]:
    """``slide_path`` attributes of the first few feature bags of a folder (HDF5 attributes only)."""
    import h5py

    out: list[str] = []
    try:
        files = sorted(features_dir.glob("*.h5"))[:limit]
    except OSError:
        return out
    for f in files:
        try:
            with h5py.File(f, "r") as h:
                sp = h.attrs.get("slide_path")
        except OSError:
            continue
        if sp:
            out.append(sp.decode() if isinstance(sp, bytes) else str(sp))
    return out


def training_data(run: str | os.PathLike | Any) -> dict[str, Any]:
    """What a run was trained on.

    Parameters
    ----------
    run
        A run directory, a checkpoint folder inside one, or an object with ``run_dir``,
        ``config`` and ``features`` attributes (:class:`histoviz.predict.RunModel`).

    Returns
    -------
    ``{"encoder", "cohort", "features", "synthetic", "evidence"}``: ``synthetic`` is ``True``
    when the training cohort (or the slides its feature bags were made from) came from the
    synthetic generator, ``False`` when they exist and did not, ``None`` when neither the cohort
    table nor those slides are on this machine; ``evidence`` says which file decided.
    """
    features: Mapping[str, Any] = {}
    if hasattr(run, "run_dir"):
        run_dir = Path(run.run_dir)
        cfg = dict(getattr(run, "config", {}) or {})
        try:
            features = dict(run.features)
        except (AttributeError, IndexError):
            features = {}
    else:
        run_dir = Path(run)
        if (run_dir / "model.json").exists() and run_dir.parent.name == "checkpoints":
            run_dir = run_dir.parent.parent
        cfg = _read_config(run_dir)
    data = cfg.get("data") or {}
    if not features:
        features = ((cfg.get("_run") or {}).get("features")) or {}
    embed = features.get("embed") or {}
    out: dict[str, Any] = {
        "encoder": embed.get("encoder") or features.get("encoder"),
        "cohort": data.get("cohort"),
        "features": data.get("features"),
        "synthetic": None,
        "evidence": "",
    }
    recorded = features.get("synthetic")
    if isinstance(recorded, bool):
        out["synthetic"], out["evidence"] = recorded, "recorded in the run's features"
        return out
    syn = cohort_is_synthetic(data.get("cohort"))
    if syn is not None:
        out["synthetic"] = syn
        out["evidence"] = f"{data.get('cohort')}" + (" sits beside a synthetic-cohort manifest.json" if syn else
                                                     " has no synthetic-cohort manifest.json")
        return out
    if data.get("features"):
        for sp in _bag_slides(Path(str(data["features"]))):
            s = slide_is_synthetic(sp)
            if s is not None:
                out["synthetic"] = s
                out["evidence"] = f"feature bags were made from {sp}"
                return out
    return out


def synthetic_mismatch(trained: Mapping[str, Any] | None, slide_path: str | os.PathLike | None, *,
                       slide_name: str | None = None) -> str | None:
    """One-line warning when a synthetic-trained model is applied to a non-synthetic slide.

    Parameters
    ----------
    trained
        :func:`training_data` of the run (or ``uns["histoviz"]["trained_on"]``).
    slide_path
        The slide the model is applied to.
    slide_name
        How to call the slide in the message (default: the file name).

    Returns
    -------
    The warning, or ``None`` when the model was not trained on synthetic slides, or the slide
    is synthetic too. A slide whose file is not here counts as not synthetic: the warning then
    says that it could not be checked.
    """
    if not trained or trained.get("synthetic") is not True:
        return None
    syn = slide_is_synthetic(slide_path)
    if syn:
        return None
    name = slide_name or (Path(str(slide_path)).name if slide_path else "this slide")
    what = "is not a synthetic slide" if syn is False else "could not be checked (its file is not here)"
    return (f"this model was trained on synthetic slides (histoviz synth) and {name} {what}: its maps "
            "show what the model learnt from the generator's colours and textures, not biology")


def _json_mapping(v: Any) -> Mapping[str, Any] | None:
    if isinstance(v, str):
        try:
            v = json.loads(v)
        except ValueError:
            return None
    return v if isinstance(v, Mapping) else None


def prediction_trained_on(info: Mapping[str, Any]) -> dict[str, Any] | None:
    """What the model of a prediction was trained on, from its ``uns["histoviz"]``: the recorded
    ``trained_on`` (:func:`training_data` at prediction time), else, for files written before it
    was recorded, whether the cohort of the recorded run config is synthetic. ``None`` when
    neither says."""
    trained = _json_mapping(info.get("trained_on"))
    if trained is not None:
        return dict(trained)
    cfg = _json_mapping(info.get("config"))
    cohort = ((cfg or {}).get("data") or {}).get("cohort") if cfg else None
    return {"cohort": cohort, "synthetic": cohort_is_synthetic(cohort)} if cohort else None


def prediction_warning(adata: Any, *, slide_path: str | os.PathLike | None = None) -> str | None:
    """:func:`synthetic_mismatch` for a prediction: the sentence the CLI, napari and the
    dashboard show.

    Parameters
    ----------
    adata
        A prediction AnnData, or its ``uns["histoviz"]`` mapping.
    slide_path
        The slide the maps are shown on (default: ``uns["histoviz"]["slide_path"]``).
    """
    info = adata.uns.get("histoviz", {}) if hasattr(adata, "uns") else (adata or {})
    trained = prediction_trained_on(info)
    if trained is None:
        return None
    sp = slide_path if slide_path is not None else info.get("slide_path")
    return synthetic_mismatch(trained, sp, slide_name=str(info.get("slide_id") or "") or None)
