"""The napari samples as a newcomer meets them: opened in a fresh process with an empty cache.

:func:`open_in_fresh_process` runs a stand-in for the viewer's process: a new Python that opens
one sample through :func:`histoviz.demo.samples.open_sample` (which builds it, when the cache is
empty, in yet another process) and reads it with the napari plugin's reader, reporting the
build's progress steps and whether torch ever loaded in it.

:func:`synthetic_sample` is the session's synthetic sample (models trained here, about a minute
on 2 cores), kept in pytest's cache folder across sessions under a digest of
``histoviz/demo/samples.py`` (a changed recipe is rebuilt; a clean clone, CI, builds it once).
It is built by :func:`open_in_fresh_process` into that empty folder, and what that first open
reported is kept beside it (:func:`first_open_record`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
_LOCK = threading.Lock()
_OPENER = r"""
import json, sys
from histoviz.demo.samples import cached_sample, open_sample
from napari_plugin._reader import read_predictions_file

kind = sys.argv[1]
was_empty = cached_sample(kind) is None
steps = []
s = open_sample(kind, on_progress=lambda k, n, text: steps.append([k, n, text]))
layers = read_predictions_file(str(s.predictions))
print("RESULT " + json.dumps({
    "was_empty": was_empty, "steps": steps, "torch": "torch" in sys.modules,
    "layers": [meta.get("name") for _, meta, _ in layers], "slide": str(s.slide),
    "predictions": str(s.predictions), "runs": {k: str(v) for k, v in s.runs.items()}}))
"""


def open_in_fresh_process(kind: str, cache_home: Path) -> dict[str, Any]:
    """Open sample ``kind`` in a new Python process with ``HISTOVIZ_CACHE=cache_home``."""
    env = {**os.environ, "HISTOVIZ_CACHE": str(cache_home)}
    r = subprocess.run([sys.executable, "-c", _OPENER, kind], env=env, cwd=ROOT, capture_output=True, text=True,
                       check=False)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-4000:])
    return json.loads(next(ln for ln in r.stdout.splitlines() if ln.startswith("RESULT "))[7:])


def sample_cache_dir(config: pytest.Config) -> Path:
    """Persistent ``$HISTOVIZ_CACHE`` for the sample (``.pytest_cache/d/histoviz-<digest>``;
    the sample itself lives in its ``samples/`` folder, as under the default cache)."""
    import histoviz.demo.samples

    digest = hashlib.sha1(Path(histoviz.demo.samples.__file__).read_bytes()).hexdigest()[:10]
    cache = getattr(config, "cache", None)
    if cache is None:  # pytest -p no:cacheprovider: the user cache folder instead
        from histoviz.datasets import default_cache_dir

        d = default_cache_dir() / "pytest" / f"histoviz-{digest}"
        d.mkdir(parents=True, exist_ok=True)
        return d
    return Path(cache.mkdir(f"histoviz-{digest}"))


def synthetic_sample(config: pytest.Config):
    """The session's synthetic sample (:class:`histoviz.demo.samples.Sample`), opened in a fresh
    process into an empty cache folder when it is not there yet."""
    from histoviz.demo.samples import cached_sample

    home = sample_cache_dir(config)
    with _LOCK:
        if cached_sample("synthetic", home / "samples") is None or not (home / "first-open.json").is_file():
            shutil.rmtree(home / "samples", ignore_errors=True)  # a partial build is not an empty cache
            (home / "first-open.json").unlink(missing_ok=True)
            record = open_in_fresh_process("synthetic", home)
            (home / "first-open.json").write_text(json.dumps(record))
        return cached_sample("synthetic", home / "samples")


def first_open_record(config: pytest.Config) -> dict[str, Any]:
    """What the fresh process that built the session's synthetic sample reported."""
    synthetic_sample(config)
    return json.loads((sample_cache_dir(config) / "first-open.json").read_text())
