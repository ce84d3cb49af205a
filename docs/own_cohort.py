"""Run the README's "Your own cohort" commands on a TCGA-like mini download and record what they print.

    python docs/own_cohort.py --work /tmp/own_cohort          # then:
    python docs/gen_readme.py --take own_cohort=/tmp/own_cohort/results.json

The download is made the way the GDC client and cBioPortal lay files out (``tests/_tcga_download.py``)
from a synthetic cohort with fake barcodes (the slides are synthetic: the walkthrough shows the path
from downloaded files to predictions, not how the models do on TCGA). Every command is run as a
user would, through the ``histoviz`` command line, from the work folder; its output is stored
verbatim in ``results.json`` for ``docs/renderers/own_cohort.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

COMMANDS = [
    ("import", "histoviz import --slides download/gdc "
               "--clinical download/cbio/data_clinical_patient.txt download/cbio/data_clinical_sample.txt "
               "--omics download/xena/HiSeqV2.tsv download/cbio/data_rppa.txt download/mirna_samples_x_genes.csv "
               "--encoder morphology --out cohort"),
    ("train_omics", "histoviz train cohort/configs/omics.yaml --out runs/omics --no-progress"),
    ("train_grade", "histoviz train cohort/configs/grade.yaml --out runs/grade --no-progress"),
    ("train_survival", "histoviz train cohort/configs/survival.yaml --out runs/survival --no-progress"),
    ("predict", "histoviz predict --slides download/gdc --model runs/omics --model runs/grade --model runs/survival "
                "--genes MKI67 COL1A1 --out predictions --no-progress"),
]


def main(argv: list[str] | None = None) -> int:
    """Build the download, run the commands, write ``<work>/results.json``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True, help="an empty work folder")
    ap.add_argument("--slides", type=int, default=132, help="synthetic slides (patients: about 5/6 of them)")
    a = ap.parse_args(argv)
    work = a.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    hv = str(Path(sys.executable).with_name("histoviz"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    t0 = time.perf_counter()
    subprocess.run([hv, "synth", "--out", str(work / "synth"), "--slides", str(a.slides), "--size", "768",
                    "--seed", "5"], check=True, env=env, stdout=subprocess.DEVNULL)
    sys.path.insert(0, str(ROOT / "tests"))
    from _tcga_download import make_download

    if not (work / "download").exists():
        make_download(work / "synth", work / "download", corrupt=True)
    runs = []

    def rel(text: str) -> str:  # outputs name the work folder's files relative to it
        return text.replace(f"{work}/", "").replace(str(work), ".")

    for key, cmd in COMMANDS:
        t = time.perf_counter()
        cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        argv_ = shlex.split(cmd)
        p = subprocess.run([hv, *argv_[1:]], cwd=work, env=env, capture_output=True, text=True)
        cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        runs.append({"key": key, "command": cmd, "returncode": p.returncode, "stdout": rel(p.stdout.rstrip()),
                     "stderr_tail": [rel(ln) for ln in p.stderr.strip().splitlines() if "Warning" not in ln][-3:],
                     "seconds": round(time.perf_counter() - t, 1),
                     "cpu_seconds": round(cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime, 1)})
        print(f"{key}: exit {p.returncode} in {runs[-1]['seconds']} s", file=sys.stderr)
    import pandas as pd

    pred = pd.read_csv(work / "predictions" / "predictions.csv", dtype={"grade": str, "grade_set": str})
    report = json.loads((work / "cohort" / "import_report.json").read_text())
    cols = ["slide_id", "status", "in_training_cohort", "grade", "grade_set", "survival_risk", "survival_time_lo",
            "survival_time_unit", "survival_risk_lo", "survival_risk_hi", "gene:MKI67"]
    unseen = pred[(pred["status"] == "done") & ~pred["in_training_cohort"]]
    shown = pd.concat([pred[pred["status"] == "done"].head(2), unseen.head(2), pred[pred["status"] == "failed"]])
    metrics = {}
    for run, rows in (("grade", ("auc_macro", "coverage", "set_size")),
                      ("survival", ("c_index", "coverage", "interval_width", "lower_bound"))):
        sm = pd.read_csv(work / "runs" / run / "summary.csv")
        sm = sm[(sm["subset"] == "all") & sm["metric"].isin(rows)].drop_duplicates("metric")
        metrics[run] = {m: [round(float(a), 3), round(float(b), 3)] for m, a, b in sm[["metric", "mean", "std"]].itertuples(
            index=False)}
    out = {"runs": runs, "metrics": metrics, "n_slides": a.slides, "seconds_total": round(time.perf_counter() - t0, 1),
           "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
           "slides": {k: report["slides"][k] for k in ("found", "kept", "n_dropped")},
           "patients": report["patients"],
           "predictions_columns": [c for c in cols if c in shown.columns],
           "predictions_head": json.loads(shown[[c for c in cols if c in shown.columns]].to_json(orient="records"))}
    (work / "results.json").write_text(json.dumps(out, indent=1))
    print(work / "results.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
