"""Session-wide synthetic cohort with morphology feature bags, for the model tests.

Built once per test session under pytest's base temp folder; every test module that needs it
calls :func:`model_cohort` (through its own fixture), and a second call finds the finished
folder and returns at once (``make_synthetic_cohort`` and ``embed_cohort`` both skip complete
outputs), so the ~1 minute of generation and embedding is paid once per session.

The cohort: 48 slides of 1536 x 1536 px at 0.5 um/px (40 patients, 8 with two slides),
200 genes, 40 proteins, 30 miRNAs, 14 pathways; some patients miss the non-gene layers;
features: the 51-d "morphology" encoder on 224 px tiles at 0.5 um/px.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

N_SLIDES = 48
SLIDE_SIZE = 1536
SEED = 0
_LOCK = threading.Lock()


@dataclass(frozen=True)
class ModelCohort:
    """Paths of the shared cohort."""

    root: Path
    features: Path

    @property
    def cohort_csv(self) -> Path:
        """The cohort table."""
        return self.root / "cohort.csv"

    def config(self, name: str, model: str, *, params: dict | None = None, modalities: tuple[str, ...] = (
            "gene", "protein", "mirna", "pathway"), **training: Any) -> dict[str, Any]:
        """An experiment-config dict on this cohort (4 folds, no final model by default)."""
        omics = {
            "gene": {"path": str(self.root / "omics/gene.h5ad"), "normalize": "total", "transform": "log10p1",
                     "drop_median_zero": True, "standardize": True},
            "protein": {"path": str(self.root / "omics/protein.h5ad"), "impute": "median", "standardize": True},
            "mirna": {"path": str(self.root / "omics/mirna.h5ad"), "standardize": True},
            "pathway": {"path": str(self.root / "omics/pathway.h5ad"), "standardize": True},
        }
        return {
            "name": name,
            "seed": 0,
            "data": {"cohort": str(self.cohort_csv), "features": str(self.features),
                     "omics": {m: omics[m] for m in modalities}},
            "model": {"name": model, "params": dict(params or {})},
            "training": {"epochs": 100, "final_model": False, **training},
            "evaluation": {"n_folds": 4, "topk": [20], "topk_criteria": ["variance", "mean"]},
        }


def model_cohort(tmp_path_factory: pytest.TempPathFactory) -> ModelCohort:
    """Build (or find) the session cohort and its feature bags."""
    from histoviz.data.cohort import read_cohort
    from histoviz.data.synthetic import make_synthetic_cohort
    from histoviz.features.cohort import embed_cohort

    root = tmp_path_factory.getbasetemp() / "histoviz_model_cohort"
    feats = root / "features" / "morphology"
    with _LOCK:
        c = make_synthetic_cohort(root, n_slides=N_SLIDES, seed=SEED, slide_size=(SLIDE_SIZE, SLIDE_SIZE))
        res = embed_cohort(read_cohort(c.cohort_csv), feats, encoder="morphology", workers=0, progress=False)
        if res.failed:
            raise RuntimeError(f"embedding the test cohort failed: {res.summary()}")
    return ModelCohort(root, feats)


OUTCOME_SLIDES = 240
OUTCOME_SIZE = 768
OUTCOME_SEED = 1


@dataclass(frozen=True)
class OutcomeCohort:
    """Paths of the session's outcome cohort (200 patients, grade and survival from tumour content)."""

    root: Path
    features: Path

    @property
    def cohort_csv(self) -> Path:
        """The cohort table."""
        return self.root / "cohort.csv"

    def config(self, name: str, model: str, *, params: dict | None = None, outcomes: tuple[str, ...] = (
            "grade", "survival"), evaluation: dict | None = None, **training: Any) -> dict[str, Any]:
        """An outcome experiment config on this cohort (4 folds, 20% calibration, no final model)."""
        specs = {"grade": {"column": "grade", "classes": [1, 2, 3, 4]},
                 "survival": {"time": "time", "event": "event", "n_bins": 4}}
        return {
            "name": name, "seed": 0,
            "data": {"cohort": str(self.cohort_csv), "features": str(self.features),
                     "outcomes": {k: specs[k] for k in outcomes}},
            "model": {"name": model, "params": dict(params or {})},
            "training": {"epochs": 60, "lr": 5e-4, "batch_size": 16, "patience": 10, "val_fraction": 0.15,
                         "final_model": False, **training},
            "evaluation": {"n_folds": 4, "calibration_fraction": 0.2, "conformal": {"alpha": 0.1},
                           **(evaluation or {})},
        }


def outcome_cohort(tmp_path_factory: pytest.TempPathFactory) -> OutcomeCohort:
    """Build (or find) the session outcome cohort and its morphology bags."""
    from histoviz.data.cohort import read_cohort
    from histoviz.data.synthetic import make_synthetic_cohort
    from histoviz.features.cohort import embed_cohort

    root = tmp_path_factory.getbasetemp() / "histoviz_outcome_cohort"
    feats = root / "features" / "morphology"
    with _LOCK:
        c = make_synthetic_cohort(root, n_slides=OUTCOME_SLIDES, seed=OUTCOME_SEED,
                                  slide_size=(OUTCOME_SIZE, OUTCOME_SIZE), spatial_fraction=0.0)
        res = embed_cohort(read_cohort(c.cohort_csv), feats, encoder="morphology", workers=0, progress=False)
        if res.failed:
            raise RuntimeError(f"embedding the outcome cohort failed: {res.summary()}")
    return OutcomeCohort(root, feats)
