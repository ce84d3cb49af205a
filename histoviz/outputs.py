"""The output registry: every map a model can write, declared once.

An output is one kind of per-patch (or per-spot) value in a prediction AnnData
(:mod:`histoviz.io.predictions`): where it is stored, what kind of value it is, its unit and how
to colour it. The AnnData writer checks what models write against it, and the viewers
(:mod:`histoviz.viz.maps`, napari, the dashboard) list and draw maps from it, so a new model
that writes a new map declares it here (one :func:`register_output` call next to the model)
and no front end changes.

Storage (``store``):

- ``"X"``: ``adata.X``, one map per ``var_name`` (``keyed``);
- ``"obs"``: one column ``adata.obs[key]``;
- ``"obsm"``: a DataFrame ``adata.obsm[key]``, one map per column (``keyed``);
- ``"obsm_prefix"``: every ``adata.obsm[key + suffix]`` DataFrame, keyed ``"suffix/column"``
  (``pred_protein`` -> ``"protein/TP53"``);
- ``"argmax"``: categorical, the arg-max column of the output named ``source``;
- ``"obs_category"``: categorical from ``adata.obs[key]`` (strings), with the categories
  of ``source``'s columns when present.

Kinds: ``continuous``, ``probability`` (0..1), ``categorical``, ``interval`` (a width or a
bound), ``count`` (a set size).

Examples
--------
>>> spec = get_output("risk")
>>> spec.store, spec.key, spec.kind
('obs', 'risk', 'continuous')
>>> "grade_proba" in [o.name for o in list_outputs()]
True
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from histoviz.errors import ConfigError

__all__ = [
    "KINDS",
    "STORES",
    "OutputSpec",
    "get_output",
    "list_outputs",
    "output_labels",
    "register_output",
]

KINDS = ("continuous", "probability", "categorical", "interval", "count")
STORES = ("X", "obs", "obsm", "obsm_prefix", "argmax", "obs_category")


@dataclass(frozen=True)
class OutputSpec:
    """One declared output (see the module docstring).

    Attributes
    ----------
    name
        Map kind name used everywhere (``"risk"``, ``"grade_proba"``, ``"gene"``).
    label
        Human-readable name (``"Risk"``).
    kind
        One of :data:`KINDS`.
    store
        One of :data:`STORES`.
    key
        AnnData key (obs column, obsm key or prefix); default ``name``.
    source
        For ``argmax`` / ``obs_category``: the output whose columns give the categories.
    unit
        Unit shown on colour bars and tables (``""``: unitless).
    colormap
        Default colormap (continuous kinds).
    limits
        Fixed default display range; ``None`` = robust percentiles of the values.
    description
        One sentence for tooltips and docs.
    order
        Position in front-end lists (smaller first).
    key_label
        How one map of a keyed output is named, with ``{key}`` for its key (``"P(grade = {key})"``,
        ``"survival at {key}"``); empty: ``"<label> <key>"`` (``"gene MKI67"``).
    """

    name: str
    label: str
    kind: str = "continuous"
    store: str = "obs"
    key: str | None = None
    source: str | None = None
    unit: str = ""
    colormap: str = "viridis"
    limits: tuple[float, float] | None = None
    description: str = ""
    order: int = 100
    key_label: str = ""

    def __post_init__(self) -> None:
        if not self.name or ":" in self.name:
            raise ConfigError(f"output name {self.name!r}: must be non-empty without ':'")
        if self.kind not in KINDS:
            raise ConfigError(f"output {self.name!r}: kind {self.kind!r} not in {KINDS}")
        if self.store not in STORES:
            raise ConfigError(f"output {self.name!r}: store {self.store!r} not in {STORES}")
        if self.store in ("argmax",) and not self.source:
            raise ConfigError(f"output {self.name!r}: store 'argmax' needs source=")
        if self.kind == "categorical" and self.store not in ("argmax", "obs_category"):
            raise ConfigError(f"output {self.name!r}: categorical outputs are stored as argmax or obs_category")

    @property
    def anndata_key(self) -> str:
        """The obs column / obsm key / prefix this output lives under."""
        return self.key or self.name

    @property
    def keyed(self) -> bool:
        """True when the output is a family of maps (one per gene, cell type, class...)."""
        return self.store in ("X", "obsm", "obsm_prefix")

    @property
    def categorical(self) -> bool:
        """True for maps shown as labels."""
        return self.kind == "categorical"


_OUTPUTS: dict[str, OutputSpec] = {}
_LOCK = threading.Lock()


def register_output(spec: OutputSpec) -> OutputSpec:
    """Declare an output; registering the same declaration again is a no-op.

    Raises
    ------
    ConfigError
        ``spec.name`` is taken by a different declaration, or another output already uses
        the same AnnData key.
    """
    _ensure_builtin()
    with _LOCK:
        old = _OUTPUTS.get(spec.name)
        if old is not None:
            if old == spec:
                return old
            raise ConfigError(f"output {spec.name!r} is already declared differently: {old}")
        for o in _OUTPUTS.values():
            if o.store == spec.store and o.anndata_key == spec.anndata_key and spec.store in ("obs", "obsm", "obsm_prefix"):
                raise ConfigError(f"output {spec.name!r}: {spec.store}[{spec.anndata_key!r}] already belongs to {o.name!r}")
        _OUTPUTS[spec.name] = spec
        return spec


def get_output(name: str) -> OutputSpec:
    """The declaration of ``name``.

    Raises
    ------
    ConfigError
        Unknown output (the message lists the declared ones).
    """
    _ensure_builtin()
    try:
        return _OUTPUTS[name]
    except KeyError:
        raise ConfigError(f"unknown output {name!r}; declared: {', '.join(sorted(_OUTPUTS))}") from None


def list_outputs() -> list[OutputSpec]:
    """All declared outputs in display order."""
    _ensure_builtin()
    return sorted(_OUTPUTS.values(), key=lambda o: (o.order, o.name))


class _Labels(Mapping):
    """Live ``name -> label`` view of the registry (new outputs appear without a reload)."""

    def __getitem__(self, k: str) -> str:
        _ensure_builtin()
        return _OUTPUTS[k].label

    def __iter__(self) -> Iterator[str]:
        return iter([o.name for o in list_outputs()])

    def __len__(self) -> int:
        _ensure_builtin()
        return len(_OUTPUTS)

    def get(self, k: str, default: object = None) -> object:  # type: ignore[override]
        _ensure_builtin()
        return _OUTPUTS[k].label if k in _OUTPUTS else default


def output_labels() -> Mapping[str, str]:
    """``name -> label`` of every declared output (a live view)."""
    return _Labels()


_BUILTIN = (
    OutputSpec("gene", "Gene expression", store="X", colormap="inferno", unit="target space", order=10,
               description="predicted expression of the main modality, one map per gene"),
    OutputSpec("modality", "Other modality (protein, miRNA, pathway)", store="obsm_prefix", key="pred_",
               colormap="magma", unit="target space", order=20,
               description="predicted values of the other modalities, keyed 'modality/target'"),
    OutputSpec("cell_type", "Cell-type weight", kind="probability", store="obsm", key="cell_type_weights",
               colormap="viridis", limits=(0.0, 1.0), order=30,
               description="composition weights over cell-type prototypes (rows sum to 1)"),
    OutputSpec("dominant_type", "Dominant cell type", kind="categorical", store="argmax", source="cell_type",
               order=31, description="the cell type with the largest weight"),
    OutputSpec("grade_proba", "Grade probability", kind="probability", store="obsm", key="grade_proba",
               colormap="plasma", limits=(0.0, 1.0), order=40, key_label="P(grade = {key})",
               description="predicted probability of each grade"),
    OutputSpec("grade_class", "Predicted grade", kind="categorical", store="obs_category", key="grade_pred",
               source="grade_proba", order=41, description="the most probable grade"),
    OutputSpec("grade_set_size", "Grade set size (conformal)", kind="count", store="obs",
               colormap="cividis", unit="grades", order=42,
               description="number of grades in the split-conformal prediction set (1 = certain)"),
    OutputSpec("grade_uncertainty", "Grade uncertainty (normalised set size)", kind="interval", store="obs",
               colormap="cividis", limits=(0.0, 1.0), order=43,
               description="PathGen Eq. 10: |C|/K x (max(C) - min(C))/(K - 1)"),
    OutputSpec("survival_probability", "Survival probability", kind="probability", store="obsm",
               colormap="viridis", limits=(0.0, 1.0), unit="probability", order=45,
               key_label="survival at {key}",
               description="P(alive at the horizon) read from the patch's predicted survival function"),
    OutputSpec("risk_percentile", "Risk percentile (training cohort)", store="obs", colormap="magma",
               limits=(0.0, 100.0), unit="percentile of the training cohort's held-out risks", order=46,
               description="where the patch's risk falls among the cross-validated risks of the training patients"),
    OutputSpec("median_survival", "Predicted median survival", store="obs", colormap="viridis", order=47,
               description="time at which the predicted survival function reaches 0.5 (blank: later than the last bin end)"),
    OutputSpec("survival_function", "Survival function (bin ends)", kind="probability", store="obsm",
               colormap="viridis", limits=(0.0, 1.0), unit="probability", order=48, key_label="S({key})",
               description="the model's survival function at the end of each training time bin"),
    OutputSpec("risk", "Risk", store="obs", colormap="magma", unit="-sum S (higher = worse)", order=50,
               description="survival risk -sum_k S_k of the discrete-time survival function"),
    OutputSpec("risk_width", "Survival bound width (conformal)", kind="interval", store="obs",
               colormap="cividis", unit="cohort time unit", order=51,
               description="horizon minus the conformal lower bound of survival time (the interval [L, tau] of "
                           "survival up to the horizon; runs with survival: risk_bins: width of the risk interval)"),
    OutputSpec("risk_uncertainty", "Survival uncertainty (normalised)", kind="interval", store="obs",
               colormap="cividis", limits=(0.0, 1.0), order=52,
               description="bound width / horizon (runs with survival: risk_bins: PathGen Eq. 12, "
                           "|C|/K x interval width / risk range)"),
    OutputSpec("coattention", "Gene-group co-attention", store="obsm", key="coattention", colormap="turbo",
               order=60, description="attention of each gene group on each patch"),
    OutputSpec("attention", "Attention", store="obs", colormap="viridis", order=70,
               description="ABMIL attention weight (sums to 1 over the slide)"),
    OutputSpec("measured", "Measured expression (spots)", store="obsm", key="measured_expression",
               colormap="inferno", unit="log1p(normalised counts)", order=15,
               description="expression measured at each spot (not a prediction), for side-by-side views"),
)
_BUILTIN_DONE = False


def _ensure_builtin() -> None:
    global _BUILTIN_DONE
    if _BUILTIN_DONE:
        return
    with _LOCK:
        if _BUILTIN_DONE:
            return
        for spec in _BUILTIN:
            _OUTPUTS.setdefault(spec.name, spec)
        _BUILTIN_DONE = True
