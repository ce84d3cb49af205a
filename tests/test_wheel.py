"""The installed package without its source tree: a wheel built from the repository's files,
installed into a new virtual environment outside the repository, serves every dashboard page
(AppTest) and is found by napari's plugin discovery (npe2); the wheel carries the licence, the
sample data and their licence notes.

To avoid installing every dependency again, the new environment reads the running one's
site-packages through a ``.pth`` line (added after its own, and without running the ``.pth``
files there, so an editable install of the checkout is not picked up); the test checks that
``histoviz`` and ``napari_plugin`` are imported from the wheel.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]

PROBE = r'''
import json, os, sys
from pathlib import Path
root, venv = sys.argv[1], Path(sys.argv[2]).resolve()
os.environ["HISTOVIZ_RESULTS_ROOT"] = root
import histoviz, napari_plugin
from histoviz.dashboard import APP, PAGES
out = {"histoviz": histoviz.__file__, "napari_plugin": napari_plugin.__file__, "app": str(APP)}
from importlib.metadata import distribution
dist = distribution("histoviz")
out["files"] = sorted(str(f) for f in dist.files if "licenses" in str(f) or "sample_data/real/README" in str(f))
from histoviz.datasets import sample_data_dir
from histoviz.viz.results import list_panels
out["sample_data"], out["panels"] = str(sample_data_dir()), list_panels()
from histoviz._cli.dashboard import streamlit_command
out["command"] = streamlit_command(root)[0]
from streamlit.testing.v1 import AppTest
at = AppTest.from_file(str(APP), default_timeout=180)
at.run()
pages = {}
for page in PAGES:
    at.switch_page(f"views/{page}.py").run()
    pages[page] = {"exceptions": [e.value for e in at.exception], "errors": [e.value for e in at.error],
                   "title": at.title[0].value if at.title else "", "charts": len(at.get("plotly_chart"))}
out["pages"] = pages
from npe2 import PluginManager
pm = PluginManager.instance()
pm.discover()
mf = pm.get_manifest("histoviz")
out["npe2"] = {"name": mf.name, "readers": [r.command for r in mf.contributions.readers or []],
               "samples": [s.key for s in mf.contributions.sample_data or []],
               "widgets": [w.display_name for w in mf.contributions.widgets or []]}
import napari_plugin._reader as reader
out["reader_module"] = reader.__file__
print("PROBE" + json.dumps(out))
'''


def _site_dirs() -> list[str]:
    """The running interpreter's site-packages folders (never the checkout)."""
    dirs = [p for p in sys.path if p.rstrip("/").endswith("site-packages") and Path(p).is_dir()]
    return list(dict.fromkeys([sysconfig.get_paths()["purelib"], *dirs]))


def _copy_sources(dst: Path) -> None:
    """The files git tracks (and the sample-data link), nothing built or cached."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    for f in (x.decode() for x in files if x):
        src, out = ROOT / f, dst / f
        if not src.exists() and not src.is_symlink():
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), out)
        else:
            out.write_bytes(src.read_bytes())


def test_wheel_installs_and_serves_the_dashboard_and_the_napari_plugin(tmp_path: Path) -> None:
    from _results_root import build_two_cohorts

    if subprocess.run(["git", "rev-parse"], cwd=ROOT, capture_output=True, check=False).returncode:
        pytest.skip("needs the git checkout to list the sources")
    src = tmp_path / "src"
    _copy_sources(src)
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                        str(tmp_path / "dist"), str(src)], capture_output=True, text=True, check=False, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    [wheel] = list((tmp_path / "dist").glob("histoviz-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    (Path(purelib) / "zz_dependencies.pth").write_text("\n".join(_site_dirs()) + "\n")
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", "--no-index",
                        str(wheel)], capture_output=True, text=True, check=False, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    results = build_two_cohorts(tmp_path / "results")["alpha-good"].parents[1]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HISTOVIZ_SAMPLE_DATA", "HISTOVIZ_CONFIGS")}
    (tmp_path / "elsewhere").mkdir()
    r = subprocess.run([str(py), "-c", PROBE, str(results), str(venv)], capture_output=True, text=True, check=False,
                       cwd=tmp_path / "elsewhere", env=env, timeout=900)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-4000:])
    got = json.loads(next(ln for ln in r.stdout.splitlines() if ln.startswith("PROBE"))[5:])
    site = Path(purelib).resolve()
    for key in ("histoviz", "napari_plugin", "app", "reader_module", "sample_data"):
        assert Path(got[key]).resolve().is_relative_to(site), (key, got[key])  # from the wheel, not the checkout
    assert str(site) in got["command"][4] and got["command"][4].endswith("histoviz/dashboard/streamlit_app.py")
    assert "histoviz-0.1.0.dist-info/licenses/LICENSE" in got["files"]
    assert "histoviz-0.1.0.dist-info/licenses/sample_data/real/README.md" in got["files"]
    assert "histoviz/sample_data/real/README.md" in got["files"] and got["panels"] == ["pam50"]
    for page, res in got["pages"].items():
        assert not res["exceptions"] and not res["errors"], (page, res)
        assert res["title"], page
    assert got["pages"]["models"]["charts"] >= 1 and got["pages"]["explorer"]["charts"] >= 1
    assert got["npe2"]["name"] == "histoviz" and got["npe2"]["readers"] and got["npe2"]["samples"]
