"""Training at cohort scale: peak memory with lazy bags against the size of one batch.

Virtual cohorts of growing size (random float32 bags written as HDF5, 1,024-d like UNI) are
trained for one epoch with the gated-ABMIL grade model (batch 8, 2,048 patches sampled per
bag, as TANGLE) in a fresh subprocess each, with bags read lazily and, for the smaller cohorts,
held in memory. Reported: peak RSS growth over the process's import baseline, the cohort size
and the size of one batch, and the ratio growth / batch. Flat memory means the lazy growth does
not follow the cohort size. A TCGA-BRCA-sized cohort (1,000 slides x 20k patches x 1,024-d) is
80 GB of features; the same per-batch memory applies.

Usage: ``python bench/bench_lazy.py [--out bench/results] [--quick]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import write_result  # noqa: E402

_CHILD = textwrap.dedent("""
    import json, sys, threading, time
    import psutil
    import numpy as np
    from pathlib import Path
    import torch  # noqa: F401
    from histoviz.io.lazybags import LazyBags
    from histoviz.data.outcomes import ClassBlock
    from histoviz.models import create_model

    folder, lazy, n_bags = Path(sys.argv[1]), sys.argv[2] == "1", int(sys.argv[3])
    paths = [[folder / f"s{i}.h5"] for i in range(n_bags)]
    proc = psutil.Process()
    peak = [0]
    done = threading.Event()

    def sample():  # peak of the current RSS (ru_maxrss would keep the import-time peak)
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.005)

    base = proc.memory_info().rss
    threading.Thread(target=sample, daemon=True).start()
    bags = LazyBags(paths) if lazy else [LazyBags(paths).read(i) for i in range(n_bags)]
    m = create_model("abmil-grade", embed_dim=64, attn_dim=32, hidden=64, epochs=1, batch_size=8,
                     max_patches=2048, device="cpu")
    m.fit(bags, {"grade": ClassBlock("grade", ["a", "b"], np.arange(n_bags) % 2)})
    done.set()
    peak[0] = max(peak[0], proc.memory_info().rss)
    print(json.dumps({"base_mb": base / 2**20, "peak_mb": peak[0] / 2**20}))
""")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="smallest size: every code path, no meaningful numbers (CI)")
    a = ap.parse_args()
    from histoviz.io.featurebag import FeatureBag

    n_patch, dim, batch, sampled = (400, 64, 8, 128) if a.smoke else (8000, 1024, 8, 2048)
    sizes = (2, 4) if a.smoke else (16, 48) if a.quick else (16, 48, 96)
    batch_mb = batch * sampled * dim * 4 / 2**20
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rng = np.random.default_rng(0)
        for i in range(max(sizes)):
            FeatureBag(np.zeros((n_patch, 2), np.int64), rng.standard_normal((n_patch, dim), dtype=np.float32),
                       {"tile_size_level0": 224, "encoder": "virtual"}).to_h5(folder / f"s{i}.h5")
        script = folder / "child.py"
        script.write_text(_CHILD)
        root = str(Path(__file__).resolve().parents[1])
        for n in sizes:
            for lazy in ("1", "0") if n <= 48 else ("1",):
                p = subprocess.run([sys.executable, str(script), str(folder), lazy, str(n)], capture_output=True,
                                   text=True, cwd=root, env={"PYTHONPATH": root, "PATH": "/usr/bin:/bin"}, check=True)
                r = json.loads(p.stdout.strip().splitlines()[-1])
                grow = r["peak_mb"] - r["base_mb"]
                cohort_mb = n * n_patch * dim * 4 / 2**20
                rows.append({"bags": n, "mode": "lazy" if lazy == "1" else "in memory", "cohort_mb": round(cohort_mb),
                             "peak_growth_mb": round(grow), "batch_mb": round(batch_mb, 1),
                             "growth_over_batch": round(grow / batch_mb, 2)})
                print(rows[-1], flush=True)
    lazy_rows = [r for r in rows if r["mode"] == "lazy"]
    flat = max(r["peak_growth_mb"] for r in lazy_rows) - min(r["peak_growth_mb"] for r in lazy_rows)
    write_result(a.out, "lazy", {
        "what": "peak RSS growth of one training epoch (abmil-grade, batch 8, 2,048 sampled patches, 1,024-d) "
                "with lazy bags vs bags in memory, by cohort size; a fresh process each",
        "rows": rows,
        "lazy_growth_spread_mb": flat,
        "tcga_brca_features_gb": round(1000 * 20000 * 1024 * 4 / 1e9),
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
