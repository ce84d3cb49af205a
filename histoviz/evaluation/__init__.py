"""Metrics, fold summaries and run comparison.

``histoviz.evaluation.metrics`` holds the per-target / per-patient correlations, top-k target
selection and the c-index wrapper; ``histoviz.evaluation.compare`` reads run directories
(``metrics.parquet``) into one comparison table.
"""

from __future__ import annotations

from histoviz.evaluation.metrics import (
    OPTIMISTIC_LABEL,
    columnwise_pearson,
    columnwise_spearman,
    per_sample_correlation,
    per_target_correlation,
    select_topk,
    summarise_over_folds,
    topk_best_predicted,
)
from histoviz.evaluation.pathgen import pathgen_settings, synthesis_quality
from histoviz.evaluation.survival import concordance_index

__all__ = [
    "OPTIMISTIC_LABEL",
    "columnwise_pearson",
    "columnwise_spearman",
    "concordance_index",
    "per_sample_correlation",
    "pathgen_settings",
    "per_target_correlation",
    "select_topk",
    "summarise_over_folds",
    "synthesis_quality",
    "topk_best_predicted",
]
