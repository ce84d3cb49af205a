"""README "napari": the captions of the plugin's pictures (``docs/napari_screenshots.py``)."""

from __future__ import annotations

from typing import Any


def render_survival(data: dict[str, Any]) -> str:
    """The synthetic sample's first map and the slide-level survival the panel shows."""
    first = str(data["first_map"]).replace("survival_probability:", "survival at ")
    return (f"*The synthetic sample (`docs/napari_screenshots.py`, numbers in `docs/results/napari.json`; "
            f"file `{data['sample']}`): the first map the widget shows is {first}, in the training data's time "
            f"unit; the slide-level panel reads \"{data['slide_survival']}\".*")


def render_regions(data: dict[str, Any]) -> str:
    """Two regions' difference in the shown map, with its bootstrap interval."""
    r = data["regions"]
    lo, hi = r["ci"]
    return (f"*Regions on `{r['map']}`: the region drawn on the highest-valued patches minus the one on the "
            f"lowest ({r['n'][0]} and {r['n'][1]} patches): difference {r['difference']:+.3f}, 95% bootstrap "
            f"interval [{lo:+.3f}, {hi:+.3f}] over patches.*")


def render_two_models(data: dict[str, Any]) -> str:
    """Two models' predictions of one gene on one slide."""
    t = data["two_models"]
    return (f"*Two models on one slide: CPNN's and a ridge model's predicted {t['gene']} on the training data's "
            f"scale (log10(1 + CP10k)), sharing contrast limits (Pearson "
            f"{t['pearson_cpnn_ridge_over_patches']:.2f} between them across the slide's patches).*")


def render_finer(data: dict[str, Any]) -> str:
    """The finer map from overlapping tiles."""
    f = data["finer"]
    return (f"*Finer map: {f['patches']} tiles of {f['tile_size_level0']} px at a {f['stride_level0']}-px stride "
            f"(`--overlap 0.5`), each {f['stride_level0']}-px cell the mean of the tiles covering it, smoothed, "
            f"thresholded at 0.5 with its contour lines ({f['contour_lines']} drawn).*")


def render_mpp(data: dict[str, Any]) -> str:
    """The warning for an entered resolution that differs from the slide's own."""
    return (f"*A resolution entered for the SVS that differs from the one it records; the slide is redrawn at "
            f"the entered scale and the panel warns: \"{data['mpp_warning']}\".*")
