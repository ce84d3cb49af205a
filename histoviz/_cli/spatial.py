"""``histoviz st-import``: a Space Ranger folder or a HEST-1k file as a histoviz spot file."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add the spatial subcommands."""
    p = sub.add_parser("st-import", help="import a Space Ranger folder (Visium) or a HEST-1k .h5ad as a spot file")
    p.add_argument("source", type=Path, help="Space Ranger output folder (outs/), or a HEST-style .h5ad")
    p.add_argument("--slide", type=Path, default=None,
                   help="full-resolution slide the positions refer to (default: the folder's hi-res image)")
    p.add_argument("--out", required=True, type=Path, help="output .h5ad")
    p.add_argument("--sample-id", default=None, help="sample id (default: the folder name)")
    p.add_argument("--patient-id", default=None, help="patient id (samples of one patient are held out together)")
    p.add_argument("--mpp", type=float, default=None,
                   help="microns per slide pixel when the slide does not record it (default: from the 55 um spot)")
    p.add_argument("--count-file", default="filtered_feature_bc_matrix.h5")
    p.add_argument("--spot-diameter-um", type=float, default=None,
                   help="HEST-style input: spot diameter in um (default: its metadata, else 55)")
    p.set_defaults(func=_st_import)


def _st_import(a: argparse.Namespace) -> int:
    from histoviz.data.spatial import load_spot_sample
    from histoviz.data.st_import import import_hest, import_spaceranger

    if a.source.suffix == ".h5ad":
        out = import_hest(a.source, a.out, slide=a.slide, sample_id=a.sample_id, patient_id=a.patient_id, mpp=a.mpp,
                          spot_diameter_um=a.spot_diameter_um)
    else:
        out = import_spaceranger(a.source, a.out, slide=a.slide, sample_id=a.sample_id, patient_id=a.patient_id,
                                 mpp=a.mpp, count_file=a.count_file)
    s = load_spot_sample(out, in_tissue_only=False)
    w, h = s.slide_dimensions or (0, 0)
    print(f"{s.sample_id}: {len(s)} spots x {len(s.genes)} genes, spot diameter {s.spot_diameter_px:.1f} px, "
          f"{s.mpp:.3f} um/px, slide {s.slide_path} ({w} x {h} px) -> {out}")
    return 0
