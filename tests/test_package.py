"""Package-level promises: light imports, CLI help, docstrings on the public API."""

from __future__ import annotations

import importlib
import inspect
import json
import subprocess
import sys

import pytest

#: libraries that take a second or more to import; none may load with the core (no timing on a shared machine:
#: what makes ``import histoviz`` slow is importing one of these)
HEAVY = ("torch", "torchvision", "timm", "napari", "qtpy", "streamlit", "plotly", "dask", "distributed", "anndata",
         "scanpy", "sklearn", "scipy", "lifelines", "pandas", "h5py", "zarr", "tifffile", "openslide", "PIL",
         "matplotlib", "numba")


def test_core_imports_leave_torch_out():
    code = ("import sys, json; import histoviz, histoviz.io, histoviz.tiling; "
            f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == [], "importing histoviz, histoviz.io and histoviz.tiling must stay light"


def test_cli_lists_every_command():
    from histoviz.cli import build_parser

    text = build_parser().format_help()
    for cmd in ("info", "encoders", "synth", "tile", "embed", "train", "evaluate", "predict", "demo", "bench"):
        assert cmd in text


@pytest.mark.parametrize("mod", ["histoviz.io", "histoviz.tiling", "histoviz.features", "histoviz.errors"])
def test_public_functions_have_docstrings(mod):
    m = importlib.import_module(mod)
    for name in m.__all__:
        obj = getattr(m, name)
        if inspect.isfunction(obj) or inspect.isclass(obj):
            assert obj.__doc__, f"{mod}.{name} has no docstring"


def test_cli_tile_and_single_slide_embed(svs_path, tmp_path, capsys):
    import json

    import pandas as pd

    from histoviz.cli import main
    from histoviz.io import FeatureBag, open_slide
    from histoviz.tiling import make_tile_grid

    assert main(["tile", str(svs_path), "--out", str(tmp_path)]) == 0
    tiles = pd.read_csv(tmp_path / "CMU-1-Small-Region_tiles.csv")
    grid = make_tile_grid(open_slide(svs_path))
    assert len(tiles) == len(grid) and (tiles[["x", "y"]].to_numpy() == grid.coords).all()
    assert (tmp_path / "CMU-1-Small-Region_tiles.png").stat().st_size > 1000
    capsys.readouterr()
    assert main(["embed", str(svs_path), "--out", str(tmp_path / "f"), "--encoder", "morphology",
                 "--mpp", "1.0", "--no-progress"]) == 0
    bag = FeatureBag.from_h5(tmp_path / "f" / "CMU-1-Small-Region.h5")
    assert bag.features.shape[1] == 51 and bag.attrs["mpp"] == 1.0
    assert "already embedded" not in capsys.readouterr().out
    assert main(["embed", str(svs_path), "--out", str(tmp_path / "f"), "--encoder", "morphology",
                 "--mpp", "1.0"]) == 0
    assert "already embedded" in capsys.readouterr().out
    # another resolution is a different bag: refused with the difference, replaced on request
    assert main(["embed", str(svs_path), "--out", str(tmp_path / "f"), "--encoder", "morphology",
                 "--mpp", "0.5", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "made another way" in err and "mpp: 0.5 vs 1.0" in err and "--overwrite" in err
    assert FeatureBag.from_h5(tmp_path / "f" / "CMU-1-Small-Region.h5").attrs["mpp"] == 1.0
    assert main(["embed", str(svs_path), "--out", str(tmp_path / "f"), "--encoder", "morphology",
                 "--mpp", "0.5", "--no-progress", "--overwrite"]) == 0
    assert "already embedded" not in capsys.readouterr().out
    assert FeatureBag.from_h5(tmp_path / "f" / "CMU-1-Small-Region.h5").attrs["mpp"] == 0.5
    assert main(["encoders", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"]: r["embed_dim"] for r in rows}["efficientnet-lite0"] == 1280
