"""A TCGA-like mini download, laid out the way the GDC client and cBioPortal do, made from a
synthetic cohort (whose truth is known) with fake barcodes.

``make_download(synth_root, out)`` writes::

    out/gdc/<uuid>/TCGA-HV-A0NN-01Z-00-DX1.<UUID>.tif   one folder per file UUID (+ logs/)
    out/gdc/MANIFEST.txt
    out/cbio/data_clinical_patient.txt   '#' header lines, OS_MONTHS / OS_STATUS 1:DECEASED, DFS pair, GRADE
    out/cbio/data_clinical_sample.txt    SAMPLE_ID, PATIENT_ID, SAMPLE_TYPE
    out/cbio/data_rppa.txt               Composite.Element.REF x 15-character samples (NA values)
    out/xena/HiSeqV2.tsv                 genes x 15-character samples (a duplicated symbol, a normal
                                         sample, a sample of a patient without slides)
    out/mirna_samples_x_genes.csv        samples x miRNAs (16-character sample + vial ids)

and returns what an import must find: the extra slides (a normal-tissue sample, a frozen section,
a second diagnostic slide of a patient, a slide whose patient has no clinical row).
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def barcode(patient: str) -> str:
    """``P007`` -> ``TCGA-HV-A007``."""
    return f"TCGA-HV-A{int(patient[1:]):03d}"


def _uuid(i: int) -> str:
    return str(uuid.UUID(int=0x5EED0000 + i))


def make_download(synth_root: Path, out: Path, *, corrupt: bool = False) -> dict[str, Any]:
    """Write the mini download (see the module docstring) and return the expected counts;
    ``corrupt`` adds a truncated ``.svs`` of a patient that has another slide."""
    import anndata as ad

    cohort = pd.read_csv(synth_root / "cohort.csv")
    gdc = out / "gdc"
    gdc.mkdir(parents=True)
    files, n = [], 0
    seen: dict[str, int] = {}

    def put(src: Path, code: str) -> str:
        nonlocal n
        u = _uuid(n)
        n += 1
        d = gdc / u
        (d / "logs").mkdir(parents=True)
        (d / "logs" / f"{code}.parcel").write_text("download log\n")
        name = f"{code}.{u.upper()}.tif"
        shutil.copyfile(src, d / name)
        files.append((u, name))
        return code

    dx: dict[str, str] = {}
    for r in cohort.itertuples(index=False):
        k = seen.get(r.patient_id, 0) + 1
        seen[r.patient_id] = k
        dx[r.slide_id] = put(synth_root / r.path, f"{barcode(r.patient_id)}-01Z-00-DX{k}")
    patients = list(dict.fromkeys(cohort["patient_id"]))
    two = [p for p, k in seen.items() if k > 1]
    first = cohort.iloc[0]
    normal_p, frozen_p, no_clin = patients[1], patients[2], patients[-1]
    slide_of = dict(zip(cohort["patient_id"], cohort["path"]))
    put(synth_root / slide_of[normal_p], f"{barcode(normal_p)}-11Z-00-DX1")   # normal tissue: dropped
    put(synth_root / slide_of[frozen_p], f"{barcode(frozen_p)}-01A-01-TS1")   # frozen section: dropped
    if corrupt:
        one = next(p for p in patients[6:] if seen[p] == 1)
        bad = gdc / _uuid(n) / f"{barcode(one)}-01Z-00-DX9.{_uuid(n).upper()}.svs"
        bad.parent.mkdir()
        bad.write_bytes(b"II*\x00" + bytes(200))                            # a truncated download
        files.append((_uuid(n), bad.name))
    (gdc / "MANIFEST.txt").write_text("id\tfilename\tmd5\tsize\tstate\n"
                                      + "".join(f"{u}\t{f}\t0\t0\treleased\n" for u, f in files))
    # ---- cBioPortal clinical ----
    cb = out / "cbio"
    cb.mkdir()
    per = cohort.drop_duplicates("patient_id").set_index("patient_id")
    grades = {p: f"G{int(g)}" for p, g in per["grade"].items()}
    grades[patients[3]] = f"Grade {int(per.loc[patients[3], 'grade'])}"
    grades[patients[4]] = "GX"                     # cannot be assessed: no grade
    grades[patients[5]] = "High Grade"             # unknown: listed, not guessed
    rows = []
    for p in patients:
        if p == no_clin:
            continue
        t, e = per.loc[p, "time"], int(per.loc[p, "event"])
        rows.append([barcode(p), f"{t:.3f}", "1:DECEASED" if e else "0:LIVING", f"{t * 0.8:.3f}",
                     "1:Recurred/Progressed" if e else "0:DiseaseFree", grades[p]])
    header = ["PATIENT_ID", "OS_MONTHS", "OS_STATUS", "DFS_MONTHS", "DFS_STATUS", "GRADE"]
    meta = ["#Patient Identifier\tOverall Survival (Months)\tOverall Survival Status\tDisease Free (Months)\t"
            "Disease Free Status\tNeoplasm Histologic Grade",
            "#Identifier to uniquely specify a patient.\tOverall survival in months since initial diagnosis.\t"
            "Overall patient survival status.\tDisease free in months.\tDisease free status.\tGrade.",
            "#STRING\tNUMBER\tSTRING\tNUMBER\tSTRING\tSTRING", "#1\t1\t1\t1\t1\t1"]
    (cb / "data_clinical_patient.txt").write_text(
        "\n".join([*meta, "\t".join(header), *("\t".join(r) for r in rows)]) + "\n")
    samp = ["#Patient Identifier\tSample Identifier\tSample Type", "#.\t.\t.", "#STRING\tSTRING\tSTRING", "#1\t1\t1",
            "PATIENT_ID\tSAMPLE_ID\tSAMPLE_TYPE"]
    samp += [f"{barcode(p)}\t{barcode(p)}-01\tPrimary" for p in patients if p != no_clin]
    (cb / "data_clinical_sample.txt").write_text("\n".join(samp) + "\n")
    # ---- omics ----
    gene = ad.read_h5ad(synth_root / "omics" / "gene.h5ad")
    x = pd.DataFrame(np.asarray(gene.X), index=[f"{barcode(p)}-01" for p in gene.obs_names],
                     columns=gene.var_names.astype(str))
    x.loc[f"{barcode(normal_p)}-11"] = x.iloc[1] * 0.5 + 1          # a normal sample: dropped
    x.loc["TCGA-HV-Z999-01"] = x.iloc[0]                               # a patient without slides
    gx = x.T
    dup = gx.iloc[[0]].copy()
    dup.iloc[0] = gx.iloc[0] + 2.0                                     # the first symbol again: collapsed
    gx = pd.concat([gx, dup])
    gx.index.name = "sample"
    (out / "xena").mkdir()
    gx.to_csv(out / "xena" / "HiSeqV2.tsv", sep="\t", float_format="%.0f")
    prot = ad.read_h5ad(synth_root / "omics" / "protein.h5ad")
    rp = pd.DataFrame(np.asarray(prot.X).T, index=[f"{v.split('_')[0]}|{v}" for v in prot.var_names],
                      columns=[f"{barcode(p)}-01" for p in prot.obs_names])
    rp.iloc[0, 0] = np.nan
    rp.index.name = "Composite.Element.REF"
    rp.to_csv(cb / "data_rppa.txt", sep="\t", na_rep="NA", float_format="%.5f")
    mir = ad.read_h5ad(synth_root / "omics" / "mirna.h5ad")
    mx = pd.DataFrame(np.asarray(mir.X), index=[f"{barcode(p)}-01A" for p in mir.obs_names],
                      columns=mir.var_names.astype(str))
    mx.index.name = "sample"
    mx.to_csv(out / "mirna_samples_x_genes.csv", float_format="%.5f")
    n_slides = len(cohort)
    return {
        "found": n_slides + 2 + int(corrupt), "kept": n_slides, "dropped_normal": 1, "dropped_frozen": 1,
        "patients": len(patients), "two_slides": [barcode(p) for p in two], "no_clinical": barcode(no_clin),
        "slides_without_clinical": sorted(dx[s] for s in cohort.loc[cohort["patient_id"] == no_clin, "slide_id"]),
        "gx": barcode(patients[4]), "unknown_grade": barcode(patients[5]),
        "gene_patients": len(gene.obs_names), "protein_patients": len(prot.obs_names),
        "mirna_patients": len(mir.obs_names), "n_genes": gene.n_vars, "first": str(first["slide_id"]),
        "slide_barcode": dx,
    }
