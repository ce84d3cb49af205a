"""A deterministic synthetic cohort whose ground truth is known.

The generator draws H&E-like whole-slide images made of a few tissue types (tumour, stroma,
immune infiltrate, normal epithelium, necrosis), each with its own stain colour and nuclear
morphology, and derives every molecular readout from the *same* hidden layout:

- each tissue type holds a fixed mix of cell types (``truth/tissue_to_cell.csv``) at a fixed
  cell density (``truth/tissue_types.csv``);
- each cell type has a true mean expression profile, its prototype
  (``truth/prototypes.csv``, mean counts per cell);
- the expected expression of any region is ``sum_k n_k T_k``, where ``n_k`` is the expected
  number of cells of type ``k`` in the region (:func:`tile_truth`);
- bulk RNA per patient is that sum over all of the patient's tissue, times a library-size
  factor, sampled from a negative binomial (``omics/gene.h5ad`` and the Xena-style
  ``omics/gene.tsv``);
- protein, miRNA and pathway layers are linear read-outs of gene programmes plus noise, with
  some pure-noise targets and some patients missing;
- grade and censored survival depend on the tumour fraction;
- Visium-like spots (55 um spots, 100 um centre spacing) carry counts drawn from their local
  composition;
- an scRNA-style reference samples single cells around the prototypes.

Because the image pixels are rendered from the same layout, the truth is learnable from the
pixels: a tile's mean colour and haematoxylin density already predict its cell-type
composition well (see ``tests/test_synthetic.py``).

Everything is deterministic in ``SyntheticConfig.seed``: the same configuration gives
identical tables and identical pixels. Files are written atomically; a rerun into a complete
folder with the same configuration does nothing, and a different configuration raises
:class:`~histoviz.errors.ConfigError`.

:func:`simulated_labels_for_tiles` is the third data kind of the design: labels simulated
from a measured property (haematoxylin density) of *real* H&E tiles.

Usage::

    from histoviz.data.synthetic import make_synthetic_cohort, tile_truth

    cohort = make_synthetic_cohort("synthetic", n_slides=12, slide_size=(2048, 2048))
    table = cohort.cohort_table()                  # slide_id, patient_id, path, time, event, grade
    bulk = cohort.omics_adata("gene")              # patients x genes, NB counts
    truth = tile_truth(cohort, "S001", coords, 224)  # composition, expression, tissue_fraction

Paths inside files are relative: ``cohort.csv`` paths to the csv's folder, and
``uns["spatial_meta"]["slide_path"]`` of a spot file to that file's folder
(``../slides/<slide_id>.tif``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from histoviz._atomic import atomic_path, atomic_write_text
from histoviz._version import __version__
from histoviz.errors import ConfigError, DataError

if TYPE_CHECKING:  # pragma: no cover
    import anndata
    import pandas as pd

__all__ = [
    "CELL_TYPES",
    "MODALITIES",
    "TISSUE_TYPES",
    "SyntheticCohort",
    "SyntheticConfig",
    "load_synthetic_cohort",
    "make_synthetic_cohort",
    "render_synthetic_slide",
    "simulated_labels_for_tiles",
    "tile_composition",
    "tile_truth",
]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
"""Version of the on-disk layout and of the generative model; bump when either changes."""

TISSUE_TYPES: tuple[str, ...] = ("background", "tumour", "stroma", "immune", "normal", "necrosis")
"""Tissue types of the label maps; index 0 is background (glass)."""

CELL_TYPES: tuple[str, ...] = (
    "tumour",
    "fibroblast",
    "lymphocyte",
    "macrophage",
    "epithelial",
    "endothelial",
)
"""Cell types of the prototypes, the compositions and the scRNA reference."""

MODALITIES: tuple[str, ...] = ("gene", "protein", "mirna", "pathway")
"""Omics layers written under ``omics/``."""

# Cell-type mix of each tissue type (rows: TISSUE_TYPES, columns: CELL_TYPES; rows sum to 1).
_TISSUE_TO_CELL = np.array(
    [
        [0.00, 0.00, 0.00, 0.00, 0.00, 0.00],  # background
        [0.72, 0.10, 0.06, 0.06, 0.02, 0.04],  # tumour
        [0.02, 0.70, 0.08, 0.08, 0.00, 0.12],  # stroma
        [0.02, 0.05, 0.75, 0.12, 0.00, 0.06],  # immune
        [0.00, 0.12, 0.05, 0.05, 0.70, 0.08],  # normal
        [0.25, 0.05, 0.25, 0.40, 0.00, 0.05],  # necrosis
    ]
)
# Nuclei per mm^2 of section, per tissue type.
_CELLS_PER_MM2 = np.array([0.0, 5000.0, 2000.0, 12000.0, 4000.0, 1500.0])
# Colour of cytoplasm / extracellular matrix (no nuclei), RGB, per tissue type.
_TISSUE_RGB = np.array(
    [
        [243, 242, 246],  # background: glass
        [228, 150, 200],  # tumour: eosinophilic purple-pink cytoplasm
        [238, 146, 182],  # stroma: strong eosin pink
        [200, 182, 228],  # immune: bluish lilac
        [244, 204, 220],  # normal: pale pink
        [212, 196, 202],  # necrosis: grey-pink
    ],
    dtype=np.float64,
)
_NUCLEUS_RGB = np.array([55.0, 30.0, 110.0])  # haematoxylin at strength 1 on white
# Nuclear appearance per cell type (+ one "fragment" class used inside necrosis):
# (major diameter um, minor diameter um, size jitter, stain strength, vesicular 0/1)
_NUCLEUS_SHAPE = np.array(
    [
        [12.5, 9.5, 0.25, 0.85, 1.0],  # tumour: large, pleomorphic, vesicular with nucleolus
        [13.0, 3.2, 0.20, 0.80, 0.0],  # fibroblast: spindle
        [6.5, 6.0, 0.08, 1.25, 0.0],  # lymphocyte: small, round, very dark
        [9.0, 6.5, 0.15, 0.55, 0.0],  # macrophage: oval, pale
        [8.0, 6.5, 0.12, 0.60, 0.0],  # epithelial: regular, moderate
        [11.0, 3.0, 0.20, 0.70, 0.0],  # endothelial: flat, elongated
        [3.0, 2.2, 0.40, 0.50, 0.0],  # necrotic fragment
    ]
)
_N_STAMP_VARIANTS = 6
_OD_SCALE = 300.0  # optical density -> uint8 for the bilinear upsampling of stain maps
# Correlation length of the field that places each tissue type, relative to region_scale_um.
_REGION_SCALE_REL = {"tumour": 1.0, "stroma": 1.2, "immune": 0.55, "normal": 1.3, "necrosis": 0.7}

_MARKERS: dict[str, tuple[str, ...]] = {
    "tumour": ("MKI67", "TOP2A", "MYC", "ERBB2", "CCND1"),
    "fibroblast": ("COL1A1", "COL1A2", "DCN", "LUM", "FAP"),
    "lymphocyte": ("PTPRC", "CD3E", "CD2", "MS4A1", "CD8A"),
    "macrophage": ("CD68", "CD163", "LYZ", "C1QA", "CSF1R"),
    "epithelial": ("EPCAM", "KRT8", "KRT18", "CDH1", "KRT5"),
    "endothelial": ("PECAM1", "VWF", "CDH5", "KDR", "ENG"),
}
_MARKER_FOLD = 25.0
# PROGENy's 14 pathway names, each driven by one cell-type programme here (None: pure noise).
_PATHWAYS: tuple[tuple[str, str | None], ...] = (
    ("Androgen", None),
    ("EGFR", "epithelial"),
    ("Estrogen", "epithelial"),
    ("Hypoxia", "tumour"),
    ("JAK-STAT", "lymphocyte"),
    ("MAPK", "tumour"),
    ("NFkB", "macrophage"),
    ("p53", None),
    ("PI3K", "tumour"),
    ("TGFb", "fibroblast"),
    ("TNFa", "macrophage"),
    ("Trail", "lymphocyte"),
    ("VEGF", "endothelial"),
    ("WNT", None),
)
_REFERENCE_PROPORTIONS = np.array([0.25, 0.20, 0.22, 0.13, 0.12, 0.08])
_VISIUM_SPOT_UM = 55.0
_VISIUM_SPACING_UM = 100.0
_BASE_HAZARD = 1.0 / 120.0  # per month at the lowest tumour fraction and grade 1


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
        :func:`histoviz.data.synthetic_artifacts.paint_artifacts`; their truth is stored as
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
        for k, v in {**_ARTIFACT_DEFAULTS, **_GROUP_DEFAULTS}.items():
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
        :data:`histoviz.data.synthetic_artifacts.ARTIFACT_CODES`) and ``faint`` (bool), both
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
# small helpers
# ----------------------------------------------------------------------------------------------
def _rng(seed: int, stream: str, *idx: int) -> np.random.Generator:
    """Independent, reproducible generator per (seed, named stream, indices)."""
    return np.random.default_rng([int(seed), zlib.crc32(stream.encode()), *map(int, idx)])


def _keys_cubic(x: np.ndarray) -> np.ndarray:
    a = -0.5
    x = np.abs(x)
    out = np.zeros_like(x)
    m1 = x <= 1
    m2 = (x > 1) & (x < 2)
    out[m1] = (a + 2) * x[m1] ** 3 - (a + 3) * x[m1] ** 2 + 1
    out[m2] = a * x[m2] ** 3 - 5 * a * x[m2] ** 2 + 8 * a * x[m2] - 4 * a
    return out


def _resample_axis(arr: np.ndarray, axis: int, n_out: int, step: float) -> np.ndarray:
    """Cubic-convolution resampling along one axis (``step`` output samples per input).

    A 4-tap gather instead of a dense matrix product: exact same result on every machine
    (no BLAS threading) and cheap.
    """
    n_in = arr.shape[axis]
    t = (np.arange(n_out) + 0.5) / step - 0.5
    i0 = np.floor(t).astype(np.int64)
    frac = t - i0
    shape = [1] * arr.ndim
    shape[axis] = n_out
    out = np.zeros(arr.shape[:axis] + (n_out,) + arr.shape[axis + 1 :])
    for k in (-1, 0, 1, 2):
        wk = _keys_cubic(frac - k).reshape(shape)
        out += wk * np.take(arr, np.clip(i0 + k, 0, n_in - 1), axis=axis)
    return out


def _smooth_field(
    rng: np.random.Generator, shape: tuple[int, int], cell_px: float, scale_px: float
) -> np.ndarray:
    """Unit-variance Gaussian random field on a grid of ``cell_px``-sized cells.

    White noise on a coarse grid (node spacing ``scale_px / 4``) is Gaussian-smoothed and
    resampled with cubic convolution, so the cost does not grow with ``scale_px``.
    """
    from scipy.ndimage import gaussian_filter

    hl, wl = shape
    step_px = max(scale_px / 4.0, cell_px)
    step = step_px / cell_px  # label cells per coarse node
    sigma = scale_px / step_px
    pad = int(math.ceil(3 * sigma)) + 2
    nh = int(math.ceil(hl / step)) + 1
    nw = int(math.ceil(wl / step)) + 1
    noise = rng.standard_normal((nh + 2 * pad, nw + 2 * pad))
    sm = gaussian_filter(noise, sigma, mode="wrap")
    sm /= max(float(sm.std()), 1e-12)
    sm = sm[pad : pad + nh, pad : pad + nw]
    return _resample_axis(_resample_axis(sm, 0, hl, step), 1, wl, step)


def _resize_float(img: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a 2-D float32 array with PIL."""
    from PIL import Image

    return np.array(
        Image.fromarray(np.ascontiguousarray(img, dtype=np.float32)).resize(
            size_wh, Image.Resampling.BILINEAR
        )
    )


def _resize_u8(img: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a uint8 (h, w) or (h, w, 3) array with PIL."""
    from PIL import Image

    return np.asarray(
        Image.fromarray(np.ascontiguousarray(img)).resize(size_wh, Image.Resampling.BILINEAR)
    )


def _nucleus_stamp(
    rng: np.random.Generator, shape_row: np.ndarray, mpp: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One nucleus stamp: (dy, dx, value) of its non-zero pixels."""
    major_um, minor_um, jitter, strength, vesicular = shape_row
    s = math.exp(rng.normal(0.0, jitter))
    a = max(major_um * s / mpp / 2.0, 0.7)
    b = max(minor_um * s * math.exp(rng.normal(0.0, jitter / 2)) / mpp / 2.0, 0.7)
    th = rng.uniform(0, math.pi)
    r = int(math.ceil(max(a, b))) + 1
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1].astype(np.float64)
    xr = xx * math.cos(th) + yy * math.sin(th)
    yr = -xx * math.sin(th) + yy * math.cos(th)
    rho = np.sqrt((xr / a) ** 2 + (yr / b) ** 2)
    val = np.clip((1.0 - rho) * min(a, b) + 0.5, 0.0, 1.0)
    val *= 0.75 + 0.25 * rng.random(val.shape)  # chromatin texture
    if vesicular:  # pale centre, dark rim, one nucleolus
        val *= 0.45 + 0.55 * np.clip(rho, 0.0, 1.0) ** 2
        cy, cx = rng.uniform(-0.3, 0.3, 2) * min(a, b)
        val = np.maximum(val, 1.1 * (np.hypot(xr - cx, yr - cy) < max(1.0, 0.22 * min(a, b))))
    val *= strength
    keep = val > 0.02
    return yy[keep].astype(np.int64), xx[keep].astype(np.int64), val[keep].astype(np.float32)


# ----------------------------------------------------------------------------------------------
# slide rendering
# ----------------------------------------------------------------------------------------------
def _layout(
    rng: np.random.Generator,
    shape: tuple[int, int],
    cell_px: int,
    mpp: float,
    tissue_fraction: float,
    tumour_fraction: float,
    type_bias: np.ndarray,
    region_scale_um: float,
) -> np.ndarray:
    """Tissue-type label map on a grid of ``cell_px`` level-0 pixels."""
    hl, wl = shape
    # --- tissue versus glass: a few elliptical blobs with a noisy outline -----------------------
    yy = (np.arange(hl)[:, None] + 0.5) / max(hl, wl)
    xx = (np.arange(wl)[None, :] + 0.5) / max(hl, wl)
    cy0, cx0 = hl / max(hl, wl) / 2, wl / max(hl, wl) / 2
    span_y, span_x = hl / max(hl, wl), wl / max(hl, wl)
    blobs = np.zeros((hl, wl))
    for _ in range(int(rng.integers(1, 4))):
        cy = cy0 + rng.uniform(-0.22, 0.22) * span_y
        cx = cx0 + rng.uniform(-0.22, 0.22) * span_x
        sa = rng.uniform(0.16, 0.30) * min(span_x, span_y) * 1.3
        sb = sa * rng.uniform(0.55, 1.0)
        th = rng.uniform(0, math.pi)
        dx, dy = xx - cx, yy - cy
        u = dx * math.cos(th) + dy * math.sin(th)
        v = -dx * math.sin(th) + dy * math.cos(th)
        blobs = np.maximum(blobs, np.exp(-0.5 * ((u / sa) ** 2 + (v / sb) ** 2)))
    outline = _smooth_field(rng, shape, cell_px, 1.6 * region_scale_um / mpp)
    # rounded-square window keeps tissue off the slide edges without straight cuts
    ry = np.abs(2.0 * yy / span_y - 1.0)
    rx = np.abs(2.0 * xx / span_x - 1.0)
    win = np.clip((1.0 - (rx**4 + ry**4) ** 0.25) / 0.15, 0.0, 1.0)
    tissue_field = blobs * win + 0.22 * outline - 3.0 * (1.0 - win)
    thr = np.quantile(tissue_field, 1.0 - tissue_fraction)
    tissue = tissue_field > thr

    # --- tissue types ------------------------------------------------------------------------
    scale_px = region_scale_um / mpp
    f = {
        name: _smooth_field(rng, shape, cell_px, rel * scale_px)
        for name, rel in _REGION_SCALE_REL.items()
    }
    f["necrosis"] = 0.6 * f["tumour"] + 0.8 * f["necrosis"]  # necrosis sits by the tumour
    others = np.stack([f[n] for n in ("stroma", "immune", "normal", "necrosis")]) + np.asarray(
        type_bias, dtype=np.float64
    ).reshape(4, 1, 1)
    other_label = (np.argmax(others, axis=0) + 2).astype(np.uint8)
    labels = np.where(tissue, other_label, 0).astype(np.uint8)
    if tumour_fraction > 0 and tissue.any():
        d = f["tumour"] - others.max(axis=0)
        cut = np.quantile(d[tissue], 1.0 - tumour_fraction)
        labels[tissue & (d >= cut)] = 1
    return labels


def render_synthetic_slide(
    rng: np.random.Generator,
    size: tuple[int, int],
    mpp: float = 0.5,
    *,
    tissue_fraction: float | None = None,
    tumour_fraction: float | None = None,
    type_bias: Sequence[float] | None = None,
    region_scale_um: float = 120.0,
    label_downsample: int = 4,
) -> tuple[np.ndarray, np.ndarray]:
    """Render one synthetic H&E slide and its tissue-type label map.

    Parameters
    ----------
    rng
        Random generator; the output is a pure function of its state and the arguments.
    size
        Level-0 ``(width, height)`` in pixels.
    mpp
        Microns per pixel; nuclear sizes and region scales are physical, so they scale with it.
    tissue_fraction
        Fraction of the image covered by tissue (default: uniform in 0.4-0.7).
    tumour_fraction
        Fraction of the tissue that is tumour (default: uniform in 0.05-0.75); met exactly on
        the label map.
    type_bias
        Log-odds offsets of stroma, immune, normal and necrosis (default: random).
    region_scale_um
        Correlation length of the tissue-type fields, in microns.
    label_downsample
        Cell size of the label grid in level-0 pixels.

    Returns
    -------
    rgb
        ``(height, width, 3)`` uint8 image.
    labels
        ``(ceil(height / label_downsample), ceil(width / label_downsample))`` uint8 map of
        indices into :data:`TISSUE_TYPES`; the image is rendered from exactly this map.
    """
    w, h = int(size[0]), int(size[1])
    ds = int(label_downsample)
    if w < 1 or h < 1 or ds < 1 or not mpp > 0:
        raise ConfigError(f"render_synthetic_slide: bad size {size}, mpp {mpp} or downsample {ds}")
    for name, val, lo_ok in (
        ("tissue_fraction", tissue_fraction, False),
        ("tumour_fraction", tumour_fraction, True),
    ):
        if val is not None and not ((0.0 <= val < 1.0) if lo_ok else (0.0 < val <= 1.0)):
            raise ConfigError(f"render_synthetic_slide: {name}={val} is outside [0, 1]")
    hl, wl = -(-h // ds), -(-w // ds)
    if tissue_fraction is None:
        tissue_fraction = float(rng.uniform(0.4, 0.7))
    if tumour_fraction is None:
        tumour_fraction = float(rng.uniform(0.05, 0.75))
    if type_bias is None:
        type_bias = np.array([0.3, -0.2, 0.0, -0.8 + 1.2 * tumour_fraction]) + rng.normal(0, 0.4, 4)
    labels = _layout(
        rng,
        (hl, wl),
        ds,
        mpp,
        tissue_fraction,
        tumour_fraction,
        np.asarray(type_bias),
        region_scale_um,
    )
    rgb = _paint(rng, labels, ds, (w, h), mpp)
    return rgb, labels


def _paint(
    rng: np.random.Generator, labels: np.ndarray, ds: int, size: tuple[int, int], mpp: float
) -> np.ndarray:
    """Paint an H&E-like RGB image from a label map (optical densities add, Beer-Lambert)."""
    w, h = size
    hl, wl = labels.shape
    wp, hp = wl * ds, hl * ds
    # per-slide stain variation, tissue only
    stain = np.exp(rng.normal(0.0, 0.04, 3))
    od_tissue = -np.log(_TISSUE_RGB / 255.0)
    od_tissue[1:] *= stain
    od_nuc = -np.log(_NUCLEUS_RGB / 255.0) * np.exp(rng.normal(0.0, 0.04, 3))
    wobble = 1.0 + 0.08 * _smooth_field(rng, (hl, wl), ds, 80.0 / mpp)
    tissue = labels > 0

    # stamps first (fixed number of draws), then nuclei positions
    shape_rows = _NUCLEUS_SHAPE
    stamps = [
        [_nucleus_stamp(rng, shape_rows[a], mpp) for _ in range(_N_STAMP_VARIANTS)]
        for a in range(len(shape_rows))
    ]
    pad = max(int(np.abs(s[0]).max(initial=0)) for row in stamps for s in row)
    pad = max(pad, max(int(np.abs(s[1]).max(initial=0)) for row in stamps for s in row)) + 1

    dens_px = _CELLS_PER_MM2 * (mpp / 1000.0) ** 2
    lam = dens_px[labels] * (ds * ds)
    counts = rng.poisson(lam).ravel()
    cell_idx = np.repeat(np.arange(hl * wl), counts)
    n = cell_idx.size
    ys = (cell_idx // wl + rng.random(n)) * ds
    xs = (cell_idx % wl + rng.random(n)) * ds
    tis = labels.ravel()[cell_idx]
    cum = np.cumsum(_TISSUE_TO_CELL, axis=1)
    ctype = np.minimum((rng.random(n)[:, None] >= cum[tis]).sum(axis=1), len(CELL_TYPES) - 1)
    appearance = np.where(tis == TISSUE_TYPES.index("necrosis"), len(CELL_TYPES), ctype)
    variant = rng.integers(0, _N_STAMP_VARIANTS, n)
    intensity = np.exp(rng.normal(0.0, 0.12, n)).astype(np.float32)
    inside = (xs < w) & (ys < h)

    hmap = np.zeros((h + 2 * pad, w + 2 * pad), dtype=np.float32)
    flat = hmap.reshape(-1)
    stride = w + 2 * pad
    base = (ys.astype(np.int64) + pad) * stride + (xs.astype(np.int64) + pad)
    for a in range(len(shape_rows)):
        for v in range(_N_STAMP_VARIANTS):
            sel = np.flatnonzero(inside & (appearance == a) & (variant == v))
            if sel.size == 0:
                continue
            dy, dx, val = stamps[a][v]
            idx = base[sel, None] + (dy * stride + dx)[None, :]
            vals = intensity[sel, None] * val[None, :]
            cur = flat[idx]
            np.maximum(cur, vals, out=cur)
            flat[idx] = cur
    hmap = hmap[pad : pad + h, pad : pad + w]

    # texture: fine grain everywhere; wavy collagen fibres in stroma
    grain = rng.random((h, w), dtype=np.float32)
    grain -= 0.5
    grain *= 0.3
    grain += 1.0
    theta = rng.uniform(0, math.pi)
    warp_low = _smooth_field(rng, (hl, wl), ds, 30.0 / mpp)
    stroma_low = labels == TISSUE_TYPES.index("stroma")
    if stroma_low.any():
        stroma_w = _resize_u8(stroma_low.astype(np.uint8) * 255, (wp, hp))[:h, :w]
        warp = _resize_float((25.0 * warp_low).astype(np.float32), (wp, hp))[:h, :w]
        k = 2 * math.pi * mpp / 7.0  # fibre period 7 um
        warp += np.arange(w, dtype=np.float32)[None, :] * np.float32(k * math.cos(theta))
        warp += np.arange(h, dtype=np.float32)[:, None] * np.float32(k * math.sin(theta))
        fib = np.sin(warp, out=warp)
        fib *= stroma_w
        fib *= np.float32(0.2 / 255.0)
        grain += fib

    # stain optical densities: low-resolution map upsampled bilinearly (soft region borders)
    od_low = od_tissue[labels] * np.where(tissue, wobble, 1.0)[..., None]
    od_full = _resize_u8(np.clip(od_low * _OD_SCALE + 0.5, 0, 255).astype(np.uint8), (wp, hp))
    od_full = od_full[:h, :w]
    out = np.empty((h, w, 3), dtype=np.uint8)
    for c in range(3):
        od = od_full[..., c].astype(np.float32)
        od *= np.float32(1.0 / _OD_SCALE)
        od *= grain
        od += hmap * np.float32(od_nuc[c])
        np.negative(od, out=od)
        np.exp(od, out=od)
        od *= 255.0
        od += 0.5
        out[..., c] = od.astype(np.uint8)
    return out


def _pyramid(rgb: np.ndarray) -> list[np.ndarray]:
    """Level 0 plus 2x box-downsampled levels while the longest side stays >= 512."""
    levels = [rgb]
    cur = rgb
    while True:
        h, w = cur.shape[:2]
        nh, nw = -(-h // 2), -(-w // 2)
        if max(nh, nw) < 512:
            break
        ph, pw = nh * 2 - h, nw * 2 - w
        src = np.pad(cur, ((0, ph), (0, pw), (0, 0)), mode="edge") if (ph or pw) else cur
        acc = src[0::2, 0::2].astype(np.uint16)
        acc += src[1::2, 0::2]
        acc += src[0::2, 1::2]
        acc += src[1::2, 1::2]
        acc += 2
        acc >>= 2
        cur = acc.astype(np.uint8)
        levels.append(cur)
    return levels


def _write_pyramid_tiff(path: Path, rgb: np.ndarray, mpp: float, quality: int) -> None:
    import tifffile

    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp) as tw:
        for i, lvl in enumerate(_pyramid(rgb)):
            tw.write(
                lvl,
                tile=(256, 256),
                compression="jpeg",
                compressionargs={"level": int(quality)},
                photometric="rgb",
                subfiletype=1 if i else 0,
                resolution=(1e4 / (mpp * 2**i), 1e4 / (mpp * 2**i)),
                resolutionunit="CENTIMETER",
                metadata=None,
            )


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


# ----------------------------------------------------------------------------------------------
# genes and prototypes
# ----------------------------------------------------------------------------------------------
@dataclass
class _GeneModel:
    names: list[str]
    signal: np.ndarray  # (G,) bool
    marker_of: list[str]  # "" for non-markers
    prototypes: np.ndarray  # (C, G) mean counts per cell
    top_genes: dict[str, np.ndarray]  # most specific signal genes per cell type


def _gene_model(cfg: SyntheticConfig) -> _GeneModel:
    rng = _rng(cfg.seed, "genes")
    n_c, n_g = len(CELL_TYPES), cfg.n_genes
    n_noise = int(round(cfg.noise_gene_fraction * n_g))
    n_noise = min(n_noise, n_g - n_c)
    marker_order = [
        (_MARKERS[ct][i], ct)
        for i in range(len(next(iter(_MARKERS.values()))))
        for ct in CELL_TYPES
    ]
    n_mark = min(len(marker_order), n_g - n_noise)
    names = [m for m, _ in marker_order[:n_mark]]
    marker_of = [ct for _, ct in marker_order[:n_mark]]
    names += [f"G{j:04d}" for j in range(1, n_g - n_mark + 1)]
    marker_of += [""] * (n_g - n_mark)
    signal = np.ones(n_g, dtype=bool)
    rest = np.arange(n_mark, n_g)
    noise_idx = np.sort(rng.choice(rest, size=n_noise, replace=False)) if n_noise else rest[:0]
    signal[noise_idx] = False

    base = np.exp(rng.normal(0.0, 0.9, n_g))  # mean counts per cell
    proto = base[None, :] * np.exp(rng.normal(0.0, 1.0, (n_c, n_g)))
    for g in range(n_mark):
        proto[:, g] = base[g] * np.exp(rng.normal(0.0, 0.3, n_c))
        proto[CELL_TYPES.index(marker_of[g]), g] *= _MARKER_FOLD
    proto[:, ~signal] = base[None, ~signal]
    proto = np.round(proto, 6)

    logp = np.log(proto)
    top: dict[str, np.ndarray] = {}
    for c, ct in enumerate(CELL_TYPES):
        spec = logp[c] - np.log(np.delete(proto, c, axis=0).mean(axis=0))
        spec[~signal] = -np.inf
        top[ct] = np.argsort(-spec, kind="stable")[:8]
    return _GeneModel(names, signal, marker_of, proto, top)


# ----------------------------------------------------------------------------------------------
# one slide: render, write TIFF + truth (+ spots)
# ----------------------------------------------------------------------------------------------
@dataclass
class _SlidePlan:
    index: int
    slide_id: str
    patient_id: str
    tissue_fraction: float
    tumour_fraction: float
    type_bias: np.ndarray
    spatial: bool


def _truth_dict(cfg: SyntheticConfig, genes: _GeneModel, labels: np.ndarray, tf: float) -> dict:
    return {
        "labels": labels,
        "downsample": np.int64(cfg.label_downsample),
        "slide_size": np.asarray(cfg.slide_size, dtype=np.int64),
        "mpp": np.float64(cfg.mpp),
        "tissue_types": np.asarray(TISSUE_TYPES),
        "cell_types": np.asarray(CELL_TYPES),
        "gene_names": np.asarray(genes.names),
        "tissue_to_cell": _TISSUE_TO_CELL.copy(),
        "cells_per_px2": _CELLS_PER_MM2 * (cfg.mpp / 1000.0) ** 2,
        "prototypes": genes.prototypes,
        "tumour_fraction_target": np.float64(tf),
    }


def _spot_lattice(cfg: SyntheticConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Hexagonal lattice of spot centres (level-0 px) with the whole spot inside the slide."""
    w, h = cfg.slide_size
    spacing = _VISIUM_SPACING_UM / cfg.mpp
    radius = _VISIUM_SPOT_UM / cfg.mpp / 2.0
    dy = spacing * math.sqrt(3) / 2
    ox, oy = rng.uniform(0, spacing / 2), rng.uniform(0, dy)
    rows = np.arange(int((h - 2 * radius - oy) // dy) + 1)
    cols = np.arange(int((w - 2 * radius - ox) // spacing) + 2)
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    x = radius + ox + cc * spacing + (rr % 2) * spacing / 2
    y = radius + oy + rr * dy
    ok = (x + radius <= w) & (y + radius <= h)
    centres = np.stack([x[ok], y[ok]], axis=1)
    grid = np.stack([rr[ok], 2 * cc[ok] + (rr[ok] % 2)], axis=1)  # Visium-style array_row/col
    return centres, grid


def _disk_means(truth: Mapping[str, Any], centres: np.ndarray, radius: float) -> np.ndarray:
    """Mean of the per-cell channels over disks (Vogel-spiral point sampling)."""
    ch = _cell_channels(truth)
    ds = int(truth["downsample"])
    m = 400
    k = np.arange(m) + 0.5
    r = radius * np.sqrt(k / m)
    ang = k * math.pi * (3 - math.sqrt(5))
    px = centres[:, 0, None] + r * np.cos(ang)
    py = centres[:, 1, None] + r * np.sin(ang)
    j = np.clip((px // ds).astype(np.int64), 0, ch.shape[1] - 1)
    i = np.clip((py // ds).astype(np.int64), 0, ch.shape[0] - 1)
    return ch[i, j].mean(axis=1) / float(ds * ds)  # per level-0 px^2


def _nb(rng: np.random.Generator, mu: np.ndarray, theta: float | np.ndarray) -> np.ndarray:
    """Negative-binomial counts with mean ``mu`` and inverse dispersion ``theta`` (inf: Poisson)."""
    theta = np.broadcast_to(np.asarray(theta, dtype=np.float64), mu.shape)
    finite = np.isfinite(theta)
    lam = mu.copy()
    if finite.any():
        g = rng.gamma(np.where(finite, theta, 1.0), 1.0 / np.where(finite, theta, 1.0))
        lam = np.where(finite, mu * g, mu)
    return rng.poisson(lam).astype(np.float64)


def _theta(cfg: SyntheticConfig) -> float:
    return 1.0 / cfg.noise**2 if cfg.noise > 0 else math.inf


def _make_slide(
    root: Path, cfg: SyntheticConfig, genes: _GeneModel, plan: _SlidePlan
) -> dict[str, Any]:
    rng = _rng(cfg.seed, "slide", plan.index)
    rgb, labels = render_synthetic_slide(
        rng,
        cfg.slide_size,
        cfg.mpp,
        tissue_fraction=plan.tissue_fraction,
        tumour_fraction=plan.tumour_fraction,
        type_bias=plan.type_bias,
        region_scale_um=cfg.region_scale_um,
        label_downsample=cfg.label_downsample,
    )
    art = None
    if cfg.has_artifacts:
        from histoviz.data.synthetic_artifacts import paint_artifacts

        rgb, art = paint_artifacts(
            _rng(cfg.seed, "artifacts", plan.index), rgb, labels, cfg.label_downsample, cfg.mpp,
            pen_marks=cfg.pen_marks, debris=cfg.debris, bubbles=cfg.bubbles,
            faint_fraction=cfg.faint_fraction,
        )
    _write_pyramid_tiff(root / "slides" / f"{plan.slide_id}.tif", rgb, cfg.mpp, cfg.jpeg_quality)
    truth = _truth_dict(cfg, genes, labels, plan.tumour_fraction)
    if art is not None:
        truth.update(artifact=art.artifact, faint=art.faint)
    totals = _slide_totals(truth)
    k = len(CELL_TYPES)
    summary = {
        "cells": totals[:k],
        "tissue_area_px": float(totals[k]),
        "tumour_area_px": float(totals[k + 1]),
        "n_spots": 0,
    }
    if plan.spatial:
        srng = _rng(cfg.seed, "spots", plan.index)
        centres, grid = _spot_lattice(cfg, srng)
        radius = _VISIUM_SPOT_UM / cfg.mpp / 2.0
        means = _disk_means(truth, centres, radius)
        area = math.pi * radius**2
        spot_cells = means[:, :k] * area
        spot_tissue = means[:, k]
        n_cells = spot_cells.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            comp = np.where(n_cells[:, None] > 0, spot_cells / n_cells[:, None], 0.0)
        expr = spot_cells @ genes.prototypes
        ambient = 0.5 * genes.prototypes.mean(axis=0)
        size_factor = np.exp(srng.normal(0.0, 0.25, len(centres)))
        counts = _nb(srng, (expr + ambient[None, :]) * size_factor[:, None], _theta(cfg))
        truth.update(
            spot_centres=centres,
            spot_composition=comp,
            spot_n_cells=n_cells,
            spot_expression=expr,
            spot_tissue_fraction=spot_tissue,
        )
        _write_spatial(root, cfg, genes, plan.slide_id, rgb, centres, grid, spot_tissue, counts,
                       patient_id=plan.patient_id)
        summary["n_spots"] = int(len(centres))
    with atomic_path(root / "truth" / f"{plan.slide_id}.npz") as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **truth)
    return summary


def _write_spatial(
    root: Path,
    cfg: SyntheticConfig,
    genes: _GeneModel,
    slide_id: str,
    rgb: np.ndarray,
    centres: np.ndarray,
    grid: np.ndarray,
    spot_tissue: np.ndarray,
    counts: np.ndarray,
    *,
    patient_id: str = "",
) -> None:
    import anndata
    import pandas as pd

    obs = pd.DataFrame(
        {
            "in_tissue": (spot_tissue >= 0.25).astype(np.int64),
            "array_row": grid[:, 0].astype(np.int64),
            "array_col": grid[:, 1].astype(np.int64),
        },
        index=pd.Index([f"{slide_id}_spot{i:04d}" for i in range(len(centres))], name="spot"),
    )
    var = pd.DataFrame({"signal": genes.signal}, index=pd.Index(genes.names, name="gene"))
    step = max(1, int(math.ceil(max(rgb.shape[:2]) / 600)))
    lowres = np.ascontiguousarray(rgb[::step, ::step])
    diameter = _VISIUM_SPOT_UM / cfg.mpp
    adata = anndata.AnnData(X=counts.astype(np.float32), obs=obs, var=var)
    adata.obsm["spatial"] = centres.astype(np.float64)
    adata.uns["spatial_meta"] = {
        "slide_id": slide_id,
        "sample_id": slide_id,
        "patient_id": patient_id or slide_id,
        "slide_path": f"../slides/{slide_id}.tif",
        "spot_diameter_px": float(diameter),
        "spot_spacing_px": float(_VISIUM_SPACING_UM / cfg.mpp),
        "mpp": float(cfg.mpp),
    }
    adata.uns["spatial"] = {
        slide_id: {
            "images": {"lowres": lowres},
            "scalefactors": {
                "tissue_lowres_scalef": 1.0 / step,
                "spot_diameter_fullres": float(diameter),
            },
            "metadata": {"source": "histoviz.data.synthetic"},
        }
    }
    with atomic_path(root / "spatial" / f"{slide_id}.h5ad") as tmp:
        adata.write_h5ad(tmp)


# ----------------------------------------------------------------------------------------------
# cohort-level tables
# ----------------------------------------------------------------------------------------------
def _plan(cfg: SyntheticConfig) -> tuple[list[_SlidePlan], list[str], dict[str, list[int]]]:
    rng = _rng(cfg.seed, "plan")
    n_p = cfg.n_patients
    pids = [f"P{i + 1:03d}" for i in range(n_p)]
    two = set(rng.choice(n_p, size=cfg.n_multi_slide_patients, replace=False).tolist())
    lo, hi = cfg.tumour_fraction_range
    tlo, thi = cfg.tissue_fraction_range
    plans: list[_SlidePlan] = []
    by_patient: dict[str, list[int]] = {}
    for p, pid in enumerate(pids):
        prng = _rng(cfg.seed, "patient", p)
        tf = float(prng.uniform(lo, hi))
        bias = np.array([0.3, -0.2, 0.0, -0.8 + 1.2 * tf]) + prng.normal(0, 0.8, 4)
        for _ in range(2 if p in two else 1):
            i = len(plans)
            srng = _rng(cfg.seed, "slide-plan", i)
            plans.append(
                _SlidePlan(
                    index=i,
                    slide_id=f"S{i + 1:03d}",
                    patient_id=pid,
                    tissue_fraction=float(srng.uniform(tlo, thi)),
                    tumour_fraction=float(np.clip(tf + srng.normal(0, 0.03), 0.0, 0.95)),
                    type_bias=bias + srng.normal(0, 0.1, 4),
                    spatial=False,
                )
            )
            by_patient.setdefault(pid, []).append(i)
    n_sp = int(round(cfg.spatial_fraction * len(plans)))
    if cfg.spatial_fraction > 0:
        n_sp = max(n_sp, 1)
    for i in rng.choice(len(plans), size=n_sp, replace=False).tolist():
        plans[i].spatial = True
    return plans, pids, by_patient


def _outcomes(cfg: SyntheticConfig, tumour_fraction: np.ndarray,
              hidden: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Grade and censored survival from the measured tumour fraction (and the hidden factor)."""
    rng = _rng(cfg.seed, "outcomes")
    lo, hi = cfg.tumour_fraction_range
    x = (tumour_fraction - lo) / max(hi - lo, 1e-6)
    h = np.zeros_like(x) if hidden is None else cfg.hidden_factor * np.asarray(hidden, np.float64)
    latent = x + rng.normal(0.0, 0.12, x.shape) + 0.15 * h
    grade = 1 + np.digitize(latent, [0.25, 0.5, 0.75])
    log_h = math.log(_BASE_HAZARD) + 2.5 * x + 0.25 * (grade - 1) + 0.8 * h
    hazard = np.exp(log_h)
    t_event = rng.exponential(1.0 / hazard)
    target = cfg.censoring_fraction
    if target > 0:
        lo_c, hi_c = -20.0, 20.0  # log censoring hazard; mean P(censored) is increasing in it
        for _ in range(200):
            mid = (lo_c + hi_c) / 2
            hc = math.exp(mid)
            if np.mean(hc / (hc + hazard)) < target:
                lo_c = mid
            else:
                hi_c = mid
        t_cens = rng.exponential(1.0 / math.exp((lo_c + hi_c) / 2), x.shape)
    else:
        rng.exponential(1.0, x.shape)
        t_cens = np.full(x.shape, np.inf)
    event = (t_event <= t_cens).astype(np.int64)
    time = np.maximum(np.round(np.minimum(t_event, t_cens), 3), 0.001)
    return {
        "grade": grade.astype(np.int64),
        "grade_latent": latent,
        "log_hazard": log_h,
        "event_time": t_event,
        "censor_time": t_cens,
        "time": time,
        "event": event,
    }


def _gene_groups_and_hidden(
    cfg: SyntheticConfig, genes: _GeneModel, n_p: int
) -> tuple[dict[str, list[str]] | None, np.ndarray | None, np.ndarray | None]:
    """Gene groups, the hidden factor per patient and its multiplier of the bulk means
    (``None``s when the options are off; own random streams, so nothing else changes)."""
    if not cfg.gene_groups:
        return None, None, None
    from histoviz.data.gene_groups import synthetic_gene_groups

    groups = synthetic_gene_groups(genes.names, _rng(cfg.seed, "gene-groups"))
    if cfg.hidden_factor <= 0:
        return groups, None, None
    hrng = _rng(cfg.seed, "hidden")
    hidden = hrng.standard_normal(n_p)
    log_mult = np.zeros((n_p, len(genes.names)))
    pos = {g: j for j, g in enumerate(genes.names)}
    for name, sign in (("Oncogenes", 1.0), ("Tumor Suppressor Genes", -1.0)):
        idx = np.array([pos[g] for g in groups[name]], np.int64)
        w = hrng.uniform(0.5, 1.5, idx.size)
        log_mult[:, idx] += sign * 0.5 * cfg.hidden_factor * hidden[:, None] * w[None, :]
    return groups, hidden, np.exp(log_mult)


def _derived_layers(
    cfg: SyntheticConfig, genes: _GeneModel, mu: np.ndarray
) -> dict[str, tuple[np.ndarray, dict[str, list]]]:
    """Protein, miRNA and pathway values (patients x targets) and their var columns."""
    cpm = mu / mu.sum(axis=1, keepdims=True) * 1e6
    ref = genes.prototypes.mean(axis=0)
    centre = np.log1p(ref / ref.sum() * 1e6)
    z = np.log1p(cpm) - centre[None, :]
    prog = np.stack([z[:, genes.top_genes[ct]].mean(axis=1) for ct in CELL_TYPES], axis=1)
    cell_of_gene = np.argmax(np.log(genes.prototypes), axis=0)
    sig_idx = np.flatnonzero(genes.signal)
    n_p = mu.shape[0]
    noise = cfg.noise
    out: dict[str, tuple[np.ndarray, dict[str, list]]] = {}

    # protein: RPPA-like, centred log scale
    rng = _rng(cfg.seed, "protein")
    n = cfg.n_proteins
    n_sig = min(int(round(0.8 * n)), n)
    vals = np.empty((n_p, n))
    names, signal, source, program = [], [], [], []
    for j in range(n):
        if j < n_sig:
            g = int(sig_idx[j % sig_idx.size])
            c = int(cell_of_gene[g])
            a = rng.uniform(0.6, 1.2)
            vals[:, j] = a * z[:, g] + 0.4 * prog[:, c] + noise * rng.standard_normal(n_p)
            names.append(
                f"{genes.names[g]}_prot" if j < sig_idx.size else f"{genes.names[g]}_prot{j}"
            )
            signal.append(True)
            source.append(genes.names[g])
            program.append(CELL_TYPES[c])
        else:
            vals[:, j] = rng.standard_normal(n_p)
            names.append(f"PROT{j + 1:03d}")
            signal.append(False)
            source.append("")
            program.append("")
    out["protein"] = (
        vals,
        {"name": names, "signal": signal, "source_gene": source, "program": program},
    )

    # miRNA: log2(RPM+1)-like, half of the signal miRNAs anti-correlated with their programme
    rng = _rng(cfg.seed, "mirna")
    n = cfg.n_mirna
    n_sig = min(int(round(0.7 * n)), n)
    vals = np.empty((n_p, n))
    names, signal, program, sign = [], [], [], []
    for j in range(n):
        base = rng.uniform(3.0, 9.0)
        if j < n_sig:
            c = j % len(CELL_TYPES)
            s = -1.0 if (j // len(CELL_TYPES)) % 2 == 0 else 1.0
            a = rng.uniform(0.8, 1.5)
            vals[:, j] = base + s * a * prog[:, c] + noise * rng.standard_normal(n_p)
            signal.append(True)
            program.append(CELL_TYPES[c])
            sign.append(int(s))
        else:
            vals[:, j] = base + 0.8 * rng.standard_normal(n_p)
            signal.append(False)
            program.append("")
            sign.append(0)
        names.append(f"hsa-miR-S{j + 1:03d}")
    out["mirna"] = (
        np.clip(vals, 0.0, None),
        {"name": names, "signal": signal, "program": program, "sign": sign},
    )

    # pathway: programme genes + a few random signal genes
    rng = _rng(cfg.seed, "pathway")
    n = cfg.n_pathways
    vals = np.empty((n_p, n))
    names, signal, program = [], [], []
    for j in range(n):
        if j < len(_PATHWAYS):
            name, ct = _PATHWAYS[j]
        else:
            name = f"PW{j + 1:03d}"
            ct = None if j % 5 == 0 else CELL_TYPES[j % len(CELL_TYPES)]
        if ct is None:
            vals[:, j] = 0.5 * rng.standard_normal(n_p)
        else:
            extra = rng.choice(sig_idx, size=min(3, sig_idx.size), replace=False)
            gidx = np.concatenate([genes.top_genes[ct], extra])
            wts = rng.uniform(0.5, 1.5, gidx.size)
            vals[:, j] = (z[:, gidx] * wts).sum(
                axis=1
            ) / wts.sum() + 0.5 * noise * rng.standard_normal(n_p)
        names.append(name)
        signal.append(ct is not None)
        program.append(ct or "")
    out["pathway"] = (vals, {"name": names, "signal": signal, "program": program})
    return out


def _write_h5ad(path: Path, adata: anndata.AnnData) -> None:
    with atomic_path(path) as tmp:
        adata.write_h5ad(tmp)


def _write_csv(path: Path, df: pd.DataFrame, **kw: Any) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, float_format="%.6g", lineterminator="\n", **kw)


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


def make_synthetic_cohort(
    out_dir: str | os.PathLike,
    config: SyntheticConfig | None = None,
    *,
    progress: bool = False,
    n_jobs: int | None = None,
    **overrides: Any,
) -> SyntheticCohort:
    """Generate a synthetic cohort with ground truth under ``out_dir``.

    Parameters
    ----------
    out_dir
        Output folder (created). If it already holds a complete cohort made with the same
        configuration, nothing is written and that cohort is returned.
    config
        Generator settings (default: ``SyntheticConfig()``).
    progress
        Show a tqdm progress bar over slides.
    n_jobs
        Slides rendered in parallel threads (default: up to 8, one per CPU). The output does
        not depend on it.
    **overrides
        Fields of :class:`SyntheticConfig` replacing those of ``config``, e.g.
        ``n_slides=6, slide_size=(1024, 1024)``.

    Returns
    -------
    The :class:`SyntheticCohort` describing the files.

    Raises
    ------
    ConfigError
        Unknown or invalid settings, or ``out_dir`` holds a cohort made with a different
        configuration.

    Notes
    -----
    Layout::

        cohort.csv                 slide_id, patient_id, path (relative), time, event, grade
        manifest.json              config, names, file list (written last: completion marker)
        slides/<slide_id>.tif      pyramidal JPEG-tiled TIFF (OpenSlide and tifffile)
        omics/gene.h5ad, gene.tsv  bulk counts (patients x genes) and a Xena-style copy
        omics/{protein,mirna,pathway}.h5ad
        reference_sc.h5ad          scRNA-style reference, obs["cell_type"]
        spatial/<slide_id>.h5ad    Visium-like spots (a fraction of slides)
        truth/<slide_id>.npz       label map and constants for tile_truth
        truth/prototypes.csv, tissue_to_cell.csv, tissue_types.csv, patients.csv
    """
    from concurrent.futures import ThreadPoolExecutor

    import anndata
    import pandas as pd

    cfg = config if config is not None else SyntheticConfig()
    if not isinstance(cfg, SyntheticConfig):
        raise ConfigError(f"config must be a SyntheticConfig, got {type(cfg).__name__}")
    if overrides:
        known = {f.name for f in fields(SyntheticConfig)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigError(f"unknown SyntheticConfig fields {unknown}; known: {sorted(known)}")
        cfg = replace(cfg, **overrides)

    root = Path(out_dir)
    manifest_path = root / "manifest.json"
    if manifest_path.exists():
        existing = _read_manifest(root)
        old = existing.get("config", {})
        new = cfg.to_dict()
        if existing.get("format_version") != FORMAT_VERSION or old != new:
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise ConfigError(
                f"{root}: already holds a synthetic cohort made with a different configuration "
                f"(differs in {diff or ['format_version']}); use an empty folder or delete this one"
            )
        missing = [f for f in existing.get("files", []) if not (root / f).exists()]
        if not missing:
            logger.info("%s: synthetic cohort already complete; nothing to do", root)
            return load_synthetic_cohort(root)
        logger.warning("%s: %d files missing; regenerating the cohort", root, len(missing))
        manifest_path.unlink()

    root.mkdir(parents=True, exist_ok=True)
    for sub in ("slides", "truth", "omics", "spatial"):
        (root / sub).mkdir(exist_ok=True)

    genes = _gene_model(cfg)
    plans, pids, by_patient = _plan(cfg)
    logger.info(
        "generating %d slides (%d patients, %dx%d px) under %s",
        len(plans),
        len(pids),
        cfg.slide_size[0],
        cfg.slide_size[1],
        root,
    )
    workers = n_jobs if n_jobs is not None else min(8, os.cpu_count() or 1)
    workers = max(1, min(int(workers), len(plans)))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(plans), desc="synthetic slides", unit="slide")

    def job(plan: _SlidePlan) -> dict[str, Any]:
        res = _make_slide(root, cfg, genes, plan)
        if bar is not None:
            bar.update(1)
        return res

    try:
        if workers == 1:
            summaries = [job(p) for p in plans]
        else:
            with ThreadPoolExecutor(max_workers=workers) as ex:
                summaries = list(ex.map(job, plans))
    finally:
        if bar is not None:
            bar.close()

    # --- patients: composition, tumour fraction, outcomes -------------------------------------
    n_p = len(pids)
    cells = np.zeros((n_p, len(CELL_TYPES)))
    tissue_px = np.zeros(n_p)
    tumour_px = np.zeros(n_p)
    for p, pid in enumerate(pids):
        for i in by_patient[pid]:
            cells[p] += summaries[i]["cells"]
            tissue_px[p] += summaries[i]["tissue_area_px"]
            tumour_px[p] += summaries[i]["tumour_area_px"]
    tumour_fraction = tumour_px / np.maximum(tissue_px, 1e-9)
    groups, hidden, hidden_mult = _gene_groups_and_hidden(cfg, genes, n_p)
    outcomes = _outcomes(cfg, tumour_fraction, hidden)

    # --- bulk RNA -------------------------------------------------------------------------------
    brng = _rng(cfg.seed, "bulk")
    mu_true = cells @ genes.prototypes
    library = np.exp(brng.normal(0.0, 0.2, n_p))
    patient_noise = np.ones_like(mu_true)
    patient_noise[:, ~genes.signal] = np.exp(
        brng.normal(0.0, 0.7, (n_p, int((~genes.signal).sum())))
    )
    if hidden_mult is not None:
        patient_noise = patient_noise * hidden_mult
    counts = _nb(brng, mu_true * patient_noise * library[:, None], _theta(cfg))
    gene_var = pd.DataFrame(
        {
            "signal": genes.signal,
            "marker_of": pd.Categorical(genes.marker_of),
            "theta": np.full(len(genes.names), _theta(cfg) if cfg.noise > 0 else np.inf),
        },
        index=pd.Index(genes.names, name="gene"),
    )
    obs = pd.DataFrame(index=pd.Index(pids, name="patient_id"))
    gene_ad = anndata.AnnData(X=counts.astype(np.float32), obs=obs.copy(), var=gene_var)
    lib = counts.sum(axis=1, keepdims=True)
    gene_ad.obs["library_size"] = lib[:, 0]
    gene_ad.layers["log1p_cpm"] = np.log1p(counts / np.maximum(lib, 1) * 1e6).astype(np.float32)
    gene_ad.uns["synthetic"] = {"units": "counts", "generator": "histoviz.data.synthetic"}
    _write_h5ad(root / "omics" / "gene.h5ad", gene_ad)
    xena = pd.DataFrame(
        counts.T.astype(np.int64), index=pd.Index(genes.names, name="gene"), columns=pids
    )
    with atomic_path(root / "omics" / "gene.tsv") as tmp:
        xena.to_csv(tmp, sep="\t", lineterminator="\n")

    # --- derived layers -------------------------------------------------------------------------
    present: dict[str, np.ndarray] = {"gene": np.ones(n_p, dtype=bool)}
    n_missing = int(round(cfg.missing_fraction * n_p))
    n_missing = min(n_missing, n_p - 1)
    for mod, (vals, var_cols) in _derived_layers(cfg, genes, mu_true).items():
        mrng = _rng(cfg.seed, "missing", MODALITIES.index(mod))
        keep = np.ones(n_p, dtype=bool)
        if n_missing:
            keep[mrng.choice(n_p, size=n_missing, replace=False)] = False
        present[mod] = keep
        var = pd.DataFrame(
            {k: v for k, v in var_cols.items() if k != "name"},
            index=pd.Index(var_cols["name"], name="target"),
        )
        for col in var.columns:
            if var[col].dtype == object:
                var[col] = pd.Categorical(var[col])
        ad_mod = anndata.AnnData(
            X=vals[keep].astype(np.float32),
            obs=pd.DataFrame(
                index=pd.Index([p for p, k in zip(pids, keep) if k], name="patient_id")
            ),
            var=var,
        )
        _write_h5ad(root / "omics" / f"{mod}.h5ad", ad_mod)

    # --- scRNA reference ------------------------------------------------------------------------
    rrng = _rng(cfg.seed, "reference")
    n_ref = cfg.n_cells_reference
    props = _REFERENCE_PROPORTIONS / _REFERENCE_PROPORTIONS.sum()
    per_type = np.maximum(np.floor(props * n_ref).astype(int), 1)
    per_type[0] += n_ref - per_type.sum()
    ctype = np.repeat(np.arange(len(CELL_TYPES)), per_type)
    batch = rrng.integers(0, 2, n_ref)
    batch_scale = np.exp(rrng.normal(0.0, 0.15, (2, len(genes.names))))
    size_factor = np.exp(rrng.normal(0.0, 0.35, n_ref))
    mu_sc = genes.prototypes[ctype] * batch_scale[batch] * size_factor[:, None]
    sc_counts = _nb(rrng, mu_sc, 3.0).astype(np.float32)
    ref_obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical(
                [CELL_TYPES[c] for c in ctype], categories=list(CELL_TYPES)
            ),
            "batch": pd.Categorical([f"B{b + 1}" for b in batch], categories=["B1", "B2"]),
        },
        index=pd.Index([f"cell{i:05d}" for i in range(n_ref)], name="cell"),
    )
    ref_ad = anndata.AnnData(
        X=sc_counts,
        obs=ref_obs,
        var=pd.DataFrame({"signal": genes.signal}, index=pd.Index(genes.names, name="gene")),
    )
    ref_ad.layers["counts"] = sc_counts.copy()
    _write_h5ad(root / "reference_sc.h5ad", ref_ad)

    # --- truth tables ----------------------------------------------------------------------------
    _write_csv(
        root / "truth" / "prototypes.csv",
        pd.DataFrame(
            genes.prototypes, index=pd.Index(CELL_TYPES, name="cell_type"), columns=genes.names
        ),
    )
    _write_csv(
        root / "truth" / "tissue_to_cell.csv",
        pd.DataFrame(
            _TISSUE_TO_CELL,
            index=pd.Index(TISSUE_TYPES, name="tissue_type"),
            columns=list(CELL_TYPES),
        ),
    )
    _write_csv(
        root / "truth" / "tissue_types.csv",
        pd.DataFrame(
            {
                "cells_per_mm2": _CELLS_PER_MM2,
                "cells_per_px2": _CELLS_PER_MM2 * (cfg.mpp / 1000.0) ** 2,
                "r": _TISSUE_RGB[:, 0].astype(int),
                "g": _TISSUE_RGB[:, 1].astype(int),
                "b": _TISSUE_RGB[:, 2].astype(int),
            },
            index=pd.Index(TISSUE_TYPES, name="tissue_type"),
        ),
    )
    n_cells = cells.sum(axis=1)
    pat = pd.DataFrame(
        {
            "patient_id": pids,
            "n_slides": [len(by_patient[p]) for p in pids],
            "slide_ids": [";".join(plans[i].slide_id for i in by_patient[p]) for p in pids],
            "tumour_fraction": tumour_fraction,
            "tissue_area_mm2": tissue_px * (cfg.mpp / 1000.0) ** 2,
            "n_cells": n_cells,
            **{
                f"frac_{ct}": cells[:, k] / np.maximum(n_cells, 1e-9)
                for k, ct in enumerate(CELL_TYPES)
            },
            "library_factor": library,
            **({"hidden_factor": hidden} if hidden is not None else {}),
            "grade": outcomes["grade"],
            "grade_latent": outcomes["grade_latent"],
            "log_hazard": outcomes["log_hazard"],
            "event_time": outcomes["event_time"],
            "censor_time": outcomes["censor_time"],
            "time": outcomes["time"],
            "event": outcomes["event"],
            **{f"has_{m}": present[m].astype(np.int64) for m in MODALITIES},
        }
    )
    _write_csv(root / "truth" / "patients.csv", pat, index=False)

    # --- cohort table ----------------------------------------------------------------------------
    pidx = {p: k for k, p in enumerate(pids)}
    rows = []
    for plan in plans:
        k = pidx[plan.patient_id]
        rows.append(
            {
                "slide_id": plan.slide_id,
                "patient_id": plan.patient_id,
                "path": f"slides/{plan.slide_id}.tif",
                "time": float(outcomes["time"][k]),
                "event": int(outcomes["event"][k]),
                "grade": int(outcomes["grade"][k]),
            }
        )
    _write_csv(root / "cohort.csv", pd.DataFrame(rows), index=False)

    # --- manifest (last) --------------------------------------------------------------------------
    slide_ids = [p.slide_id for p in plans]
    spatial_ids = [p.slide_id for p in plans if p.spatial]
    files = (
        ["cohort.csv", "reference_sc.h5ad", "omics/gene.tsv"]
        + [f"omics/{m}.h5ad" for m in MODALITIES]
        + [f"slides/{s}.tif" for s in slide_ids]
        + [f"truth/{s}.npz" for s in slide_ids]
        + [f"spatial/{s}.h5ad" for s in spatial_ids]
        + [f"truth/{n}.csv" for n in ("prototypes", "tissue_to_cell", "tissue_types", "patients")]
        + (["gene_groups.csv"] if groups is not None else [])
    )
    if groups is not None:
        from histoviz.data.gene_groups import write_gene_groups

        write_gene_groups(groups, root / "gene_groups.csv")
    manifest = {
        "generator": "histoviz.data.synthetic",
        "format_version": FORMAT_VERSION,
        "histoviz_version": __version__,
        "seed": cfg.seed,
        "config": cfg.to_dict(),
        "tissue_types": list(TISSUE_TYPES),
        "cell_types": list(CELL_TYPES),
        "modalities": list(MODALITIES),
        "genes": genes.names,
        "slides": slide_ids,
        "patients": pids,
        "spatial_slides": spatial_ids,
        "files": sorted(files),
    }
    atomic_write_text(manifest_path, json.dumps(manifest, indent=1) + "\n")
    logger.info("synthetic cohort written to %s", root)
    return _cohort_from_root(root, cfg, slide_ids, spatial_ids)


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


# ----------------------------------------------------------------------------------------------
# data kind 3: real tiles, simulated labels
# ----------------------------------------------------------------------------------------------
def simulated_labels_for_tiles(
    tiles_rgb: np.ndarray,
    n_genes: int = 20,
    seed: int = 0,
    *,
    noise: float = 0.5,
    noise_gene_fraction: float = 0.25,
) -> tuple[np.ndarray, np.ndarray]:
    """Simulate expression labels that follow the haematoxylin density of real H&E tiles.

    Each tile's haematoxylin density is the mean positive haematoxylin channel of
    :func:`skimage.color.rgb2hed`. Signal genes are monotone functions of it (linear,
    softplus or tanh, with either sign) plus Gaussian noise; the last
    ``round(noise_gene_fraction * n_genes)`` genes are pure noise. The density is standardised
    over the tiles passed, so call it once with all tiles of a data set.

    Parameters
    ----------
    tiles_rgb
        ``(N, h, w, 3)`` uint8 tiles.
    n_genes
        Number of simulated genes.
    seed
        Seed of the gene functions and the noise.
    noise
        Standard deviation of the noise relative to the unit-variance signal.
    noise_gene_fraction
        Fraction of pure-noise genes (placed last).

    Returns
    -------
    labels
        ``(N, n_genes)`` float32.
    hematoxylin_density
        ``(N,)`` float32 raw (unstandardised) density.
    """
    from skimage.color import rgb2hed

    tiles = np.asarray(tiles_rgb)
    if tiles.ndim != 4 or tiles.shape[-1] != 3:
        raise DataError(f"tiles_rgb must be (N, h, w, 3) RGB; got shape {tiles.shape}")
    if tiles.dtype != np.uint8:
        raise DataError(f"tiles_rgb must be uint8; got {tiles.dtype}")
    if n_genes < 1:
        raise ConfigError(f"n_genes must be >= 1, got {n_genes}")
    n = tiles.shape[0]
    if n == 0:
        return np.zeros((0, n_genes), np.float32), np.zeros(0, np.float32)
    hd = np.empty(n, dtype=np.float64)
    for i in range(n):
        hd[i] = np.clip(rgb2hed(tiles[i])[..., 0], 0.0, None).mean()
    sd = hd.std()
    zs = (hd - hd.mean()) / sd if sd > 0 else np.zeros_like(hd)
    rng = _rng(seed, "tile-labels")
    n_noise = min(int(round(noise_gene_fraction * n_genes)), n_genes)
    labels = np.empty((n, n_genes), dtype=np.float64)
    for g in range(n_genes):
        sign = 1.0 if rng.random() < 0.7 else -1.0
        offset = rng.uniform(1.0, 4.0)
        kind = g % 3
        eps = rng.standard_normal(n)
        if g >= n_genes - n_noise:
            labels[:, g] = offset + eps
            continue
        if kind == 0:
            f = zs
        elif kind == 1:
            f = np.logaddexp(0.0, 2.0 * zs) - np.log(2.0)
        else:
            f = np.tanh(zs)
        f_sd = f.std()
        f = (f - f.mean()) / f_sd if f_sd > 0 else f * 0
        labels[:, g] = offset + sign * f + noise * eps
    return labels.astype(np.float32), hd.astype(np.float32)
