"""File > Open Sample > histoviz in a fresh napari process, as a newcomer meets it: the samples
open, a missing one is built in a process of its own, and torch never loads into the viewer's
process (it once did, and its GPU compiler crashed the graphics driver)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.gui, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
_PROBE = r"""
import json, sys
import napari

viewer = napari.Viewer(show=True)
for key in ("real", "synthetic"):
    viewer.open_sample("histoviz", key)
print("RESULT " + json.dumps({"layers": [la.name for la in viewer.layers], "torch": "torch" in sys.modules,
                              "triton": "triton" in sys.modules}))
viewer.close()
"""


def test_samples_open_in_a_fresh_viewer_and_nothing_heavy_loads_there(synthetic_sample, tmp_path):
    from histoviz.demo.samples import SAMPLE_VERSION

    home = tmp_path / "cache"
    (home / "samples").mkdir(parents=True)
    built = synthetic_sample.predictions.parent  # the session's synthetic sample; the SVS one is missing
    (home / "samples" / built.name).symlink_to(built, target_is_directory=True)
    env = {**os.environ, "HISTOVIZ_CACHE": str(home)}
    r = subprocess.run([sys.executable, "-c", _PROBE], env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr[-4000:]
    got = json.loads(next(ln for ln in r.stdout.splitlines() if ln.startswith("RESULT "))[7:])
    assert got["layers"] == ["CMU-1-Small-Region", "map: simulated cell type tumour", "S067", "map: risk"], got
    assert not got["torch"] and not got["triton"], got
    assert (home / "samples" / f"svs-simulated-v{SAMPLE_VERSION}" / "sample.json").is_file()  # built on first use
