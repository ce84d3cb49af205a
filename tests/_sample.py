"""The napari sample made by real trained models (:func:`histoviz.samples.synthetic_sample`),
built once and kept in pytest's cache folder across sessions.

Building it trains CPNN and the joint ABMIL grade + survival model on a small synthetic cohort
(about a minute on 2 cores). The cache key includes a digest of ``histoviz/samples.py``, so a
changed recipe is rebuilt; a clean clone (CI) always builds it once.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest

_LOCK = threading.Lock()


def sample_cache_dir(config: pytest.Config) -> Path:
    """Persistent ``$HISTOVIZ_CACHE`` for the sample (``.pytest_cache/d/histoviz-<digest>``;
    the sample itself lives in its ``samples/`` folder, as under the default cache)."""
    import histoviz.samples

    digest = hashlib.sha1(Path(histoviz.samples.__file__).read_bytes()).hexdigest()[:10]
    cache = getattr(config, "cache", None)
    if cache is None:  # pytest -p no:cacheprovider: the user cache folder instead
        from histoviz.datasets import default_cache_dir

        d = default_cache_dir() / "pytest" / f"histoviz-{digest}"
        d.mkdir(parents=True, exist_ok=True)
        return d
    return Path(cache.mkdir(f"histoviz-{digest}"))


def synthetic_sample(config: pytest.Config):
    """Build (or find) the sample; returns :class:`histoviz.samples.Sample`."""
    from histoviz.samples import synthetic_sample as build

    with _LOCK:
        return build(sample_cache_dir(config) / "samples")
