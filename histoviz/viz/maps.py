"""Per-patch prediction maps as rasters placed on the slide (no Qt, no Streamlit).

A prediction file (:mod:`histoviz.io.predictions`) holds one value per patch. To show a map on
the slide we never draw one polygon per patch: the patches lie on a regular lattice, so a map is
a small raster with one pixel per lattice cell (``NaN`` / label 0 where there is no patch) and an
affine transform (scale, translate) that puts each raster pixel exactly over its patch.

Coordinates
-----------
*Level-0 coordinates* follow OpenSlide: pixel ``x`` covers ``[x, x + 1)``, a patch with top-left
``(x, y)`` and side ``s`` covers ``[x, x + s) x [y, y + s)``.

*World coordinates* are those of a viewer that shows the slide's level 0 with a per-pixel
``slide_scale`` and a ``slide_translate`` (napari: ``layer.scale`` / ``layer.translate``, in
``(y, x)`` order, scale = mpp when the slide is shown in micrometres). Viewers put the *centre*
of data pixel ``i`` at ``translate + scale * i``, so level-0 position ``x`` sits at world
``translate + scale * (x - 0.5)``. :meth:`PatchLayout.placement` and
:meth:`PatchLayout.patch_at_world` use exactly that convention.

Examples
--------
>>> import numpy as np
>>> lay = PatchLayout.from_coords(np.array([[0, 0], [224, 0], [224, 224]]), tile_size_level0=224)
>>> lay.shape
(2, 2)
>>> lay.raster(np.array([1.0, 2.0, 3.0])).tolist()
[[1.0, 2.0], [nan, 3.0]]
>>> lay.patch_at_level0(300, 10), lay.patch_at_level0(10, 300)
(1, None)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from histoviz.errors import DataError

if TYPE_CHECKING:
    import anndata as ad
    import pandas as pd

__all__ = [
    "SCALES",
    "DisplayRange",
    "MapSpec",
    "MapValues",
    "PatchLayout",
    "Placement",
    "PredictionMaps",
    "available_maps",
    "check_predictions_match_slide",
    "default_map",
    "display_range",
    "kind_labels",
    "level0_to_world",
    "map_kinds",
    "is_simulated",
    "map_values",
    "world_to_level0",
]

from histoviz.viz.layout import PatchLayout, Placement, level0_to_world, world_to_level0

logger = logging.getLogger(__name__)


#: Per-patch numeric obs columns that are not maps of their own (coordinates, ids).
_OBS_NOT_MAPS = {"x", "y", "slide_id"}
#: The catch-all kind for numeric obs columns no registered output owns.
_GENERIC = "obs"


def map_kinds() -> tuple[str, ...]:
    """Kinds of maps in the order front ends list them: every registered output
    (:mod:`histoviz.outputs`) plus ``"obs"`` (any other numeric per-patch column)."""
    from histoviz.outputs import list_outputs

    return (*[o.name for o in list_outputs()], _GENERIC)


def kind_labels() -> dict[str, str]:
    """Human-readable names of the map kinds."""
    from histoviz.outputs import list_outputs

    return {**{o.name: o.label for o in list_outputs()}, _GENERIC: "Other per-patch value"}


def __getattr__(name: str) -> Any:
    # ``MAP_KINDS`` / ``KIND_LABELS`` stay importable and always reflect the registry
    if name == "MAP_KINDS":
        return map_kinds()
    if name == "KIND_LABELS":
        return kind_labels()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _spec_of(kind: str) -> Any:
    from histoviz.outputs import get_output

    return None if kind == _GENERIC else get_output(kind)


# ------------------------------------------------------------------------------------------------
# which maps a prediction file holds, and their values
# ------------------------------------------------------------------------------------------------
#: Scales of a predicted omics map: the training data's (``data``, default), a percentile of the
#: training cohort's held-out predictions (``percentile``) or the model's own output (``model``).
SCALES = ("data", "percentile", "model")


@dataclass(frozen=True)
class MapSpec:
    """One map of a prediction file: a ``kind`` (see :data:`MAP_KINDS`) and, for most, a key;
    predicted omics maps may name a :data:`SCALES` entry after ``@``.

    ``str(spec)`` is ``"kind:key"`` (``"risk"`` for key-less kinds, ``"gene:CD3E@percentile"``
    with a scale); :meth:`parse` reverses it.

    Examples
    --------
    >>> MapSpec.parse("gene:CD3E")
    MapSpec(kind='gene', key='CD3E', scale=None)
    >>> str(MapSpec("risk")), str(MapSpec.parse("gene:CD3E@percentile"))
    ('risk', 'gene:CD3E@percentile')
    """

    kind: str
    key: str | None = None
    scale: str | None = None

    def __post_init__(self) -> None:
        kinds = map_kinds()
        if self.kind not in kinds:
            raise DataError(f"unknown map kind {self.kind!r}; choose from {', '.join(kinds)}")
        spec = _spec_of(self.kind)
        keyed = spec is None or spec.keyed
        if keyed and not self.key:
            raise DataError(f"a {kind_labels()[self.kind].lower()} map needs a key (e.g. 'gene:CD3E')")
        if self.scale is not None and self.scale not in SCALES:
            raise DataError(f"unknown scale {self.scale!r}; choose from {', '.join(SCALES)}")

    @classmethod
    def parse(cls, text: str | MapSpec) -> MapSpec:
        """``"gene:CD3E"`` / ``"risk"`` / ``"gene:CD3E@percentile"`` -> :class:`MapSpec`."""
        if isinstance(text, MapSpec):
            return text
        body, at, scale = str(text).rpartition("@")
        if not at or scale not in SCALES:
            body, scale = str(text), ""
        kind, _, key = body.partition(":")
        return cls(kind.strip(), key or None, scale or None)

    def with_scale(self, scale: str | None) -> MapSpec:
        """The same map on another scale (``None``: the default)."""
        return MapSpec(self.kind, self.key, scale)

    def __str__(self) -> str:
        base = f"{self.kind}:{self.key}" if self.key else self.kind
        return f"{base}@{self.scale}" if self.scale else base

    @property
    def label(self) -> str:
        """Display name, e.g. ``"gene CD3E"``, ``"P(grade = 3)"``, ``"risk"``."""
        names = {"gene": "gene", "cell_type": "cell type", "coattention": "co-attention", _GENERIC: ""}
        spec = _spec_of(self.kind)
        if spec is not None and spec.key_label and self.key:
            return spec.key_label.format(key=self.key)
        if spec is not None and spec.kind == "probability" and self.key and self.kind != "cell_type":
            what = spec.label.lower().replace(" probability", "")
            return f"P({what} = {self.key})"
        if self.kind == "modality":
            mod, _, target = str(self.key).partition("/")
            return f"{mod} {target}"
        if self.key:
            return f"{names.get(self.kind, self.kind.replace('_', ' '))} {self.key}".strip()
        return kind_labels()[self.kind].lower()

    @property
    def categorical(self) -> bool:
        """True for maps shown as labels (dominant type, predicted grade)."""
        spec = _spec_of(self.kind)
        return bool(spec is not None and spec.categorical)

    @property
    def unit(self) -> str:
        """Unit of the values (from the output registry)."""
        spec = _spec_of(self.kind)
        return "" if spec is None else spec.unit


@dataclass(frozen=True, eq=False)
class MapValues:
    """The per-patch values of one map with the defaults to display it.

    Attributes
    ----------
    spec
        Which map.
    values
        ``(N,)`` float32 for continuous maps (NaN = no value); int64 category codes for
        categorical maps (``-1`` = none).
    categories
        Category names (categorical maps), code ``k`` is ``categories[k]``.
    colormap
        Default colormap name (continuous maps).
    contrast_limits
        Default display range (continuous maps).
    unit
        Unit of the values (colour bars).
    simulated
        The values were simulated, not predicted by a model (:func:`is_simulated`); the label
        then starts with ``"simulated "``.
    output_kind
        The registry kind (``continuous``, ``probability``, ``categorical``, ``interval``,
        ``count``); ``"continuous"`` for generic per-patch values.
    """

    spec: MapSpec
    values: np.ndarray
    categories: tuple[str, ...] = ()
    colormap: str = "viridis"
    contrast_limits: tuple[float, float] = (0.0, 1.0)
    unit: str = ""
    simulated: bool = False
    output_kind: str = "continuous"

    @property
    def categorical(self) -> bool:
        """True for category maps."""
        return self.spec.categorical

    @property
    def label(self) -> str:
        """Display name of the map (``"simulated ..."`` for simulated values)."""
        return f"simulated {self.spec.label}" if self.simulated else self.spec.label

    @property
    def title(self) -> str:
        """Colour-bar / legend title: the label and the unit, e.g. ``"risk (-sum S (higher = worse))"``."""
        return f"{self.label} ({self.unit})" if self.unit else self.label

    @property
    def is_probability(self) -> bool:
        """True for probability maps (0..1), where a threshold makes sense."""
        return self.output_kind == "probability"

    def measurement(self) -> np.ndarray:
        """Values as floats for export (codes stay codes; ``-1`` becomes NaN)."""
        if self.categorical:
            v = self.values.astype(np.float64)
            v[self.values < 0] = np.nan
            return v
        return self.values.astype(np.float64)

    def category_names(self) -> np.ndarray:
        """``(N,)`` object array of category names (``None`` where there is none)."""
        cats = np.array(list(self.categories) + [None], dtype=object)
        codes = np.where(self.values >= 0, self.values, len(self.categories))
        return cats[codes]


def _frame(adata: ad.AnnData, key: str) -> pd.DataFrame | None:
    import pandas as pd

    if key not in adata.obsm:
        return None
    m = adata.obsm[key]
    if isinstance(m, pd.DataFrame):
        return m
    arr = np.asarray(m)
    if arr.ndim != 2:
        return None
    return pd.DataFrame(arr, index=adata.obs_names, columns=[str(i) for i in range(arr.shape[1])])


def _owned_obs() -> set[str]:
    from histoviz.outputs import list_outputs

    return {o.anndata_key for o in list_outputs() if o.store in ("obs", "obs_category")}


def _numeric_obs(adata: ad.AnnData) -> list[str]:
    import pandas as pd

    out = []
    owned = _owned_obs()
    for c in adata.obs.columns:
        if c in _OBS_NOT_MAPS or c in owned:
            continue
        if pd.api.types.is_numeric_dtype(adata.obs[c]) and not pd.api.types.is_bool_dtype(adata.obs[c]):
            out.append(str(c))
    return out


class PredictionMaps:
    """A prediction AnnData with its map tables extracted once (fast repeated map switching).

    Each ``adata.obsm[...]`` access re-validates the DataFrame's index against ``obs_names``
    (hundreds of ms for 200k patches); front ends that switch maps interactively wrap the
    AnnData once and pass this object wherever an AnnData is accepted by
    :func:`available_maps` and :func:`map_values`.
    """

    def __init__(self, adata: ad.AnnData) -> None:
        self.adata = adata
        self._frames: dict[str, pd.DataFrame | None] = {}
        self._available: dict[str, list[str]] | None = None

    def frame(self, key: str) -> pd.DataFrame | None:
        """``obsm[key]`` as a DataFrame (``None`` when absent or not 2-d), cached."""
        if key not in self._frames:
            self._frames[key] = _frame(self.adata, key)
        return self._frames[key]

    @property
    def simulated(self) -> bool:
        """:func:`is_simulated` of the AnnData."""
        return is_simulated(self.adata)

    @property
    def available(self) -> dict[str, list[str]]:
        """:func:`available_maps` of the AnnData, cached."""
        if self._available is None:
            self._available = _available(self)
        return self._available


def _as_maps(adata: ad.AnnData | PredictionMaps) -> PredictionMaps:
    return adata if isinstance(adata, PredictionMaps) else PredictionMaps(adata)


def available_maps(adata: ad.AnnData | PredictionMaps) -> dict[str, list[str]]:
    """Maps a prediction AnnData can show: ``kind -> keys`` (``[""]`` for key-less kinds).

    Only kinds present in the file are listed, in :data:`MAP_KINDS` order.
    """
    return dict(_as_maps(adata).available)


def _available(pm: PredictionMaps) -> dict[str, list[str]]:
    from histoviz.outputs import list_outputs

    adata = pm.adata
    out: dict[str, list[str]] = {}
    for spec in list_outputs():
        key = spec.anndata_key
        if spec.store == "X":
            if adata.n_vars:
                out[spec.name] = [str(g) for g in adata.var_names]
        elif spec.store == "obsm":
            fr = pm.frame(key)
            if fr is not None and fr.shape[1]:
                out[spec.name] = [str(c) for c in fr.columns]
        elif spec.store == "obsm_prefix":
            keys = []
            for k in adata.obsm.keys():
                if str(k).startswith(key):
                    fr = pm.frame(str(k))
                    if fr is not None:
                        keys += [f"{str(k)[len(key):]}/{c}" for c in fr.columns]
            if keys:
                out[spec.name] = keys
        elif spec.store == "obs":
            if key in adata.obs:
                out[spec.name] = [""]
        elif spec.store == "obs_category":
            if key in adata.obs or spec.source in out:
                out[spec.name] = [""]
        elif spec.store == "argmax" and spec.source in out:
            out[spec.name] = [""]
    extra = _numeric_obs(adata)
    if extra:
        out[_GENERIC] = extra
    return out


def _robust_limits(v: np.ndarray) -> tuple[float, float]:
    f = v[np.isfinite(v)]
    if f.size == 0:
        return 0.0, 1.0
    lo, hi = (float(x) for x in np.percentile(f, [1.0, 99.0]))
    if not hi > lo:
        lo, hi = float(f.min()), float(f.max())
    if not hi > lo:
        lo, hi = lo - 0.5, lo + 0.5
    return lo, hi


def _unknown(what: str, key: str, choices: Sequence[str]) -> DataError:
    import difflib

    close = difflib.get_close_matches(key, list(choices), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    some = ", ".join(list(choices)[:5]) + (", ..." if len(choices) > 5 else "")
    return DataError(f"unknown {what} {key!r}{hint} ({len(choices)} available: {some})")


def is_simulated(adata: ad.AnnData | PredictionMaps) -> bool:
    """True when a prediction file holds simulated values, not a model's predictions
    (``uns["histoviz"]["simulated"]``, or a ``model`` string starting with ``"simulated"``)."""
    info = _as_maps(adata).adata.uns.get("histoviz", {})
    flag = info.get("simulated")
    if flag is not None and not isinstance(flag, str):
        return bool(flag)
    return str(info.get("model", "")).strip().lower().startswith("simulated")


def map_values(adata: ad.AnnData | PredictionMaps, spec: MapSpec | str) -> MapValues:
    """Per-patch values of one map of a prediction AnnData.

    Parameters
    ----------
    adata
        Predictions for one slide (:func:`histoviz.io.predictions.read_predictions`), or a
        :class:`PredictionMaps` wrapping them.
    spec
        A :class:`MapSpec` or its string form (``"gene:CD3E"``, ``"cell_type:tumour"``,
        ``"modality:protein/TP53"`` (``obsm["pred_protein"]``), ``"dominant_type"``,
        ``"grade_proba:G3"``, ``"grade_class"``, ``"risk"``,
        ``"coattention:immune"``, ``"attention"``, ``"obs:risk_hi"``).

    Returns
    -------
    :class:`MapValues`.

    Raises
    ------
    DataError
        The file lacks the map or the key (the message lists what is available).
    """
    spec = MapSpec.parse(spec)
    kind, key = spec.kind, spec.key or ""
    pm = _as_maps(adata)
    adata = pm.adata
    avail = pm.available
    labels = kind_labels()
    if kind not in avail:
        have = ", ".join(avail) or "nothing"
        raise DataError(f"the prediction file has no {labels[kind].lower()} map (it has: {have})")
    out = _spec_of(kind)
    sim = pm.simulated
    if out is None:  # generic numeric obs column
        if key not in adata.obs or key not in avail[kind]:
            raise _unknown("per-patch value", key, avail.get(_GENERIC, []))
        v = adata.obs[key].to_numpy(dtype=np.float32)
        return MapValues(spec, v, colormap="viridis", contrast_limits=_robust_limits(v), simulated=sim)

    units = adata.uns.get("units")
    file_unit = str(units[kind]) if isinstance(units, Mapping) and kind in units else None

    def cont(v: np.ndarray, unit: str | None = None, limits: tuple[float, float] | None = None) -> MapValues:
        lim = limits or (out.limits if out.limits is not None else _robust_limits(v))
        return MapValues(spec, v, colormap=out.colormap, contrast_limits=lim, unit=unit or file_unit or out.unit,
                         simulated=sim, output_kind=out.kind)

    def omics(v: np.ndarray) -> MapValues:
        from histoviz.viz.clinical import omics_block, rescale

        block, target = omics_block(adata, out.store, key)
        v, unit, lim = rescale(adata, block, target, v, spec.scale)
        return cont(v, unit, lim)

    store = out.store
    if store == "X":
        if key not in adata.var_names:
            raise _unknown("gene" if kind == "gene" else out.label.lower(), key, avail[kind])
        j = int(adata.var_names.get_loc(key))
        col = adata.X[:, j]
        return omics(np.asarray(col.toarray() if hasattr(col, "toarray") else col, dtype=np.float32).ravel())
    if store == "obsm_prefix":
        mod, _, target = key.partition("/")
        fr = pm.frame(out.anndata_key + mod)
        if fr is None or target not in fr.columns:
            raise _unknown("target", key, avail[kind])
        return omics(fr[target].to_numpy(dtype=np.float32))
    if store == "obsm":
        fr = pm.frame(out.anndata_key)
        assert fr is not None
        if key not in fr.columns:
            raise _unknown(out.label.lower(), key, [str(c) for c in fr.columns])
        return cont(fr[key].to_numpy(dtype=np.float32))
    if store == "obs":
        return cont(adata.obs[out.anndata_key].to_numpy(dtype=np.float32))
    src = _spec_of(out.source) if out.source else None
    src_frame = pm.frame(src.anndata_key) if src is not None and src.store == "obsm" else None
    if store == "argmax":
        assert src_frame is not None
        return MapValues(spec, _argmax_codes(src_frame.to_numpy(dtype=np.float64)),
                         categories=tuple(str(c) for c in src_frame.columns), simulated=sim,
                         output_kind=out.kind)
    # obs_category: a label column, categories from the source's columns when present
    if out.anndata_key in adata.obs:
        import pandas as pd

        pred = adata.obs[out.anndata_key]
        if src_frame is not None and src_frame.shape[1]:
            cats = [str(c) for c in src_frame.columns]
        elif isinstance(pred.dtype, pd.CategoricalDtype):
            cats = [str(c) for c in pred.cat.categories]
        else:
            cats = sorted({str(p) for p in pred.dropna()})
        s = pred.astype(object).where(pred.notna(), None)
        lut = {c: i for i, c in enumerate(cats)}
        extra = sorted({str(p) for p in s if p is not None and str(p) not in lut})
        for c in extra:
            lut[c] = len(cats)
            cats.append(c)
        codes = np.array([lut[str(p)] if p is not None else -1 for p in s], dtype=np.int64)
        return MapValues(spec, codes, categories=tuple(cats), simulated=sim, output_kind=out.kind)
    assert src_frame is not None
    return MapValues(spec, _argmax_codes(src_frame.to_numpy(dtype=np.float64)),
                     categories=tuple(str(c) for c in src_frame.columns), simulated=sim,
                     output_kind=out.kind)


def _argmax_codes(w: np.ndarray) -> np.ndarray:
    ok = np.isfinite(w).any(axis=1)
    codes = np.full(len(w), -1, dtype=np.int64)
    if ok.any():
        codes[ok] = np.nanargmax(np.where(np.isfinite(w[ok]), w[ok], -np.inf), axis=1)
    return codes


# ------------------------------------------------------------------------------------------------
# what to show first, and how
# ------------------------------------------------------------------------------------------------
def default_map(adata: ad.AnnData | PredictionMaps) -> MapSpec:
    """The most useful map of a prediction file, chosen from what the model declared.

    From the task kinds the model declared (``uns["histoviz"]["tasks"]``), in this order:
    a survival block's survival probability at the middle horizon (else its risk percentile,
    else its risk); a classification block's predicted class; a regression block's first
    target (the main modality first). Files that declare nothing (older or simulated files)
    get the first map in registry order.

    Raises
    ------
    DataError
        The file holds no map at all.
    """
    from histoviz.task_kinds import TaskKind
    from histoviz.tasks import _output_names, _risk_names
    from histoviz.viz.clinical import tasks_of

    pm = _as_maps(adata)
    avail = pm.available
    if not avail:
        raise DataError("the prediction file holds no maps")
    tasks = tasks_of(pm.adata)

    def pick(name: str, middle: bool = False) -> MapSpec | None:
        keys = [k for k in avail.get(name, []) if k]
        if name not in avail:
            return None
        return MapSpec(name, keys[(len(keys) - 1) // 2 if middle else 0] if keys else None)

    by_kind = {k: [b for b, kind in tasks.items() if kind == k] for k in TaskKind}
    for b in by_kind[TaskKind.SURVIVAL]:
        n = _risk_names(b)
        got = pick(n["probability"], middle=True) or pick(n["percentile"]) or pick(n["risk"])
        if got is not None:
            return got
    for b in by_kind[TaskKind.CLASSIFICATION]:
        got = pick(_output_names(b)["pred"])
        if got is not None:
            return got
    main = str(pm.adata.uns.get("histoviz", {}).get("modality", "") or "")
    for b in sorted(by_kind[TaskKind.REGRESSION], key=lambda b: b != main):
        if b == main and "gene" in avail:
            return MapSpec("gene", avail["gene"][0])
        keys = [k for k in avail.get("modality", []) if k.startswith(f"{b}/")]
        if keys:
            return MapSpec("modality", keys[0])
    kind, keys = next(iter(avail.items()))
    return MapSpec(kind, keys[0] or None)


@dataclass(frozen=True)
class DisplayRange:
    """How to draw a continuous map: default contrast ``limits`` and the ``range`` a contrast
    slider offers (covering both the limits and every value of the map)."""

    limits: tuple[float, float]
    range: tuple[float, float]


def display_range(values: np.ndarray, limits: tuple[float, float] | None = None) -> DisplayRange:
    """Contrast limits of a continuous map: ``limits`` when the output fixes them (0-1 for
    probabilities), else the 1st-99th percentile of the finite values; the slider range spans
    the limits and all values. The one place viewers (napari maps and spots, heatmaps) get
    contrast limits from.

    Examples
    --------
    >>> display_range(np.array([0.2, 0.4, np.nan]), (0.0, 1.0))
    DisplayRange(limits=(0.0, 1.0), range=(0.0, 1.0))
    """
    v = np.asarray(values, np.float64)
    lo, hi = (float(x) for x in (limits if limits is not None else _robust_limits(v)))
    f = v[np.isfinite(v)]
    rlo, rhi = (float(f.min()), float(f.max())) if f.size else (lo, hi)
    return DisplayRange((lo, hi), (min(lo, rlo), max(hi, rhi)))


# ------------------------------------------------------------------------------------------------
# does a prediction file belong to a slide?
# ------------------------------------------------------------------------------------------------
def check_predictions_match_slide(
    adata: ad.AnnData,
    *,
    slide_id: str | None = None,
    dimensions: Sequence[int] | None = None,
    allow_other_id: bool = False,
) -> None:
    """Raise :class:`DataError` when predictions were made for another slide.

    Parameters
    ----------
    adata
        Predictions (``uns["histoviz"]`` with ``slide_id`` and, ideally, ``slide_dimensions``).
    slide_id
        Id of the open slide (skipped when None).
    dimensions
        Level-0 ``(width, height)`` of the open slide (skipped when None).
    allow_other_id
        Accept a different slide id (a renamed file) as long as the dimensions agree.

    Raises
    ------
    DataError
        Slide id or dimensions differ, or patches lie outside the slide.
    """
    info: Mapping[str, Any] = adata.uns.get("histoviz", {})
    pid = info.get("slide_id")
    if slide_id is not None and pid is not None and str(pid) != str(slide_id) and not allow_other_id:
        raise DataError(
            f"these predictions are for slide {str(pid)!r}, but the open slide is "
            f"{str(slide_id)!r}; open slide {str(pid)!r} (or allow a different slide id if the "
            "file was renamed)"
        )
    if dimensions is None:
        return
    w, h = (int(v) for v in dimensions)
    dims = info.get("slide_dimensions")
    if dims is not None:
        try:
            pw, ph = (int(v) for v in np.asarray(dims).reshape(-1)[:2])
        except (TypeError, ValueError):
            pw = ph = None
        if pw is not None and (pw, ph) != (w, h):
            raise DataError(
                f"these predictions were made on a {pw} x {ph} px slide, but the open slide is "
                f"{w} x {h} px: they belong to another slide (or another scan of it)"
            )
    lay_x = adata.obs["x"].to_numpy() if "x" in adata.obs else None
    lay_y = adata.obs["y"].to_numpy() if "y" in adata.obs else None
    if lay_x is None or lay_y is None:
        ts = float(info.get("tile_size_level0", 0))
        sp = np.asarray(adata.obsm["spatial"], dtype=np.float64)
        lay_x, lay_y = sp[:, 0] - ts / 2, sp[:, 1] - ts / 2
    if len(lay_x) and (lay_x.min() < 0 or lay_y.min() < 0 or lay_x.max() >= w or lay_y.max() >= h):
        raise DataError(
            f"patches reach x up to {int(lay_x.max())}, y up to {int(lay_y.max())}, outside the open "
            f"{w} x {h} px slide: these predictions belong to another slide"
        )
