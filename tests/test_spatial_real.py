"""Real-image check on the shipped Visium sample (100 spots): ridge on a real encoder's features
(ImageNet EfficientNet-Lite0) against a permutation control across spots.

What the data show (numbers in the report and the README): the measured top-10 expressed genes
are **not** predicted above the permutation control (about 9 counts per spot, 100 random spots
of one homogeneous tissue, a 600-px low-res image: 13.7 um/px). The test therefore asserts the
part that must hold on these real pixels: expression simulated from a measured property of each
spot's own patch (haematoxylin density, :func:`histoviz.data.synthetic.simulated_labels_for_tiles`)
is predicted above the 95th percentile of the permutation null, and the measured genes are
scored by the same procedure (their value is recorded, not required to pass).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def visium_features(tmp_path_factory):
    from histoviz.data.spatial import (
        PatchSpec,
        embed_spot_sample,
        load_spot_sample,
        spot_grid,
    )
    from histoviz.data.st_import import import_spaceranger
    from histoviz.features.encoders import create_encoder
    from histoviz.io import open_slide
    from histoviz.io.featurebag import FeatureBag
    from histoviz.tiling.dataset import read_tile

    d = tmp_path_factory.mktemp("visium")
    s = load_spot_sample(import_spaceranger(ROOT / "sample_data" / "real" / "visium_mini", d / "v.h5ad"))
    patch = PatchSpec(size_um=None, tile_px=224)  # the spot itself (4 px of the low-res image)
    bag = FeatureBag.from_h5(embed_spot_sample(s, create_encoder("efficientnet-lite0"), d / "f.h5", patch, device="cpu"))
    with open_slide(s.slide_path) as r:
        g = spot_grid(s, patch, dimensions=r.dimensions)
        tiles = np.stack([read_tile(r, g, i) for i in range(len(g))])
    assert bag.attrs["encoder"] == "efficientnet-lite0" and bag.features.shape == (100, 1280)
    return s, bag.features, tiles


def test_ridge_on_real_features_beats_the_permutation_control_on_real_pixels(visium_features):
    from histoviz.data.spatial import normalize_log1p
    from histoviz.data.synthetic import simulated_labels_for_tiles
    from histoviz.evaluation.spots import permutation_check

    s, x, tiles = visium_features
    sim, _ = simulated_labels_for_tiles(tiles, n_genes=10, seed=0)
    res = permutation_check(x, sim, n_perm=200)
    assert res["n_spots"] == 100 and res["n_perm"] == 200
    assert res["observed"] > res["null_q95"] + 0.05 and res["p"] <= 0.05, res  # measured: 0.194 vs q95 0.022
    top = np.argsort(-np.asarray(s.counts.sum(0)).ravel())[:10]
    measured = permutation_check(x, normalize_log1p(s.counts)[:, top], n_perm=200)
    assert np.isfinite(measured["observed"]) and 0 < measured["p"] <= 1  # measured: -0.065, null q95 -0.004, p 0.49


def test_permutation_check_finds_planted_signal_and_no_signal():
    from histoviz.evaluation.spots import permutation_check

    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 20))
    y = x[:, :3] @ rng.normal(size=(3, 4)) + rng.normal(0, 0.5, size=(80, 4))
    hit = permutation_check(x, y, n_perm=50)
    assert hit["observed"] > 0.7 and hit["p"] == pytest.approx(1 / 51)
    miss = permutation_check(x, rng.normal(size=(80, 4)), n_perm=50)
    assert miss["p"] > 0.05 and abs(miss["observed"] - miss["null_mean"]) < 3 * miss["null_sd"]
