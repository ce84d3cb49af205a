"""mpp from every source, hostile and damaged files, odd names, DICOM series folders."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
import tifffile

from histoviz.errors import ImplausibleMppError, MissingMppError, SlideOpenError
from histoviz.io import open_slide
from histoviz.io.mpp import resolve_mpp
from histoviz.tiling import TilingConfig, make_tile_grid
from tests.conftest import make_layout_image


def _tiff(path, *, res_mpp=None, description=None, shape=(1344, 1792)):
    img, _ = make_layout_image(shape[1], shape[0])
    kw = {}
    if res_mpp is not None:
        kw = {"resolution": (1e4 / res_mpp,) * 2, "resolutionunit": "CENTIMETER"}
    tifffile.imwrite(path, img, tile=(256, 256), compression="jpeg", photometric="rgb",
                     description=description, metadata=None, **kw)
    return path


def test_resolve_mpp_rules():
    r = resolve_mpp({"openslide": (0.25, 0.25), "tiff-resolution": (0.2501, 0.25)}, 40)
    assert (r.mpp, r.source, r.warning) == (0.25, "openslide", "")
    assert r.sources == {"openslide": 0.25, "tiff-resolution": 0.2501, "objective": 0.25}
    r = resolve_mpp({"aperio": (0.5, 0.5), "tiff-resolution": (0.25, 0.25)}, 20)
    assert r.mpp == 0.5 and "aperio 0.5 vs tiff-resolution 0.25" in r.warning and "using 0.5" in r.warning
    r = resolve_mpp({"tiff-resolution": (352.78, 352.78)}, None)  # 72 dpi default tag
    assert r.mpp is None and "352.78 um/px" in r.problem and "plausible" in r.problem
    r = resolve_mpp({}, 20)  # objective alone is compared, never used
    assert r.mpp is None and r.sources == {"objective": 0.5}


def test_disagreeing_sources_warn_and_info_lists_each(tmp_path, caplog, capsys):
    from histoviz.cli import main

    p = _tiff(tmp_path / "d.svs", res_mpp=0.5,
              description="Aperio Image Library v12.0.0\n1792x1344 (256x256) JPEG/RGB Q=70|AppMag = 20|MPP = 0.25")
    with caplog.at_level("WARNING"):
        r = open_slide(p)
    assert r.mpp == pytest.approx(0.25) and r.meta.mpp_source == "openslide"
    assert r.meta.mpp_sources == pytest.approx({"openslide": 0.25, "aperio": 0.25,
                                                 "tiff-resolution": 0.5, "objective": 0.5})
    assert "disagree" in caplog.text and "tiff-resolution 0.5" in caplog.text and "using 0.25" in caplog.text
    assert main(["info", str(p)]) == 0
    out = capsys.readouterr().out
    for line in ("openslide       0.2500", "aperio          0.2500", "tiff-resolution 0.5000",
                 "objective       0.5000", "warning     mpp sources disagree"):
        assert line in out, out
    assert main(["info", str(p), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["mpp_sources"]["tiff-resolution"] == pytest.approx(0.5) and d["mpp_warning"]


def test_implausible_mpp_is_refused_with_why(tmp_path, capsys):
    from histoviz.cli import main

    p = _tiff(tmp_path / "bogus.tif", res_mpp=49.0)  # a bogus resolution tag
    r = open_slide(p)
    assert r.mpp is None and r.meta.mpp_sources == pytest.approx({"tiff-resolution": 49.0})
    with pytest.raises(ImplausibleMppError, match="bogus.tif: refusing the recorded resolution: "
                                                  "tiff-resolution says 49 um/px.*plausible"):
        make_tile_grid(r)
    assert main(["info", str(p)]) == 0
    assert "refused: tiff-resolution says 49 um/px" in capsys.readouterr().out
    with pytest.raises(ImplausibleMppError, match="outside the plausible range"):
        open_slide(p, mpp=1e6)
    with pytest.raises(ImplausibleMppError, match="finite number"):
        open_slide(p, mpp=float("nan"))
    assert len(make_tile_grid(open_slide(p, mpp=0.5))) > 0  # the override is the way out
    # a plausible but coarse slide: upsampling its best level beyond 2x is refused
    coarse = _tiff(tmp_path / "coarse.tif", res_mpp=4.0)
    r, reads = open_slide(coarse), []
    level_read = r._read_level
    r._read_level = lambda *a: reads.append(a) or level_read(*a)  # every pixel read passes here
    with pytest.raises(ImplausibleMppError, match="would upsample.*8.0x.*at most 2x"):
        make_tile_grid(r)
    assert reads == []  # refused from the recorded resolution, before reading a pixel
    assert len(make_tile_grid(r, TilingConfig(mpp=8.0, tile_size=16))) > 0 and reads  # the same reader does read


def test_missing_mpp_hint_mentions_objective(tmp_path):
    p = _tiff(tmp_path / "noreso.svs",
              description="Aperio Image Library v12.0.0\n1792x1344 (256x256) JPEG/RGB Q=70|AppMag = 40")
    with pytest.raises(MissingMppError, match="objective \\(40x\\) suggests about 0.25"):
        make_tile_grid(open_slide(p))


def _png_header_only(path, w, h):
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def _tiff_header_only(path, w, h, compression):
    """A little-endian TIFF whose header claims (w, h) RGB and holds 100 bytes of data."""
    entries = [(256, 4, 1, w), (257, 4, 1, h), (258, 3, 1, 8), (259, 3, 1, compression),
               (262, 3, 1, 2), (273, 4, 1, 200), (277, 3, 1, 3), (278, 4, 1, h), (279, 4, 1, 100)]
    ifd = struct.pack("<H", len(entries))
    for tag, typ, cnt, val in entries:
        ifd += struct.pack("<HHI", tag, typ, cnt) + (struct.pack("<HH", val, 0) if typ == 3 else struct.pack("<I", val))
    ifd += struct.pack("<I", 0)
    data = b"II*\x00" + struct.pack("<I", 8) + ifd
    path.write_bytes(data + b"\x00" * (200 - len(data)) + zlib.compress(b"\x00" * 1000)[:100].ljust(100, b"\x00"))
    return path


_BOUNDED = r"""
import sys, json
sys.path.insert(0, {root!r})
from histoviz.io import open_slide
from histoviz.io.slide import SlideReader
from histoviz.tiling import make_tile_grid, TilingConfig
px = [0]
read = SlideReader.read_region
def counted(self, *a, **k):
    out = read(self, *a, **k)
    px[0] += out.shape[0] * out.shape[1]
    return out
SlideReader.read_region = counted  # every pixel a reader returns passes here
msg = ""
try:
    make_tile_grid(open_slide({path!r}), TilingConfig(mpp_override=0.5))
except Exception as e:
    msg = f"{{type(e).__name__}}: {{e}}"
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(json.dumps({{"px": px[0], "mb": int(hwm) / 1024, "msg": msg}}))
"""


@pytest.mark.parametrize("kind", ["png-150mpx", "png-10gpx", "tiff-deflate", "tiff-raw"])
def test_hostile_headers_refused_before_decoding_in_bounded_memory(tmp_path, kind):
    if kind.startswith("png"):
        side = 12_250 if kind == "png-150mpx" else 100_000
        p = _png_header_only(tmp_path / "bomb.png", side, side)
        want = "bomb.png: .*(larger than|decompression bomb).*pyramidal TIFF"
    else:
        p = _tiff_header_only(tmp_path / "huge.tif", 10**6, 10**6, 8 if kind == "tiff-deflate" else 1)
        want = "huge.tif: .*(too large to decode|truncated or corrupt)"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", _BOUNDED.format(root=root, path=str(p))],
                         capture_output=True, text=True, timeout=120)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["msg"].startswith("SlideOpenError"), res
    import re

    assert re.search(want, res["msg"], re.IGNORECASE), res["msg"]
    # refused from the header: no pixel decoded, and the peak memory of the whole process stays small
    assert res["px"] == 0 and res["mb"] < 600, res


def test_mask_of_a_huge_single_level_is_bounded():
    from histoviz.io.slide import SlideMeta, SlideReader

    class Huge(SlideReader):
        read_px = 0

        def __init__(self):
            super().__init__(SlideMeta(None, ((10**6, 10**6),), (1.0,), 0.5), slide_id="huge")

        def _read_level(self, x, y, w, h, level):
            Huge.read_px += w * h
            return np.full((h, w, 3), 250, np.uint8)

    with pytest.raises(SlideOpenError, match="no pyramid level is coarse enough"):
        make_tile_grid(Huge())
    assert Huge.read_px == 0


def test_truncated_vendor_file_is_refused_not_half_read(tmp_path, svs_path, capsys):
    from histoviz.cli import main

    data = svs_path.read_bytes()
    for frac in (0.1, 0.5, 0.75, 0.99):
        p = tmp_path / f"cut{int(frac * 100)}.svs"
        p.write_bytes(data[: int(len(data) * frac)])
        with pytest.raises(SlideOpenError, match=f"cut{int(frac * 100)}.svs: .*truncated or corrupt"):
            open_slide(p)
        assert main(["info", str(p)]) == 1
        err = capsys.readouterr().err
        assert "truncated or corrupt" in err and "IndexError" not in err and len(err.splitlines()) == 1


def test_file_name_not_utf8_is_one_line_error(tmp_path, svs_path, capsys):
    from histoviz.cli import main

    name = os.fsdecode(os.path.join(os.fsencode(tmp_path), b"slide\xff\xfe.svs"))
    shutil.copy(svs_path, name)
    with pytest.raises(SlideOpenError, match=r"slide\\xff\\xfe.svs: the file name is not valid UTF-8"):
        open_slide(name)
    assert main(["info", name]) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "rename the file" in err


# ------------------------------------------------------------------------------------------
# DICOM whole-slide series (made from the CMU SVS with wsidicomizer)
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dicom_series(tmp_path_factory, svs_path):
    wsidicomizer = pytest.importorskip(
        "wsidicomizer", reason="wsidicomizer (PyPI, needs Debian libturbojpeg0) is not installed")
    out = tmp_path_factory.mktemp("dcm") / "CMU-1-dicom"
    try:
        # the whole series: volume, thumbnail, label and overview instances, one file each
        # (add_missing_levels=True is not used: wsidicomizer 0.26 writes cropped edge frames in
        # the levels it makes, which OpenSlide rejects as "Dimensional mismatch reading JPEG")
        wsidicomizer.WsiDicomizer.convert(svs_path, out, workers=1)
    except Exception as e:  # e.g. libturbojpeg missing at run time
        pytest.skip(f"wsidicomizer cannot convert here: {type(e).__name__}: {e}")
    return out


def test_dicom_series_folder_opens_as_one_slide(dicom_series, svs_path, capsys):
    from histoviz.cli import main

    assert len(list(dicom_series.glob("*.dcm"))) >= 2  # a series: one file per instance
    src, dcm = open_slide(svs_path), open_slide(dicom_series)
    assert dcm.slide_id == "CMU-1-dicom" and dcm.meta.vendor == "dicom"
    assert dcm.level_dimensions == src.level_dimensions
    assert dcm.mpp == pytest.approx(src.mpp) and dcm.meta.mpp_source == "dicom"
    w, h = src.dimensions
    assert np.array_equal(dcm.read_region((0, 0), 0, (w, h)), src.read_region((0, 0), 0, (w, h)))
    assert main(["info", str(dicom_series)]) == 0
    assert "2220 x 2967" in capsys.readouterr().out


@pytest.mark.slow
def test_dicom_rows_in_a_cohort_embed_like_the_source(dicom_series, svs_path, tmp_path):
    import pandas as pd

    from histoviz.features.cohort import embed_cohort
    from histoviz.io import FeatureBag

    cohort = pd.DataFrame({"slide_id": ["dcm", "svs"], "patient_id": ["p", "p"],
                           "path": [str(dicom_series), str(svs_path)]})
    res = embed_cohort(cohort, tmp_path / "f", encoder="morphology", workers=0, progress=False)
    assert res.counts()["done"] == 2
    a, b = FeatureBag.from_h5(tmp_path / "f" / "dcm.h5"), FeatureBag.from_h5(tmp_path / "f" / "svs.h5")
    assert np.array_equal(a.coords, b.coords) and np.allclose(a.features, b.features, atol=1e-4)
