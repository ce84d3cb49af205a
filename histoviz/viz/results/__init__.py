"""The dashboard's view of a results folder (no Streamlit here; the app caches these).

One job per module:

- :mod:`~histoviz.viz.results.root`: the results root; every path resolved under it (links out
  of it refused), runs and files found under it;
- :mod:`~histoviz.viz.results.runs`: runs read once, metric tables scanned lazily, the
  cohort / omics / split identity of each run, runs grouped by cohort and split, the runs table;
- :mod:`~histoviz.viz.results.cohorts`: cohort tables, slides keyed by cohort and slide id,
  the prediction files of a slide;
- :mod:`~histoviz.viz.results.tables`: per-target scores and the targets table;
- :mod:`~histoviz.viz.results.outcomes`: outcome tables (per fold, per class, coverage);
- :mod:`~histoviz.viz.results.explorer`: the cohort explorer (measured vs predicted matrix,
  clinical filters, two groups compared);
- :mod:`~histoviz.viz.results.panels`: gene panels;
- :mod:`~histoviz.viz.results.files`: checked CSV reading.

Everything public is re-exported here.
"""

from __future__ import annotations

from histoviz.viz.results.cohorts import (
    CohortTable,
    cohort_slides,
    find_cohorts,
    prediction_header,
    predictions_for_slide,
    read_cohort_table,
    slide_row,
)
from histoviz.viz.results.files import check_csv, read_csv_checked, short_rows
from histoviz.viz.results.outcomes import (
    auc_per_class,
    coverage_table,
    fold_summary,
    fold_values,
    risk_group_sizes,
)
from histoviz.viz.results.panels import gene_panel, list_panels, match_panel, parse_gene_list
from histoviz.viz.results.root import (
    RESULTS_ROOT_ENV,
    OutsideRootError,
    find_files,
    find_runs,
    is_inside,
    resolve_under,
    results_root,
    root_relative,
)
from histoviz.viz.results.runs import (
    CohortGroup,
    MetricsTable,
    RunData,
    RunIdentity,
    cohort_groups,
    load_run,
    load_runs,
    runs_table,
    shared_omics,
)
from histoviz.viz.results.tables import per_target_scores, pooled_by_run, targets_table

__all__ = [
    "RESULTS_ROOT_ENV",
    "CohortGroup",
    "CohortTable",
    "MetricsTable",
    "OutsideRootError",
    "RunData",
    "RunIdentity",
    "auc_per_class",
    "check_csv",
    "cohort_groups",
    "cohort_slides",
    "coverage_table",
    "find_cohorts",
    "find_files",
    "find_runs",
    "fold_summary",
    "fold_values",
    "gene_panel",
    "is_inside",
    "list_panels",
    "load_run",
    "load_runs",
    "match_panel",
    "parse_gene_list",
    "per_target_scores",
    "pooled_by_run",
    "prediction_header",
    "predictions_for_slide",
    "read_cohort_table",
    "read_csv_checked",
    "resolve_under",
    "results_root",
    "risk_group_sizes",
    "root_relative",
    "runs_table",
    "shared_omics",
    "slide_row",
    "short_rows",
    "targets_table",
]
