"""The npe2 manifest: valid, importable, and it contributes what the plugin promises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.gui


def test_npe2_validate_with_imports():
    npe2 = Path(sys.executable).with_name("npe2")
    r = subprocess.run([str(npe2), "validate", "histoviz", "--imports"], capture_output=True, text=True,
                       check=False, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "valid" in r.stdout


def test_manifest_contributions():
    from npe2 import PluginManifest

    pm = PluginManifest.from_distribution("histoviz")
    c = pm.contributions
    assert {"*.svs", "*.tif", "*.ndpi", "*.mrxs", "*.h5ad"} <= set(c.readers[0].filename_patterns)
    assert [w.display_name for w in c.widgets] == ["Prediction maps", "Spots (measured | predicted)"]
    assert {s.key for s in c.sample_data} == {"synthetic", "real"}
    exts = {e for w in c.writers for e in w.filename_extensions}
    assert exts == {".geojson", ".ome.tif", ".ome.tiff"}


def test_reader_declines_what_it_cannot_open(tmp_path, svs_path, plain_tiff_path):
    from napari_plugin._reader import get_reader, read_predictions_file, read_slide

    assert get_reader(str(svs_path)) is read_slide
    assert get_reader([str(svs_path)]) is read_slide
    assert get_reader([str(svs_path), str(svs_path)]) is None
    bad = tmp_path / "broken.svs"
    bad.write_bytes(b"not a slide")
    with pytest.warns(UserWarning, match="broken.svs: .*(truncated|corrupt)"):  # shown as a notification
        assert get_reader(str(bad)) is None
    other = tmp_path / "cells.h5ad"
    import anndata as ad
    import numpy as np

    ad.AnnData(np.zeros((2, 2), np.float32)).write_h5ad(other)
    assert get_reader(str(other)) is None  # an h5ad that is not a histoviz prediction file
    # a TIFF without resolution opens in pixels (scale 1, no units)
    (data, kwargs, kind), = read_slide(str(plain_tiff_path))
    assert kind == "image" and "scale" not in kwargs and data[0].shape == (901, 1493, 3)
    assert read_predictions_file is not None


def test_running_a_model_after_the_viewer_drew_does_not_crash(tmp_path):
    """Regression: torch's triton probe after napari's first draw segfaulted (LLVM clash)."""
    script = tmp_path / "probe.py"
    script.write_text(
        "import numpy as np, napari\n"
        "v = napari.Viewer(show=True)\n"
        "v.add_image(np.zeros((8, 8)))\n"
        "v.screenshot()\n"
        "from napari_plugin._widget import _block_triton\n"
        "_block_triton()\n"
        "import torchvision.ops  # imports torch._dynamo, which probes for triton\n"
        "import torch\n"
        "print('ok', float(torch.ones(2).sum()))\n"
        "v.close()\n"
    )
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=False,
                       timeout=300)
    assert r.returncode == 0 and "ok 2.0" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]
