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

The package's modules: :mod:`~histoviz.data.synthetic.render` (tissue and stain model,
rendering), :mod:`~histoviz.data.synthetic.slide` (gene model, one slide, spots),
:mod:`~histoviz.data.synthetic.cohort` (configuration, cohort handle, truth arithmetic),
:mod:`~histoviz.data.synthetic.artifacts` (pen marks, debris, bubbles) and
:mod:`~histoviz.data.synthetic.generate` (writing a cohort). Import from the package.

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

from histoviz.data.synthetic.cohort import (
    SyntheticCohort,
    SyntheticConfig,
    load_synthetic_cohort,
    tile_composition,
    tile_truth,
)
from histoviz.data.synthetic.generate import make_synthetic_cohort, simulated_labels_for_tiles
from histoviz.data.synthetic.render import (
    CELL_TYPES,
    MODALITIES,
    TISSUE_TYPES,
    render_synthetic_slide,
)
