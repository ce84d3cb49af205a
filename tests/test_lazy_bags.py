"""Training reads feature bags lazily: the same results as in memory, and memory that does not
grow with the cohort (a subprocess measures peak RSS; the test fails if every bag is loaded)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from _model_fixtures import outcome_cohort

from histoviz.training.config import load_config
from histoviz.training.data import load_experiment_data
from histoviz.training.runner import run_experiment

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_lazy_bags_give_the_same_results(tmp_path_factory, tmp_path):
    cohort = outcome_cohort(tmp_path_factory)
    out = {}
    for lazy in (False, True):
        cfg = cohort.config("lazy" if lazy else "eager", "abmil-grade", outcomes=("grade",),
                            params={"embed_dim": 16, "hidden": 16}, epochs=5)
        cfg["data"]["lazy_bags"] = lazy
        data = load_experiment_data(load_config(cfg))
        assert type(data.bags).__name__ == ("LazyBags" if lazy else "list")
        out[lazy] = run_experiment(load_config(cfg), tmp_path / str(lazy), data=data).metrics
    a = out[False].sort_values(["fold", "task", "target", "metric"])["value"].to_numpy(float)
    b = out[True].sort_values(["fold", "task", "target", "metric"])["value"].to_numpy(float)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    from pathlib import Path
    import torch  # noqa: F401 (imported before the baseline)
    from histoviz.io.featurebag import FeatureBag
    from histoviz.io.lazybags import LazyBags
    from histoviz.data.outcomes import ClassBlock
    from histoviz.models import create_model

    def status(key):  # kB, as the kernel counts them
        return int(next(ln for ln in open("/proc/self/status") if ln.startswith(key)).split()[1]) * 1024

    folder, lazy, n_bags, n_patch, dim = Path(sys.argv[1]), sys.argv[2] == "1", *map(int, sys.argv[3:6])
    paths = [[folder / f"s{i}.h5"] for i in range(n_bags)]
    with open("/proc/self/clear_refs", "w") as f:  # the kernel's peak RSS (VmHWM) restarts from here
        f.write("5")
    base = status("VmRSS")
    bags = LazyBags(paths) if lazy else [np.asarray(LazyBags(paths).read(i)) for i in range(n_bags)]
    labels = ClassBlock("grade", ["a", "b"], np.arange(n_bags) % 2)
    m = create_model("abmil-grade", embed_dim=16, attn_dim=8, hidden=16, epochs=2, batch_size=4,
                     max_patches=512, device="cpu", num_threads=1)
    m.fit(bags, {"grade": labels})
    print(json.dumps({"base_mb": base / 2**20, "peak_mb": status("VmHWM") / 2**20}))
""")


@pytest.mark.slow
def test_training_memory_stays_flat_with_lazy_bags(tmp_path):
    """Peak RSS growth of training on 10 vs 40 bags: flat when lazy, growing with the cohort in memory.

    The peak is the kernel's (``VmHWM``, reset through ``/proc/self/clear_refs`` after the imports),
    which counts every page the process touched, not a sample."""
    from histoviz.io.featurebag import FeatureBag

    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("needs Linux's /proc/self/clear_refs to reset the peak RSS")

    n_big, n_small, n_patch, dim = 40, 10, 6000, 256  # 6 MB per bag, 234 MB for 40
    rng = np.random.default_rng(0)
    for i in range(n_big):
        FeatureBag(np.zeros((n_patch, 2), np.int64), rng.standard_normal((n_patch, dim), dtype=np.float32),
                   {"tile_size_level0": 224, "encoder": "virtual"}).to_h5(tmp_path / f"s{i}.h5")
    script = tmp_path / "train.py"
    script.write_text(_SCRIPT)
    res = {}
    for lazy in ("1", "0"):
        for n in (n_small, n_big):
            p = subprocess.run([sys.executable, str(script), str(tmp_path), lazy, str(n), str(n_patch), str(dim)],
                               capture_output=True, text=True, cwd=ROOT, timeout=600,
                               env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
            assert p.returncode == 0, p.stderr[-2000:]
            r = json.loads(p.stdout.strip().splitlines()[-1])
            res[lazy, n] = r["peak_mb"] - r["base_mb"]
    added_mb = (n_big - n_small) * n_patch * dim * 4 / 2**20
    lazy_step = res["1", n_big] - res["1", n_small]
    eager_step = res["0", n_big] - res["0", n_small]
    print(f"peak RSS growth, {n_small} -> {n_big} bags (+{added_mb:.0f} MB of features): lazy "
          f"{res['1', n_small]:.0f} -> {res['1', n_big]:.0f} MB, in memory {res['0', n_small]:.0f} -> {res['0', n_big]:.0f} MB")
    assert eager_step > 0.8 * added_mb  # holding the bags grows with the cohort (the test can tell)
    assert lazy_step < 0.15 * added_mb  # reading lazily does not
