"""Experiment configs for an imported cohort, made from the shipped ones in ``training/configs``.

Each task's config is the shipped YAML (:func:`histoviz.datasets.config_dir`) with the cohort's
paths and keys filled in, nothing re-typed: the model, its parameters, training and evaluation
settings stay as shipped, so a change there reaches every imported cohort on its next import.

What is filled in: ``data.cohort``, ``data.features`` (``features/<encoder>``), ``data.embed``
(the encoder; dropped for features made elsewhere), the omics modalities present (the shipped
spec of a modality of that name, else ``standardize: true``; value transform from the table's
scale, see :mod:`histoviz.data.omics_import`; ``impute: median`` where values are missing), the
grade classes present and the survival time unit (``allow_missing`` where some patients have no
value), and for spots the sample folder.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["TASKS", "CohortLayout", "render_config", "task_configs"]

#: Task -> shipped template (``training/configs/<file>``).
TASKS: dict[str, str] = {
    "omics": "multiomics.yaml",
    "grade": "grade.yaml",
    "survival": "survival.yaml",
    "grade_survival": "grade_survival.yaml",
    "pathgen": "pathgen.yaml",
    "spots": "st_cmrcnet.yaml",
}


@dataclass
class CohortLayout:
    """What an imported cohort holds (absolute paths).

    Attributes
    ----------
    root, cohort
        The cohort folder and its table.
    features, encoder, embed
        Feature folder, encoder name, whether ``histoviz train`` may embed missing slides (the
        encoder is registered here) or the bags came from elsewhere.
    omics
        ``modality -> {"path", "scale", "missing"}``.
    grade_classes, grade_missing
        Grade classes present (``None``: no grade) and whether some patients lack one.
    survival, survival_missing
        Whether ``time``/``event`` exist, and whether some patients lack them.
    time_unit
        Unit of ``time``.
    spots
        Folder of spot files (``histoviz st-import``), or ``None``.
    """

    root: Path
    cohort: Path
    features: Path
    encoder: str
    embed: bool = True
    omics: dict[str, dict[str, Any]] = field(default_factory=dict)
    grade_classes: list[str] | None = None
    grade_missing: bool = False
    survival: bool = False
    survival_missing: bool = False
    time_unit: str = "months"
    spots: Path | None = None


def _load(template: Path) -> dict[str, Any]:
    import yaml

    return yaml.safe_load(template.read_text()) or {}


def _omics_spec(base: dict[str, Any] | None, info: dict[str, Any]) -> dict[str, Any]:
    spec = dict(base or {"standardize": True})
    spec["path"] = str(info["path"])
    scale = info.get("scale", "log")
    for k in ("normalize", "transform", "impute", "allow_nan"):
        spec.pop(k, None)
    if scale == "counts" and not info.get("missing"):
        spec["normalize"] = "total"
    if scale in ("counts", "linear"):
        spec["transform"] = "log10p1"
    if info.get("missing"):
        spec["impute"] = "median"
    order = ["path", "normalize", "transform", "drop_median_zero", "impute", "standardize"]
    return {k: spec[k] for k in [*order, *[k for k in spec if k not in order]] if k in spec}


def _data(cfg: dict[str, Any], lay: CohortLayout, omics: list[str], outcomes: dict[str, Any]) -> None:
    d = cfg.setdefault("data", {})
    d["cohort"] = str(lay.cohort)
    d["features"] = str(lay.features)
    if lay.embed:
        emb = dict(d.get("embed") or {})
        emb["encoder"] = lay.encoder
        d["embed"] = emb
    else:
        d.pop("embed", None)
    shipped = d.get("omics") or {}
    if omics:
        d["omics"] = {m: _omics_spec(shipped.get(m), lay.omics[m]) for m in omics}
    else:
        d.pop("omics", None)
    if outcomes:
        d["outcomes"] = outcomes
    else:
        d.pop("outcomes", None)


def _outcomes(cfg: dict[str, Any], lay: CohortLayout, names: tuple[str, ...]) -> dict[str, Any]:
    shipped = (cfg.get("data") or {}).get("outcomes") or {}
    out = {}
    if "grade" in names:
        g = dict(shipped.get("grade") or {"column": "grade"})
        g["classes"] = list(lay.grade_classes or [])
        if lay.grade_missing:
            g["allow_missing"] = True
        out["grade"] = g
    if "survival" in names:
        s = dict(shipped.get("survival") or {"time": "time", "event": "event"})
        s["time_unit"] = lay.time_unit
        if lay.survival_missing:
            s["allow_missing"] = True
        out["survival"] = s
    return out


def task_configs(lay: CohortLayout, templates: str | os.PathLike | None = None) -> dict[str, dict[str, Any] | str]:
    """Each task's config, or the reason it is not written.

    Parameters
    ----------
    lay
        The imported cohort.
    templates
        Folder of the shipped configs (default :func:`histoviz.datasets.config_dir`).

    Returns
    -------
    ``task -> config dict`` (with ``"_template"``: the file it came from) or ``task -> reason``.
    """
    from histoviz.datasets import config_dir

    tdir = Path(templates) if templates is not None else config_dir()
    has_grade = bool(lay.grade_classes) and len(lay.grade_classes or []) >= 2
    out: dict[str, dict[str, Any] | str] = {}
    want = {
        "omics": (list(lay.omics), (), "no omics table was imported"),
        "grade": ([], ("grade",), "no grade column with at least two classes"),
        "survival": ([], ("survival",), "no survival time and event"),
        "grade_survival": ([], ("grade", "survival"), "needs both grade and survival"),
        "pathgen": (["gene"], ("grade", "survival"), "needs a gene expression table, grade and survival"),
    }
    for task, (omics, outcomes, why) in want.items():
        ok = ((not omics or all(m in lay.omics for m in omics)) and (bool(lay.omics) or task != "omics")
              and ("grade" not in outcomes or has_grade) and ("survival" not in outcomes or lay.survival))
        if not ok:
            out[task] = why
            continue
        tpl = tdir / TASKS[task]
        cfg = _load(tpl)
        _data(cfg, lay, omics, _outcomes(cfg, lay, outcomes))
        params = cfg.get("model", {}).get("params", {})
        if "gene_groups" in params:  # the template's table is the synthetic cohort's: use MCAT's families
            params["gene_groups"] = "mcat"
        cfg["_template"] = str(tpl)
        out[task] = cfg
    if lay.spots is None:
        out["spots"] = "no spot files (histoviz st-import) were given"
    elif not lay.embed:
        out["spots"] = "spot patches are embedded by histoviz; the features were made elsewhere"
    else:
        tpl = tdir / TASKS["spots"]
        cfg = _load(tpl)
        sp = cfg.setdefault("data", {}).setdefault("spots", {})
        sp["samples"] = str(lay.spots)
        sp["features"] = str(lay.root / "spot_features")
        sp["encoder"] = lay.encoder
        ev = cfg.setdefault("evaluation", {}).setdefault("spots", {})
        ev["compare"] = [c for c in ev.get("compare", []) if isinstance(c, str)]  # those needing a reference go
        cfg["_template"] = str(tpl)
        out["spots"] = cfg
    return out


def render_config(cfg: dict[str, Any], *, cohort_name: str = "") -> str:
    """YAML text of a generated config with a header naming its template."""
    import yaml

    c = copy.deepcopy(cfg)
    tpl = c.pop("_template", "")
    head = (f"# Made by `histoviz import` for {cohort_name or 'this cohort'} from the shipped {Path(tpl).name}:\n"
            "# its model, training and evaluation settings, with this cohort's paths, modalities and outcomes.\n"
            f"# Run: histoviz train THIS_FILE --out runs/<name>   (override with --set key=value)\n")
    return head + yaml.safe_dump(c, sort_keys=False)
