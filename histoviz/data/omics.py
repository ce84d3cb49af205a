"""Omics tables: import, validation, matching to the cohort, preprocessing, pathway activity.

One table per modality (``gene``, ``protein``, ``mirna``, ``pathway``, or any name):

- AnnData ``.h5ad`` with obs = samples and var = targets (``layer=`` picks a layer), or
- a Xena-style TSV/CSV (optionally gzipped): **targets x samples**, first column the target id.

Samples are matched to the cohort's ``patient_id`` by their id, an ``obs`` column
(``patient_column``) or the first ``id_length`` characters (TCGA barcodes: 12).

Preprocessing comes in two parts so that nothing fitted ever sees test patients:

1. *stateless*, applied once at import (each sample on its own): library-size normalisation
   (``normalize="total"`` to ``target_sum``) and the value transform (``log10p1`` as in the
   multi-omics paper, ``log1p``, ``log2p1`` or ``none``);
2. *fitted on training patients* (:class:`TargetPreprocessor`, once per fold): dropping
   targets whose training median is zero, median imputation of missing values (protein) and
   optional standardisation.

Pathway activity can be a table like any other modality, or computed from expression with
decoupler and a local network file (``sample_data/progeny_human_top100.csv``) by
:func:`pathway_activity`; the same function turns predicted expression into predicted
pathway activity.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from histoviz.data.targets import TRANSFORMS, OutputTransform, TargetBlock, apply_transform
from histoviz.errors import ConfigError, DataError

if TYPE_CHECKING:
    import anndata as ad

__all__ = [
    "TRANSFORMS",
    "ModalityData",
    "OmicsData",
    "OmicsSpec",
    "OutputTransform",
    "TargetBlock",
    "TargetPreprocessor",
    "align_to_cohort",
    "apply_transform",
    "load_omics",
    "pathway_activity",
    "read_network",
    "read_omics_table",
]

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------------
# configuration of one modality
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OmicsSpec:
    """How to read and preprocess one omics modality.

    Parameters
    ----------
    path
        ``.h5ad`` or Xena-style ``.tsv``/``.tsv.gz``/``.csv`` (targets x samples). Leave empty
        with ``from_modality`` to compute pathway activity from expression.
    format
        ``auto`` (by suffix), ``h5ad``, ``xena``.
    layer
        AnnData layer to read instead of ``X``.
    patient_column
        ``obs`` column (h5ad) holding the patient id of each sample.
    id_length
        Patient id = first ``id_length`` characters of the sample id (TCGA: 12).
    normalize
        ``none`` or ``total`` (scale each sample to ``target_sum``; for counts).
    target_sum
        Total per sample after ``normalize="total"`` (1e4: CP10k).
    transform
        One of :data:`TRANSFORMS` (the paper: ``log10p1`` for genes and miRNA).
    drop_median_zero
        Drop targets whose median over the **training** patients is zero (paper, genes/miRNA).
    impute
        ``none`` or ``median``: replace missing values by the training median (paper, protein).
    allow_nan
        Accept missing values (default: only with ``impute="median"``).
    standardize
        z-score each target with training mean and std (off in the paper).
    unmatched_samples
        ``error`` (default) or ``drop`` samples whose patient is not in the cohort.
    duplicate_patients
        ``error`` (default), ``first`` or ``mean`` when several samples map to one patient.
    from_modality
        Compute this modality as pathway activity from that (expression) modality.
    network
        Network CSV for ``from_modality`` (``source, target, weight``).
    method
        decoupler method for pathway activity (``ulm``, ``mlm``, ``wsum``, ``wmean``).
    min_targets
        Minimum number of network genes found in the expression for a pathway to be scored.
    """

    path: str = ""
    format: str = "auto"
    layer: str | None = None
    patient_column: str | None = None
    id_length: int | None = None
    normalize: str = "none"
    target_sum: float = 1e4
    transform: str = "none"
    drop_median_zero: bool = False
    impute: str = "none"
    allow_nan: bool | None = None
    standardize: bool = False
    unmatched_samples: str = "error"
    duplicate_patients: str = "error"
    from_modality: str | None = None
    network: str | None = None
    method: str = "ulm"
    min_targets: int = 5

    def __post_init__(self) -> None:
        def bad(key: str, why: str) -> ConfigError:
            return ConfigError(f"omics spec {key}={getattr(self, key)!r}: {why}")

        if self.format not in ("auto", "h5ad", "xena"):
            raise bad("format", "use auto, h5ad or xena")
        if self.normalize not in ("none", "total"):
            raise bad("normalize", "use none or total")
        if not self.target_sum > 0:
            raise bad("target_sum", "must be > 0")
        if self.transform not in TRANSFORMS:
            raise bad("transform", f"use one of {list(TRANSFORMS)}")
        if self.impute not in ("none", "median"):
            raise bad("impute", "use none or median")
        if self.unmatched_samples not in ("error", "drop"):
            raise bad("unmatched_samples", "use error or drop")
        if self.duplicate_patients not in ("error", "first", "mean"):
            raise bad("duplicate_patients", "use error, first or mean")
        if self.id_length is not None and self.id_length < 1:
            raise bad("id_length", "must be >= 1")
        if not self.path and not self.from_modality:
            raise ConfigError("omics spec needs a path, or from_modality + network for pathway activity")
        if self.from_modality and not self.network:
            raise bad("network", "from_modality needs a network CSV (e.g. sample_data/progeny_human_top100.csv)")
        if self.method not in ("ulm", "mlm", "wsum", "wmean"):
            raise bad("method", "use ulm, mlm, wsum or wmean")

    @property
    def nan_allowed(self) -> bool:
        """Whether missing values are accepted."""
        return self.impute == "median" if self.allow_nan is None else bool(self.allow_nan)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, where: str = "omics") -> OmicsSpec:
        """Build from a mapping; unknown keys raise :class:`ConfigError` naming them."""
        from histoviz.strict import build_strict

        return build_strict(cls, {"path": d} if isinstance(d, str) else d, where, expected="a mapping or a path")


# ------------------------------------------------------------------------------------------------
# reading
# ------------------------------------------------------------------------------------------------
def read_omics_table(
    path: str | os.PathLike, *, format: str = "auto", layer: str | None = None
) -> ad.AnnData:
    """Read one omics table as AnnData (obs = samples, var = targets), validating ids.

    Parameters
    ----------
    path
        ``.h5ad`` or Xena-style TSV/CSV (targets x samples, first column = target id).
    format
        ``auto``, ``h5ad`` or ``xena``.
    layer
        AnnData layer to use as ``X``.

    Raises
    ------
    DataError
        Missing file, unreadable file, duplicate sample or target ids, non-numeric values.
    """
    import anndata as ad
    import scipy.sparse as sp

    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: omics table not found")
    fmt = format
    if fmt == "auto":
        fmt = "h5ad" if path.suffix == ".h5ad" else "xena"
    if fmt == "h5ad":
        try:
            a = ad.read_h5ad(path)
        except Exception as e:  # anndata raises several types
            raise DataError(f"{path}: not a readable .h5ad file ({type(e).__name__}: {e})") from e
        if layer is not None:
            if layer not in a.layers:
                raise DataError(f"{path}: no layer {layer!r}; layers: {list(a.layers)}")
            x = a.layers[layer]
        else:
            x = a.X
        x = x.toarray() if sp.issparse(x) else np.asarray(x)
        out = ad.AnnData(X=x.astype(np.float64), obs=a.obs.copy(), var=a.var.copy())
    else:
        sep = "," if path.name.endswith((".csv", ".csv.gz")) else "\t"
        import gzip

        opener = gzip.open if path.name.endswith(".gz") else open
        try:
            with opener(path, "rt") as fh:
                header = fh.readline().rstrip("\r\n").split(sep)[1:]
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"{path}: cannot read Xena-style table ({type(e).__name__}: {e})") from e
        _check_unique(pd.Index([h.strip().strip('"') for h in header]), path, "sample")
        try:
            df = pd.read_csv(path, sep=sep, index_col=0, na_values=["NA", "NaN", "nan", ""])
        except Exception as e:
            raise DataError(f"{path}: cannot read Xena-style table ({type(e).__name__}: {e})") from e
        if df.shape[1] == 0:
            raise DataError(f"{path}: no sample columns (expected targets x samples, tab-separated)")
        nonnum = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])]
        if nonnum:
            raise DataError(f"{path}: non-numeric values in sample column(s) {nonnum[:5]}")
        df.index = df.index.astype(str)
        df.columns = df.columns.astype(str)
        out = ad.AnnData(
            X=df.to_numpy(np.float64).T,
            obs=pd.DataFrame(index=pd.Index(df.columns, name="sample")),
            var=pd.DataFrame(index=pd.Index(df.index, name="target")),
        )
    _check_unique(out.obs_names, path, "sample")
    _check_unique(out.var_names, path, "target")
    if out.n_vars == 0 or out.n_obs == 0:
        raise DataError(f"{path}: empty omics table ({out.n_obs} samples x {out.n_vars} targets)")
    if np.isinf(out.X).any():
        raise DataError(f"{path}: infinite values in the table")
    return out


def _check_unique(index: pd.Index, path: Path, what: str) -> None:
    dup = index[index.duplicated()].unique().tolist()
    if dup:
        raise DataError(f"{path}: duplicate {what} id(s) {dup[:5]}{' ...' if len(dup) > 5 else ''}")


def align_to_cohort(
    adata: ad.AnnData,
    patients: Sequence[str],
    spec: OmicsSpec,
    *,
    source: str = "<omics>",
    target_ids: Sequence[str] | None = None,
) -> ad.AnnData:
    """Map samples to cohort patients; obs_names of the result are patient ids.

    ``target_ids`` (default ``adata.var_names``) only serve the hint of the error when no sample
    matches (a table whose targets are the patients is samples x targets, i.e. transposed).

    Raises
    ------
    DataError
        Samples matching no patient (with ``unmatched_samples="error"``), several samples of
        one patient (with ``duplicate_patients="error"``), or no overlap at all.
    """
    import anndata as ad

    if spec.patient_column:
        if spec.patient_column not in adata.obs:
            raise DataError(f"{source}: no obs column {spec.patient_column!r} (patient_column)")
        pid = adata.obs[spec.patient_column].astype(str).to_numpy()
    else:
        pid = adata.obs_names.astype(str).to_numpy()
    if spec.id_length:
        pid = np.array([p[: spec.id_length] for p in pid])
    cohort = set(map(str, patients))
    matched = np.array([p in cohort for p in pid])
    if not matched.any():
        raise DataError(
            f"{source}: none of its {len(pid)} samples matches a cohort patient "
            f"(samples e.g. {list(pid[:3])}, patients e.g. {sorted(cohort)[:3]}); "
            + _match_hint(pid, adata.var_names if target_ids is None else target_ids, cohort, spec)
        )
    if not matched.all():
        bad = pid[~matched]
        if spec.unmatched_samples == "error":
            raise DataError(
                f"{source}: {len(bad)} sample(s) match no slide in the cohort, e.g. {list(bad[:5])}; "
                "fix the ids or set unmatched_samples: drop"
            )
        log.info("%s: dropping %d samples without a slide", source, len(bad))
    x = np.asarray(adata.X, dtype=np.float64)[matched]
    pid = pid[matched]
    uniq, inv, counts = np.unique(pid, return_inverse=True, return_counts=True)
    if (counts > 1).any():
        dups = uniq[counts > 1].tolist()
        if spec.duplicate_patients == "error":
            raise DataError(
                f"{source}: several samples for patient(s) {dups[:5]}; "
                "set duplicate_patients: first or mean"
            )
        if spec.duplicate_patients == "first":
            first = np.array([np.flatnonzero(inv == k)[0] for k in range(len(uniq))])
            x = x[first]
        else:
            with np.errstate(invalid="ignore"), _quiet_nanmean():
                x = np.stack([np.nanmean(x[inv == k], axis=0) for k in range(len(uniq))])
        pid = uniq
    return ad.AnnData(
        X=x,
        obs=pd.DataFrame(index=pd.Index(pid, name="patient_id")),
        var=pd.DataFrame(index=adata.var_names.copy()),
    )


def _match_hint(samples: Sequence[str], targets: Sequence[str], cohort: set[str], spec: OmicsSpec) -> str:
    """What to do when no sample id matches a patient: transpose, id_length, or map the ids."""
    tids = [str(t)[: spec.id_length] if spec.id_length else str(t) for t in list(targets)[:5000]]
    if any(t in cohort for t in tids) or any(t[:12] in cohort for t in tids):
        return ("its target ids are cohort patients, so the table is samples x targets: transpose it to targets x "
                "samples (Xena layout), or import it with `histoviz import`, which reads either orientation")
    if not spec.id_length and any(str(s)[:12] in cohort for s in samples):
        return "the samples look like TCGA barcodes: set id_length: 12 (the patient is the first 12 characters)"
    return ("set patient_column (an obs column with patient ids) or id_length, or import the table with "
            "`histoviz import`, which maps sample barcodes and clinical sample tables to patients")


class _quiet_nanmean:
    def __enter__(self) -> None:
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc: Any) -> None:
        self._w.__exit__(*exc)


# ------------------------------------------------------------------------------------------------
# aligned data
# ------------------------------------------------------------------------------------------------
@dataclass
class ModalityData:
    """One modality aligned to the cohort's patients (stateless preprocessing applied).

    Attributes
    ----------
    name
        Modality name.
    targets
        Target names (all of them; the fold-fitted filter comes later).
    values
        ``(n_patients, n_targets)`` float64 after normalisation and transform; rows of
        patients without this modality are ``NaN``.
    present
        ``(n_patients,)`` bool: patient has this modality.
    counts
        Raw values before normalisation when ``normalize="total"`` (for count models), else
        ``None``.
    library
        ``(n_patients,)`` raw totals over all targets (``normalize="total"`` only).
    spec
        The :class:`OmicsSpec` it was read with.
    """

    name: str
    targets: list[str]
    values: np.ndarray
    present: np.ndarray
    spec: OmicsSpec
    counts: np.ndarray | None = None
    library: np.ndarray | None = None

    @property
    def n_present(self) -> int:
        """Number of patients with this modality."""
        return int(self.present.sum())


@dataclass
class OmicsData:
    """Every modality aligned to one ordered list of patients."""

    patients: list[str]
    modalities: dict[str, ModalityData] = field(default_factory=dict)

    def __getitem__(self, name: str) -> ModalityData:
        return self.modalities[name]

    def summary(self) -> str:
        """One line per modality (patients with data, targets)."""
        return "\n".join(
            f"{m.name}: {m.n_present}/{len(self.patients)} patients x {len(m.targets)} targets"
            for m in self.modalities.values()
        )


def load_omics(
    patients: Sequence[str],
    specs: Mapping[str, OmicsSpec],
) -> OmicsData:
    """Read, validate and align every modality to ``patients`` (stateless preprocessing only).

    Parameters
    ----------
    patients
        Cohort patient ids (order kept).
    specs
        ``modality -> OmicsSpec``; modalities with ``from_modality`` are computed after the
        one they depend on.

    Raises
    ------
    DataError
        Bad tables (see :func:`read_omics_table`, :func:`align_to_cohort`), NaN where not
        allowed, negative values under a log transform, a modality with no overlap.
    """
    patients = [str(p) for p in patients]
    pidx = {p: i for i, p in enumerate(patients)}
    out = OmicsData(patients)
    order = [m for m, s in specs.items() if not s.from_modality] + [
        m for m, s in specs.items() if s.from_modality
    ]
    for mod in order:
        spec = specs[mod]
        if spec.from_modality:
            if spec.from_modality not in out.modalities:
                raise ConfigError(
                    f"omics.{mod}.from_modality={spec.from_modality!r} is not a table modality "
                    f"(have {sorted(out.modalities)})"
                )
            out.modalities[mod] = _pathway_modality(mod, spec, out.modalities[spec.from_modality])
            continue
        src = f"omics.{mod} ({spec.path})"
        table = read_omics_table(spec.path, format=spec.format, layer=spec.layer)
        aligned = align_to_cohort(table, patients, spec, source=src)
        raw = np.full((len(patients), aligned.n_vars), np.nan)
        rows = np.array([pidx[p] for p in aligned.obs_names])
        raw[rows] = np.asarray(aligned.X, dtype=np.float64)
        present = np.zeros(len(patients), dtype=bool)
        present[rows] = True
        out.modalities[mod] = _stateless(mod, spec, list(aligned.var_names.astype(str)), raw, present, src)
        log.info("omics %s: %d/%d patients x %d targets", mod, present.sum(), len(patients), aligned.n_vars)
    return out


def _stateless(
    mod: str, spec: OmicsSpec, targets: list[str], raw: np.ndarray, present: np.ndarray, src: str
) -> ModalityData:
    block = raw[present]
    nan = np.isnan(block)
    if nan.any() and not spec.nan_allowed:
        r, c = np.argwhere(nan)[0]
        raise DataError(
            f"{src}: {int(nan.sum())} missing value(s) (e.g. target {targets[c]!r}); "
            "set impute: median (or allow_nan: true) for this modality"
        )
    if (spec.transform != "none" or spec.normalize == "total") and np.nanmin(block) < 0:
        raise DataError(
            f"{src}: negative values cannot take normalize={spec.normalize!r} / "
            f"transform={spec.transform!r}; use transform: none for already log-scaled data"
        )
    counts = library = None
    vals = raw.copy()
    if spec.normalize == "total":
        if nan.any():
            raise DataError(f"{src}: normalize=total needs complete counts (no missing values)")
        counts = raw.copy()
        library = np.nansum(raw, axis=1)
        if (library[present] <= 0).any():
            raise DataError(f"{src}: a sample has zero total counts; cannot normalise")
        with np.errstate(invalid="ignore", divide="ignore"):
            vals = raw / library[:, None] * spec.target_sum
    vals = apply_transform(vals, spec.transform)
    vals[~present] = np.nan
    return ModalityData(mod, targets, vals, present, spec, counts, library)


# ------------------------------------------------------------------------------------------------
# fold-fitted preprocessing
# ------------------------------------------------------------------------------------------------
class TargetPreprocessor:
    """The fold-fitted part of the preprocessing of one modality.

    ``fit`` sees the training patients only: targets whose training median is zero are
    dropped (``drop_median_zero``), missing values are replaced by training medians
    (``impute="median"``) and targets are z-scored with training statistics
    (``standardize``). Targets with no training value at all are dropped.

    Attributes
    ----------
    keep_
        Bool mask over the modality's targets.
    targets_
        Names of the kept targets.
    medians_, mean_, std_
        Training statistics of the kept targets (``mean_``/``std_`` only with standardize).
    """

    def __init__(self, spec: OmicsSpec) -> None:
        self.spec = spec

    def fit(self, values: np.ndarray, targets: Sequence[str]) -> TargetPreprocessor:
        """Fit on ``(n_train, n_targets)`` stateless-preprocessed training values."""
        v = np.asarray(values, dtype=np.float64)
        v = v[~np.all(np.isnan(v), axis=1)]
        if len(v) == 0:
            raise DataError("no training patient has this modality")
        with _quiet_nanmean():
            med = np.nanmedian(v, axis=0)
        keep = ~np.isnan(med)
        if self.spec.drop_median_zero:
            keep &= med != 0
        if not keep.any():
            raise DataError("every target was dropped (median zero or no training value)")
        self.keep_ = keep
        self.targets_ = [t for t, k in zip(targets, keep) if k]
        self.medians_ = med[keep]
        vk = v[:, keep]
        if self.spec.impute == "median":
            vk = np.where(np.isnan(vk), self.medians_[None, :], vk)
        if self.spec.standardize:
            with _quiet_nanmean():
                self.mean_ = np.nanmean(vk, axis=0)
                sd = np.nanstd(vk, axis=0)
            self.std_ = np.where(sd > 1e-12, sd, 1.0)
        else:
            self.mean_ = self.std_ = None
        return self

    def transform(self, values: np.ndarray) -> np.ndarray:
        """Kept, imputed, standardised values (rows that are all NaN stay NaN)."""
        v = np.asarray(values, dtype=np.float64)[:, self.keep_]
        missing_row = np.all(np.isnan(v), axis=1)
        if self.spec.impute == "median":
            v = np.where(np.isnan(v), self.medians_[None, :], v)
        if self.mean_ is not None:
            v = (v - self.mean_) / self.std_
        v[missing_row] = np.nan
        return v

    def output_transform(self) -> OutputTransform | None:
        """Normalised-to-target map, for count modalities (``normalize="total"``)."""
        if self.spec.normalize != "total":
            return None
        return OutputTransform(self.spec.transform, self.spec.target_sum, self.mean_, self.std_)

    def block(self, data: ModalityData, rows: np.ndarray | None = None) -> TargetBlock:
        """A :class:`TargetBlock` of ``data`` (all patients or ``rows``)."""
        idx = np.arange(len(data.values)) if rows is None else np.asarray(rows)
        counts = None if data.counts is None else data.counts[idx][:, self.keep_]
        library = None if data.library is None else data.library[idx]
        return TargetBlock(
            data.name,
            list(self.targets_),
            self.transform(data.values[idx]),
            data.present[idx],
            counts,
            library,
            self.output_transform(),
        )

    def to_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """JSON-able metadata and arrays (for a safetensors checkpoint)."""
        meta = {"spec": {f.name: getattr(self.spec, f.name) for f in fields(self.spec)},
                "targets": list(self.targets_)}
        arrays = {"keep": self.keep_.astype(np.uint8), "medians": self.medians_}
        if self.mean_ is not None:
            arrays["mean"] = self.mean_
            arrays["std"] = self.std_
        return meta, arrays

    @classmethod
    def from_state(cls, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> TargetPreprocessor:
        """Inverse of :meth:`to_state`."""
        p = cls(OmicsSpec(**meta["spec"]))
        p.keep_ = np.asarray(arrays["keep"]).astype(bool)
        p.targets_ = list(meta["targets"])
        p.medians_ = np.asarray(arrays["medians"], dtype=np.float64)
        p.mean_ = np.asarray(arrays["mean"], np.float64) if "mean" in arrays else None
        p.std_ = np.asarray(arrays["std"], np.float64) if "std" in arrays else None
        return p


# ------------------------------------------------------------------------------------------------
# pathway activity
# ------------------------------------------------------------------------------------------------
def read_network(path: str | os.PathLike) -> pd.DataFrame:
    """Read a network CSV/TSV with ``source, target[, weight]`` (decoupler's long format)."""
    path = Path(path)
    if not path.exists():
        raise DataError(
            f"{path}: network file not found (PROGENy ships as sample_data/progeny_human_top100.csv)"
        )
    sep = "\t" if path.suffix in (".tsv", ".txt") else ","
    net = pd.read_csv(path, sep=sep)
    missing = {"source", "target"} - set(net.columns)
    if missing:
        raise DataError(f"{path}: network lacks column(s) {sorted(missing)}; need source, target[, weight]")
    if "weight" not in net.columns:
        net["weight"] = 1.0
    net = net[["source", "target", "weight"]].copy()
    net["source"] = net["source"].astype(str)
    net["target"] = net["target"].astype(str)
    dup = net.duplicated(["source", "target"])
    if dup.any():
        raise DataError(f"{path}: duplicate source-target pairs, e.g. {net[dup].iloc[0].tolist()[:2]}")
    return net


def pathway_activity(
    expression: pd.DataFrame | ad.AnnData,
    network: str | os.PathLike | pd.DataFrame,
    *,
    method: str = "ulm",
    min_targets: int = 5,
) -> pd.DataFrame:
    """Pathway activity per sample from (log-normalised) expression with decoupler.

    Each sample is scored on its own (``ulm``: the t-value of regressing the sample's
    expression on the pathway weights), so no statistic is shared between samples and the
    function can run on predictions of held-out patients without leakage.

    Parameters
    ----------
    expression
        Samples x genes (DataFrame, or AnnData with ``X``), log-normalised.
    network
        Path of a network CSV or a DataFrame with ``source, target, weight``.
    method
        ``ulm`` (default), ``mlm`` (decoupler ``dc.mt.ulm/mlm``), ``wsum`` or ``wmean``
        (``dc.mt.waggr``, no permutations; ``wsum`` is PROGENy's original score).
    min_targets
        Pathways with fewer network genes in ``expression`` are not scored.

    Returns
    -------
    Samples x pathways DataFrame of activity scores.

    Raises
    ------
    DataError
        No pathway has ``min_targets`` genes in ``expression`` (the gene names do not match).
    """
    import decoupler as dc

    net = network if isinstance(network, pd.DataFrame) else read_network(network)
    if not isinstance(expression, pd.DataFrame):
        expression = pd.DataFrame(
            np.asarray(expression.X), index=expression.obs_names, columns=expression.var_names
        )
    genes = set(map(str, expression.columns))
    hits = net[net["target"].isin(genes)].groupby("source").size()
    ok = hits[hits >= min_targets].index
    if len(ok) == 0:
        raise DataError(
            f"no pathway has >= {min_targets} of its network genes among the {len(genes)} "
            f"expression targets (e.g. {sorted(genes)[:3]}); gene symbols must match the network"
        )
    data = expression.astype(np.float64)
    sub = net[net["source"].isin(ok)]
    if method in ("wsum", "wmean"):  # PROGENy's own score is the weighted sum
        res = dc.mt.waggr(data, sub, tmin=min_targets, fun=method, times=1)
    elif method in ("ulm", "mlm"):
        res = getattr(dc.mt, method)(data, sub, tmin=min_targets)
    else:
        raise ConfigError(f"unknown pathway method {method!r}; use ulm, mlm, wsum or wmean")
    scores = res[0] if isinstance(res, tuple) else res
    return scores.loc[:, sorted(scores.columns)].astype(np.float64)


def _pathway_modality(mod: str, spec: OmicsSpec, expr: ModalityData) -> ModalityData:
    df = pd.DataFrame(expr.values[expr.present], columns=expr.targets)
    if df.isna().any().any():
        df = df.fillna(df.median())
    scores = pathway_activity(df, spec.network, method=spec.method, min_targets=spec.min_targets)
    vals = np.full((len(expr.values), scores.shape[1]), np.nan)
    vals[expr.present] = scores.to_numpy()
    log.info("omics %s: %d pathways scored from %s with %s", mod, scores.shape[1], expr.name, spec.method)
    return ModalityData(mod, list(scores.columns), vals, expr.present.copy(), spec)
