"""Sample data and demo cohorts (as ``scanpy.datasets``): the one home for their paths.

- :func:`sample_data_dir`: the real sample slides shipped in the repository's
  ``sample_data/real`` (or ``$HISTOVIZ_SAMPLE_DATA``);
- :func:`shipped_file`: one of them by file name, with a clear error when it is not here;
- :func:`resource_dir`: ``sample_data/`` itself (PROGENy network, gene-group tables, ...);
- :func:`config_dir`: the shipped experiment configs (``training/configs/``, or
  ``$HISTOVIZ_CONFIGS``), the templates of ``histoviz import``;
- :func:`default_cache_dir`: where generated samples are cached (``$HISTOVIZ_CACHE`` or
  ``~/.cache/histoviz``);
- :data:`SYNTHETIC_PRESETS` / :func:`synthetic_preset`: named synthetic cohorts (``demo``: 40
  patients on large slides, the omics demo; ``power``: 200 patients on small slides, for
  comparisons with enough held-out patients and for outcomes).

Nothing here downloads anything.
"""

from __future__ import annotations

import os
from pathlib import Path

from histoviz.errors import DataError

__all__ = ["SYNTHETIC_PRESETS", "config_dir", "default_cache_dir", "resource_dir", "sample_data_dir",
           "shipped_file", "synthetic_preset"]

#: Named synthetic cohorts (keyword arguments of :func:`histoviz.data.synthetic.make_synthetic_cohort`).
SYNTHETIC_PRESETS: dict[str, dict] = {
    "demo": {"n_slides": 48, "slide_size": (1536, 1536), "seed": 0},
    "power": {"n_slides": 240, "slide_size": (768, 768), "seed": 1, "spatial_fraction": 0.0},
}

# histoviz/sample_data: in a checkout a link to the repository's sample_data/, in a wheel a copy
_REPO_SAMPLE = Path(__file__).resolve().parent / "sample_data"
_REPO = Path(__file__).resolve().parents[1]


def sample_data_dir() -> Path | None:
    """The real sample slides: ``$HISTOVIZ_SAMPLE_DATA`` if set, else the repository's
    ``sample_data/real`` (shipped in the wheel too; ``None`` when neither exists)."""
    env = os.environ.get("HISTOVIZ_SAMPLE_DATA")
    for p in ([Path(env)] if env else []) + [_REPO_SAMPLE / "real"]:
        if p.is_dir():
            return p
    return None


def resource_dir() -> Path | None:
    """The repository's ``sample_data/`` folder (tables shipped with histoviz), or ``None``."""
    return _REPO_SAMPLE if _REPO_SAMPLE.is_dir() else None


def shipped_file(name: str = "CMU-1-Small-Region.svs") -> Path:
    """Path of a real file shipped in ``sample_data/real`` (a slide, an image, a Visium folder).

    Raises
    ------
    DataError
        The file is not here (names where it looked and what to set).
    """
    d = sample_data_dir()
    p = d / name if d is not None else None
    if p is None or not p.exists():
        raise DataError(
            f"the shipped file {name} is not here (looked in $HISTOVIZ_SAMPLE_DATA and the repository's "
            "sample_data/real); set HISTOVIZ_SAMPLE_DATA to its folder"
        )
    return p


def config_dir() -> Path:
    """The shipped experiment configs: ``$HISTOVIZ_CONFIGS`` if set, else the repository's
    ``training/configs``.

    Raises
    ------
    DataError
        Neither exists (an installed wheel without the repository): says what to set.
    """
    env = os.environ.get("HISTOVIZ_CONFIGS")
    for p in ([Path(env)] if env else []) + [_REPO / "training" / "configs"]:
        if p.is_dir():
            return p
    raise DataError("the shipped experiment configs (training/configs/*.yaml of the histoviz repository) are not "
                    "here; set HISTOVIZ_CONFIGS to that folder")


def default_cache_dir() -> Path:
    """``$HISTOVIZ_CACHE`` or ``$XDG_CACHE_HOME/histoviz`` (``~/.cache/histoviz``)."""
    env = os.environ.get("HISTOVIZ_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "histoviz"


def synthetic_preset(name: str) -> dict:
    """Keyword arguments of a named synthetic cohort (see :data:`SYNTHETIC_PRESETS`).

    Raises
    ------
    DataError
        Unknown preset (lists the known ones).
    """
    if name not in SYNTHETIC_PRESETS:
        raise DataError(f"unknown synthetic preset {name!r}; known: {sorted(SYNTHETIC_PRESETS)}")
    return dict(SYNTHETIC_PRESETS[name])
