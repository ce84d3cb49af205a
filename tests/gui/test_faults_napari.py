"""Bad input in napari: a file named as a slide that histoviz cannot open is declined with one
notification line naming it and the reason; slides in other pixel formats open as their pixels;
a model that cannot predict (NaN weights, not a run) is a message in the widget, never a traceback
or a NaN map (the table of the other front end is tests/test_faults.py)."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.gui


def _links(d: Path) -> None:
    os.symlink("b.svs", d / "a.svs")
    os.symlink("a.svs", d / "b.svs")
    os.symlink("gone.svs", d / "dangling.svs")


def _dicom(d: Path) -> None:
    from _faults import dicom_header

    dicom_header(d / "huge.dcm", cols=10**7, rows=10**7, frames=41667**2)


def _truncated(d: Path, svs: Path) -> None:
    data = svs.read_bytes()
    (d / "cut.svs").write_bytes(data[: len(data) // 2])


DECLINED = [
    ("a.svs", "a loop of symbolic links", _links),
    ("dangling.svs", "gone.svs, which does not exist", _links),
    ("huge.dcm", "more than any slide scan", _dicom),
    ("cut.svs", "truncated or corrupt", None),
]


@pytest.mark.parametrize(("name", "why", "setup"), DECLINED, ids=[c[0] for c in DECLINED])
def test_reader_declines_bad_slides_with_one_line(tmp_path, svs_path, name, why, setup):
    from napari_plugin._reader import get_reader

    (setup or (lambda d: _truncated(d, svs_path)))(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert get_reader(str(tmp_path / name)) is None
    lines = [str(w.message) for w in seen]
    assert len(lines) == 1 and "\n" not in lines[0], lines
    assert name in lines[0] and why in lines[0], lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_cmyk_and_grey_alpha_slides_open_as_their_pixels(make_napari_viewer, tmp_path):
    import tifffile
    from _faults import tissue_image
    from PIL import Image

    rgb = tissue_image(448)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.tif")
    grey = np.asarray(Image.fromarray(rgb).convert("L"))
    tifffile.imwrite(tmp_path / "grey_alpha.tif", np.stack([grey, np.full_like(grey, 255)], -1),
                     photometric="minisblack", extrasamples=["unassalpha"])
    viewer = make_napari_viewer()
    (cmyk,) = viewer.open(str(tmp_path / "cmyk.tif"), plugin="histoviz")
    (la,) = viewer.open(str(tmp_path / "grey_alpha.tif"), plugin="histoviz")
    assert np.array_equal(np.asarray(cmyk.data[0]), rgb)
    assert np.array_equal(np.asarray(la.data[0])[..., 0], grey)


@pytest.mark.parametrize("which", ["nan_run", "features"])
def test_model_that_cannot_predict_is_a_message(slide_viewer, fault_inputs, tmp_path, qtbot, which):
    viewer, widget = slide_viewer
    model = tmp_path / which
    shutil.copytree(fault_inputs / which, model)
    names = [la.name for la in viewer.layers]
    widget.run_model(model)
    qtbot.waitUntil(lambda: not widget.running, timeout=120_000)
    assert widget.message_is_error and "Traceback" not in widget.message, widget.message
    want = "model.safetensors: the model predicts NaN" if which == "nan_run" else "not a finished histoviz run"
    assert want in widget.message, widget.message
    assert widget.adata is None and [la.name for la in viewer.layers] == names  # no NaN map shown
