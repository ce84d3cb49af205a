"""README "Benchmarks": the dashboard at cohort scale (``bench/bench_dashboard.py``)."""

from __future__ import annotations

from typing import Any


def render(data: dict[str, Any]) -> str:
    """The Models page's warm and cold load against a raw parquet read, and its peak memory."""
    mem = data["memory"]
    m = data["machine"]
    return (
        f"Dashboard at cohort scale (`python -m bench --only dashboard`; {m.get('cpus')} CPUs, shared machine, "
        f"`bench/reference/dashboard_2cpu_host.json`): two runs of {data['slides']:,} slides x {data['genes']:,} "
        f"genes ({data['heldout_rows_per_run'] / 1e6:.0f} M held-out rows each). A raw `pd.read_parquet` of the "
        f"files the Models and Targets pages read took {data['raw_read_s']:.1f} s; the Models page itself "
        f"(rendered by Streamlit's `AppTest`) reran warm in {data['models_page_warm_s']:.2f} s (ratio "
        f"{data['ratio_warm']:.3f}, target <= {data['target_ratio_warm']:g}) and took "
        f"{data['models_page_cold_s']:.1f} s on the first, cold visit; the Targets page's cached calls (scores, "
        f"targets table, one gene's held-out rows) reran in {data['targets_warm_s']:.2f} s. In a fresh process, "
        f"the Models page over {mem['runs']} runs with {mem['metric_rows_per_run']:,} metric rows each peaked "
        f"at {mem['peak_mb']:.0f} MB resident ({mem['after_imports_mb']:.0f} MB of it the process after "
        "importing Streamlit, pandas, pyarrow, plotly and histoviz)."
    )
