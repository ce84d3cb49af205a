"""The synthetic cohort's configuration (:class:`SyntheticConfig`), its on-disk handle
(:class:`SyntheticCohort`, :func:`load_synthetic_cohort`) and the truth arithmetic over a
slide's label map (:func:`tile_composition`, :func:`tile_truth`): expected cell-type counts and
expression of any region. :mod:`histoviz.data.synthetic` writes cohorts and re-exports these.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from histoviz.errors import ConfigError, DataError

if TYPE_CHECKING:  # pragma: no cover
    import anndata
    import pandas as pd

from histoviz.data.synthetic.render import CELL_TYPES, FORMAT_VERSION, MODALITIES, TISSUE_TYPES

__all__ = ["SyntheticCohort", "SyntheticConfig", "load_synthetic_cohort", "tile_composition", "tile_truth"]

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------
# configuration
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of a synthetic cohort; every field is validated on construction.

    Parameters
    ----------
    n_slides
        Number of slides. Patients are ``n_slides`` minus the number of second slides.
    seed
        Seed of every random draw; same config -> same files.
    slide_size
        Level-0 ``(width, height)`` in pixels of every slide.
    mpp
        Microns per level-0 pixel (0.5 is a 20x scan).
    n_genes, n_proteins, n_mirna, n_pathways
        Number of targets per omics layer.
    n_cells_reference
        Cells in the scRNA-style reference.
    multi_slide_fraction
        Fraction of patients with two slides.
    spatial_fraction
        Fraction of slides with Visium-like spot data.
    missing_fraction
        Fraction of patients missing from each non-gene modality (different patients each).
    noise
        Overall noise level: negative-binomial over-dispersion ``1/theta = noise**2`` of the
        counts and the standard deviation of the noise added to derived layers.
    noise_gene_fraction
        Fraction of genes whose expression does not depend on cell type (``var["signal"]``
        is False for them).
    tissue_fraction_range
        Range of the fraction of each slide covered by tissue.
    tumour_fraction_range
        Range of the per-patient fraction of tissue area that is tumour.
    region_scale_um
        Correlation length of the random fields that place tissue types, in microns.
    censoring_fraction
        Expected fraction of censored patients (independent exponential censoring).
    label_downsample
        Downsample of the stored tissue-type label maps (the layout is rendered from them).
    jpeg_quality
        JPEG quality of the slide tiles.
    pen_marks, debris, bubbles
        Artefacts per slide for testing tissue detection (default none): marker strokes
        (blue, green, black), debris particles, air-bubble rims. See
        :func:`histoviz.data.synthetic.artifacts.paint_artifacts`; their truth is stored as
        ``artifact`` in ``truth/<slide_id>.npz``.
    faint_fraction
        Fraction of each slide's tissue rendered faintly stained (default 0); truth ``faint``.
    gene_groups
        Write ``gene_groups.csv``: six MCAT-like gene groups over the genes (MCAT's wide
        layout; :func:`histoviz.data.gene_groups.synthetic_gene_groups`). Default off.
    hidden_factor
        Strength ``s`` of a per-patient factor ``h ~ N(0, 1)`` that no slide shows (needs
        ``gene_groups``): it adds ``0.15 s h`` to the grade latent and ``0.8 s h`` to the log
        hazard, and multiplies the bulk counts of the oncogene group by ``exp(0.5 s h w)`` and of
        the tumour-suppressor group by ``exp(-0.5 s h w)`` (``w ~ U(0.5, 1.5)`` per gene). Those
        groups then carry outcome signal that morphology shows only partly (through cell
        composition); ``h`` is in ``truth/patients.csv``. Default 0: outcomes and counts are
        exactly those of a cohort without the option.
    index_offset
        Patients and slides are numbered from ``index_offset + 1`` (``P067``, ``S067`` for 66), and
        every per-patient and per-slide random draw (layout, tumour fraction, outcome, counts)
        comes from streams no cohort with ``index_offset = 0`` uses, while the genes, cell-type
        prototypes, reference and tissue colours (drawn from ``seed`` alone) stay the same. A
        cohort made with ``index_offset = n_slides`` of another of the same seed is new
        patients of the same world: none of its ids, layouts or draws is the other's. Default 0.
    focal_share, hidden_visibility, composition_signal, modality_shared, reference_mismatch, spot_interface
        Mechanism knobs that switch each paper's mechanism on and off
        (:mod:`histoviz.data.synthetic.mechanisms` describes them); at their defaults the
        cohort is exactly the one without them.
    """

    n_slides: int = 12
    seed: int = 0
    slide_size: tuple[int, int] = (2048, 2048)
    mpp: float = 0.5
    n_genes: int = 200
    n_proteins: int = 40
    n_mirna: int = 30
    n_pathways: int = 14
    n_cells_reference: int = 1200
    multi_slide_fraction: float = 0.2
    spatial_fraction: float = 0.25
    missing_fraction: float = 0.15
    noise: float = 0.3
    noise_gene_fraction: float = 0.2
    tissue_fraction_range: tuple[float, float] = (0.4, 0.7)
    tumour_fraction_range: tuple[float, float] = (0.05, 0.75)
    region_scale_um: float = 120.0
    censoring_fraction: float = 0.3
    label_downsample: int = 4
    jpeg_quality: int = 90
    pen_marks: int = 0
    debris: int = 0
    bubbles: int = 0
    faint_fraction: float = 0.0
    gene_groups: bool = False
    hidden_factor: float = 0.0
    focal_share: float = 0.0
    hidden_visibility: float = 0.0
    composition_signal: float = 1.0
    modality_shared: float = 1.0
    reference_mismatch: float = 0.0
    spot_interface: float = 0.0
    index_offset: int = 0

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> ConfigError:
            return ConfigError(f"SyntheticConfig.{name}={getattr(self, name)!r}: {why}")

        for name in ("slide_size", "tissue_fraction_range", "tumour_fraction_range"):
            val = getattr(self, name)
            if not isinstance(val, (tuple, list)) or len(val) != 2:
                raise bad(name, "must be a pair")
            object.__setattr__(self, name, tuple(val))
        ints = {
            "n_slides": 1,
            "seed": 0,
            "n_genes": 12,
            "n_proteins": 1,
            "n_mirna": 1,
            "n_pathways": 1,
            "n_cells_reference": len(CELL_TYPES),
            "label_downsample": 1,
            "jpeg_quality": 1,
            "pen_marks": 0,
            "debris": 0,
            "bubbles": 0,
            "index_offset": 0,
        }
        for name, lo in ints.items():
            val = getattr(self, name)
            if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < lo:
                raise bad(name, f"must be an integer >= {lo}")
            object.__setattr__(self, name, int(val))
        if self.jpeg_quality > 100:
            raise bad("jpeg_quality", "must be in 1..100")
        if self.label_downsample > 16:
            raise bad("label_downsample", "must be <= 16")
        w, h = self.slide_size
        if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (w, h)):
            raise bad("slide_size", "must be two integers (width, height)")
        object.__setattr__(self, "slide_size", (int(w), int(h)))
        if min(w, h) < 128:
            raise bad("slide_size", "each side must be >= 128 pixels")
        if max(w, h) > 32768:
            raise bad("slide_size", "each side must be <= 32768 pixels")
        for name in ("mpp", "region_scale_um"):
            val = getattr(self, name)
            if not isinstance(val, (int, float)) or isinstance(val, bool) or not val > 0:
                raise bad(name, "must be a number > 0")
            object.__setattr__(self, name, float(val))
        for name, hi_open in (
            ("multi_slide_fraction", False),
            ("spatial_fraction", False),
            ("missing_fraction", True),
            ("noise_gene_fraction", True),
            ("censoring_fraction", True),
            ("faint_fraction", True),
        ):
            val = getattr(self, name)
            if not isinstance(val, (int, float)) or isinstance(val, bool):
                raise bad(name, "must be a number")
            if not (0.0 <= val < 1.0 if hi_open else 0.0 <= val <= 1.0):
                raise bad(name, "must be in [0, 1)" if hi_open else "must be in [0, 1]")
            object.__setattr__(self, name, float(val))
        if (
            not isinstance(self.noise, (int, float))
            or isinstance(self.noise, bool)
            or self.noise < 0
        ):
            raise bad("noise", "must be a number >= 0")
        object.__setattr__(self, "noise", float(self.noise))
        for name in ("tissue_fraction_range", "tumour_fraction_range"):
            lo, hi = getattr(self, name)
            if not (0.0 < float(lo) <= float(hi) < 1.0):
                raise bad(name, "must satisfy 0 < low <= high < 1")
            object.__setattr__(self, name, (float(lo), float(hi)))
        if self.n_patients < 1:
            raise bad("n_slides", "gives no patients")
        if not isinstance(self.gene_groups, (bool, np.bool_)):
            raise bad("gene_groups", "must be true or false")
        object.__setattr__(self, "gene_groups", bool(self.gene_groups))
        hf = self.hidden_factor
        if not isinstance(hf, (int, float)) or isinstance(hf, bool) or not 0.0 <= hf <= 10.0:
            raise bad("hidden_factor", "must be a number in [0, 10]")
        object.__setattr__(self, "hidden_factor", float(hf))
        if hf > 0 and not self.gene_groups:
            raise bad("hidden_factor", "needs gene_groups=True (the factor shifts two gene groups)")
        from histoviz.data.synthetic.mechanisms import validate_knobs

        validate_knobs(self, bad)

    @property
    def n_multi_slide_patients(self) -> int:
        """Patients with two slides."""
        f = self.multi_slide_fraction
        return min(int(round(self.n_slides * f / (1.0 + f))), self.n_slides // 2)

    @property
    def n_patients(self) -> int:
        """Number of patients."""
        return self.n_slides - self.n_multi_slide_patients

    @property
    def has_artifacts(self) -> bool:
        """Whether slides get pen marks, debris, bubbles or faint regions."""
        return any(getattr(self, k) != v for k, v in _ARTIFACT_DEFAULTS.items())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples as lists); artefact and gene-group fields only when set, so
        manifests of cohorts without them are the same as before those fields existed."""
        d = json.loads(json.dumps(asdict(self)))
        from histoviz.data.synthetic.mechanisms import KNOB_DEFAULTS

        for k, v in {**_ARTIFACT_DEFAULTS, **_GROUP_DEFAULTS, **KNOB_DEFAULTS}.items():
            if d[k] == v:
                del d[k]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SyntheticConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError`."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown SyntheticConfig keys {unknown}; known: {sorted(known)}")
        return cls(**dict(d))


_ARTIFACT_DEFAULTS = {"pen_marks": 0, "debris": 0, "bubbles": 0, "faint_fraction": 0.0}
_GROUP_DEFAULTS = {"gene_groups": False, "hidden_factor": 0.0}


# ----------------------------------------------------------------------------------------------
# the cohort handle
# ----------------------------------------------------------------------------------------------
@dataclass
class SyntheticCohort:
    """Paths of a generated synthetic cohort, with loaders.

    Attributes
    ----------
    root
        Folder holding everything.
    cohort_csv
        ``cohort.csv`` (``slide_id, patient_id, path, time, event, grade``; paths relative).
    slides
        ``slide_id -> slides/<slide_id>.tif``.
    omics
        ``modality -> omics/<modality>.h5ad`` for each of :data:`MODALITIES`.
    reference
        ``reference_sc.h5ad`` (cells x genes, ``obs["cell_type"]``).
    spatial
        ``slide_id -> spatial/<slide_id>.h5ad`` for the slides with spots.
    config
        The :class:`SyntheticConfig` it was made with.
    """

    root: Path
    cohort_csv: Path
    slides: dict[str, Path]
    omics: dict[str, Path]
    reference: Path
    spatial: dict[str, Path]
    config: SyntheticConfig
    _cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def gene_groups_csv(self) -> Path:
        """``gene_groups.csv`` (written with ``SyntheticConfig.gene_groups``)."""
        return self.root / "gene_groups.csv"

    @property
    def truth_dir(self) -> Path:
        """Folder of the ground-truth files."""
        return self.root / "truth"

    @property
    def slide_ids(self) -> list[str]:
        """Slide ids in cohort order."""
        return list(self.slides)

    def cohort_table(self) -> pd.DataFrame:
        """``cohort.csv`` as a DataFrame (paths as stored: relative to :attr:`root`)."""
        import pandas as pd

        return pd.read_csv(self.cohort_csv, dtype={"slide_id": str, "patient_id": str, "path": str})

    def patients(self) -> pd.DataFrame:
        """Patient-level truth (``truth/patients.csv``), indexed by ``patient_id``."""
        import pandas as pd

        return pd.read_csv(self.truth_dir / "patients.csv", dtype={"patient_id": str}).set_index(
            "patient_id"
        )

    def omics_adata(self, modality: str) -> anndata.AnnData:
        """Read one omics layer (obs = patients, var = targets)."""
        import anndata

        if modality not in self.omics:
            raise DataError(f"unknown modality {modality!r}; choose from {sorted(self.omics)}")
        return anndata.read_h5ad(self.omics[modality])

    def reference_adata(self) -> anndata.AnnData:
        """Read the scRNA-style reference (cells x genes, ``obs["cell_type"]``)."""
        import anndata

        return anndata.read_h5ad(self.reference)

    def spatial_adata(self, slide_id: str) -> anndata.AnnData:
        """Read the spot data of one slide."""
        import anndata

        if slide_id not in self.spatial:
            raise DataError(
                f"slide {slide_id!r} has no spot data; slides with spots: {sorted(self.spatial)}"
            )
        return anndata.read_h5ad(self.spatial[slide_id])

    def prototypes(self) -> pd.DataFrame:
        """True mean counts per cell: cell types (index) x genes (columns)."""
        import pandas as pd

        return pd.read_csv(self.truth_dir / "prototypes.csv", index_col=0)

    def tissue_to_cell(self) -> pd.DataFrame:
        """Cell-type mix of each tissue type: tissue types x cell types (rows sum to 1)."""
        import pandas as pd

        return pd.read_csv(self.truth_dir / "tissue_to_cell.csv", index_col=0)

    def truth(self, slide_id: str) -> dict[str, Any]:
        """Ground truth of one slide (``truth/<slide_id>.npz``) as a dict of arrays.

        Keys: ``labels`` (tissue-type index map at ``downsample``), ``downsample``,
        ``slide_size`` (w, h), ``mpp``, ``tissue_types``, ``cell_types``, ``gene_names``,
        ``tissue_to_cell``, ``cells_per_px2`` (per tissue type), ``prototypes`` (cell types x
        genes), ``tumour_fraction_target``; for slides with spots also ``spot_centres``,
        ``spot_composition``, ``spot_n_cells``, ``spot_expression``, ``spot_tissue_fraction``;
        with artefacts (``SyntheticConfig.pen_marks`` ...) also ``artifact`` (codes of
        :data:`histoviz.data.synthetic.artifacts.ARTIFACT_CODES`) and ``faint`` (bool), both
        on the label grid.
        """
        key = f"truth:{slide_id}"
        if key not in self._cache:
            path = self.truth_dir / f"{slide_id}.npz"
            if slide_id not in self.slides or not path.exists():
                raise DataError(f"{self.root}: no truth for slide {slide_id!r}")
            self._cache[key] = _load_truth_npz(path)
        return self._cache[key]


# ----------------------------------------------------------------------------------------------
# truth arithmetic (box sums over the label map)
# ----------------------------------------------------------------------------------------------
def _cell_channels(truth: Mapping[str, Any]) -> np.ndarray:
    """Per label cell: expected cells of each type, tissue area, tumour area (level-0 px^2)."""
    labels = np.asarray(truth["labels"])
    ds = int(truth["downsample"])
    per_tissue = np.asarray(truth["cells_per_px2"])[:, None] * np.asarray(truth["tissue_to_cell"])
    tumour = TISSUE_TYPES.index("tumour")
    table = np.concatenate(
        [
            per_tissue,
            (np.arange(len(per_tissue)) > 0)[:, None].astype(np.float64),
            (np.arange(len(per_tissue)) == tumour)[:, None].astype(np.float64),
        ],
        axis=1,
    ) * float(ds * ds)
    return table[labels]


def _sat(truth: Mapping[str, Any]) -> np.ndarray:
    ch = _cell_channels(truth)
    sat = np.zeros((ch.shape[0] + 1, ch.shape[1] + 1, ch.shape[2]))
    np.cumsum(np.cumsum(ch, axis=0), axis=1, out=sat[1:, 1:])
    return sat


def _sat_at(sat: np.ndarray, v: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Integral of the cell channels over [0, u) x [0, v) in label-cell units (bilinear: exact)."""
    hl, wl = sat.shape[0] - 1, sat.shape[1] - 1
    i = np.clip(np.floor(v).astype(np.int64), 0, hl - 1)
    j = np.clip(np.floor(u).astype(np.int64), 0, wl - 1)
    fi = (v - i)[:, None]
    fj = (u - j)[:, None]
    return (
        sat[i, j] * (1 - fi) * (1 - fj)
        + sat[i + 1, j] * fi * (1 - fj)
        + sat[i, j + 1] * (1 - fi) * fj
        + sat[i + 1, j + 1] * fi * fj
    )


def _box_sums(
    truth: Mapping[str, Any], sat: np.ndarray, coords: np.ndarray, tile: tuple[float, float]
) -> np.ndarray:
    """Channel sums over level-0 boxes ``[x, x+tw) x [y, y+th)`` clipped to the slide."""
    ds = float(truth["downsample"])
    sw, sh = (float(v) for v in np.asarray(truth["slide_size"]))
    x0 = np.clip(coords[:, 0], 0, sw)
    y0 = np.clip(coords[:, 1], 0, sh)
    x1 = np.clip(coords[:, 0] + tile[0], 0, sw)
    y1 = np.clip(coords[:, 1] + tile[1], 0, sh)
    u0, u1, v0, v1 = x0 / ds, x1 / ds, y0 / ds, y1 / ds
    return _sat_at(sat, v1, u1) - _sat_at(sat, v0, u1) - _sat_at(sat, v1, u0) + _sat_at(sat, v0, u0)


def _slide_totals(truth: Mapping[str, Any]) -> np.ndarray:
    """Channel sums over the whole slide (label cells cut by the slide edge count in part)."""
    ch = _cell_channels(truth)
    ds = int(truth["downsample"])
    w, h = (int(v) for v in np.asarray(truth["slide_size"]))
    wy = np.clip((h - np.arange(ch.shape[0]) * ds) / ds, 0.0, 1.0)
    wx = np.clip((w - np.arange(ch.shape[1]) * ds) / ds, 0.0, 1.0)
    return np.einsum("ijk,i,j->k", ch, wy, wx)


def _resolve_truth(
    cohort_or_truth: SyntheticCohort | str | os.PathLike | Mapping[str, Any], slide_id: str | None
) -> tuple[Mapping[str, Any], np.ndarray]:
    """Return (truth dict, summed-area table), caching on a cohort."""
    if isinstance(cohort_or_truth, Mapping):
        truth = cohort_or_truth
        return truth, _sat(truth)
    cohort = (
        cohort_or_truth
        if isinstance(cohort_or_truth, SyntheticCohort)
        else load_synthetic_cohort(cohort_or_truth)
    )
    if slide_id is None:
        raise DataError("slide_id is required when passing a cohort")
    truth = cohort.truth(slide_id)
    key = f"sat:{slide_id}"
    if key not in cohort._cache:
        cohort._cache[key] = _sat(truth)
    return truth, cohort._cache[key]


def _as_coords(coords: Any) -> np.ndarray:
    arr = np.asarray(coords, dtype=np.float64)
    if arr.ndim == 1 and arr.size == 2:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise DataError(f"coords must be an (N, 2) array of level-0 (x, y); got shape {arr.shape}")
    return arr


def _as_tile(tile_size_level0: Any) -> tuple[float, float]:
    t = np.atleast_1d(np.asarray(tile_size_level0, dtype=np.float64))
    if t.size == 1:
        t = np.repeat(t, 2)
    if t.size != 2 or not np.all(t > 0):
        raise DataError(
            f"tile_size_level0 must be > 0 (one value or (w, h)); got {tile_size_level0}"
        )
    return float(t[0]), float(t[1])


def tile_composition(
    cohort_or_truth: SyntheticCohort | str | os.PathLike | Mapping[str, Any],
    slide_id: str | None,
    coords: Any,
    tile_size_level0: float | tuple[float, float],
) -> np.ndarray:
    """True cell-type composition of square tiles.

    Parameters
    ----------
    cohort_or_truth
        A :class:`SyntheticCohort`, its folder, or one slide's truth dict
        (:meth:`SyntheticCohort.truth`; ``slide_id`` is then ignored).
    slide_id
        Slide to look up.
    coords
        ``(N, 2)`` level-0 top-left corners ``(x, y)``.
    tile_size_level0
        Tile side in level-0 pixels (or ``(w, h)``).

    Returns
    -------
    ``(N, len(CELL_TYPES))`` float64: fraction of the tile's expected cells of each type. Rows
    sum to 1 where the tile holds tissue and are all zero for pure background. The expected
    cell count weights each tissue type by its cell density, so a tile that is half tumour and
    half stroma is mostly tumour cells.
    """
    return tile_truth(cohort_or_truth, slide_id, coords, tile_size_level0)["composition"]


def tile_truth(
    cohort_or_truth: SyntheticCohort | str | os.PathLike | Mapping[str, Any],
    slide_id: str | None,
    coords: Any,
    tile_size_level0: float | tuple[float, float],
) -> dict[str, np.ndarray]:
    """Ground truth of tiles: composition, expected expression and tissue content.

    Parameters are those of :func:`tile_composition`.

    Returns
    -------
    dict with
        ``composition`` ``(N, K)`` cell-type fractions (rows sum to 1 over tissue, zero rows for
        background); ``n_cells`` ``(N,)`` expected cell count; ``expression`` ``(N, G)``
        expected counts of the tile, ``n_cells * composition @ prototypes`` (noise genes
        included at their cell-type independent level); ``tumour_fraction`` ``(N,)`` tumour
        area / tissue area (0 without tissue); ``tissue_fraction`` ``(N,)`` tissue area / tile
        area (parts outside the slide count as background).
    """
    truth, sat = _resolve_truth(cohort_or_truth, slide_id)
    xy = _as_coords(coords)
    tile = _as_tile(tile_size_level0)
    sums = _box_sums(truth, sat, xy, tile)
    k = len(truth["cell_types"])
    cells = np.clip(sums[:, :k], 0, None)
    n_cells = cells.sum(axis=1)
    tissue_area = np.clip(sums[:, k], 0, None)
    tumour_area = np.clip(sums[:, k + 1], 0, None)
    with np.errstate(invalid="ignore", divide="ignore"):
        comp = np.where(n_cells[:, None] > 1e-9, cells / n_cells[:, None], 0.0)
        tumour_fraction = np.where(tissue_area > 1e-9, tumour_area / tissue_area, 0.0)
    return {
        "composition": comp,
        "n_cells": n_cells,
        "expression": cells @ np.asarray(truth["prototypes"]),
        "tumour_fraction": np.clip(tumour_fraction, 0.0, 1.0),
        "tissue_fraction": np.clip(tissue_area / (tile[0] * tile[1]), 0.0, 1.0),
    }


def _load_truth_npz(path: Path) -> dict[str, Any]:
    with np.load(path, allow_pickle=False) as z:
        out: dict[str, Any] = {k: z[k] for k in z.files}
    for k in ("downsample",):
        out[k] = int(out[k])
    for k in ("mpp", "tumour_fraction_target"):
        out[k] = float(out[k])
    for k in ("tissue_types", "cell_types", "gene_names"):
        out[k] = tuple(str(s) for s in out[k])
    return out


def _read_manifest(root: Path) -> dict[str, Any]:
    path = root / "manifest.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(
            f"{root}: no manifest.json, so no complete synthetic cohort here "
            "(make one with histoviz.data.synthetic.make_synthetic_cohort)"
        ) from None
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: unreadable manifest ({e})") from e
    if not isinstance(data, dict) or data.get("generator") != "histoviz.data.synthetic":
        raise DataError(f"{path}: not a histoviz synthetic-cohort manifest")
    return data


def load_synthetic_cohort(out_dir: str | os.PathLike) -> SyntheticCohort:
    """Open a cohort written by :func:`make_synthetic_cohort`.

    Raises
    ------
    DataError
        No complete cohort in ``out_dir`` (missing manifest or files).
    """
    root = Path(out_dir)
    m = _read_manifest(root)
    if m.get("format_version") != FORMAT_VERSION:
        raise DataError(
            f"{root}: synthetic cohort format {m.get('format_version')} but this histoviz reads "
            f"{FORMAT_VERSION}; regenerate it"
        )
    missing = [f for f in m.get("files", []) if not (root / f).exists()]
    if missing:
        raise DataError(f"{root}: synthetic cohort is incomplete; missing {missing[:5]}")
    cfg = SyntheticConfig.from_dict(m["config"])
    return _cohort_from_root(root, cfg, list(m["slides"]), list(m["spatial_slides"]))


def _cohort_from_root(
    root: Path, cfg: SyntheticConfig, slide_ids: list[str], spatial: list[str]
) -> SyntheticCohort:
    return SyntheticCohort(
        root=root,
        cohort_csv=root / "cohort.csv",
        slides={s: root / "slides" / f"{s}.tif" for s in slide_ids},
        omics={m: root / "omics" / f"{m}.h5ad" for m in MODALITIES},
        reference=root / "reference_sc.h5ad",
        spatial={s: root / "spatial" / f"{s}.h5ad" for s in spatial},
        config=cfg,
    )
