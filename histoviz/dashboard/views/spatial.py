"""Spatial page: the model x gene-set table of a spot-level run and a measured-vs-predicted spot map.

Thin over :class:`histoviz.viz.spots.SpotRunView` (the table, paired differences, held-out
values) and :func:`histoviz.viz.spots.spot_figure` (spots as circles of the true diameter on the
slide thumbnail, measured beside predicted).
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from histoviz.dashboard import common as c


@st.cache_resource(max_entries=4)
def _run_view(path: str, stamp: float):
    from histoviz.viz.spots import SpotRunView

    return SpotRunView(path)


def _view(path: Path):
    return c.attempt(_run_view, str(path), c.mtime(path / "run.json"))


@st.cache_data(ttl=30, show_spinner=False)
def _spot_runs(found: tuple[str, ...]) -> list[str]:
    import json

    out = []
    for d in found:
        try:
            if json.loads((Path(d) / "run.json").read_text()).get("level") == "spot":
                out.append(d)
        except (OSError, ValueError):
            continue
    return out


st.title("Spatial transcriptomics (spots)")
spot_runs = _spot_runs(tuple(c.run_dirs()))
if not spot_runs:
    st.info("No spot-level run under the results root. `make demo` trains one under `demo_out/runs/spatial`; or "
            "run `histoviz train training/configs/st_cmrcnet.yaml --out runs/st` under the root.")
    st.stop()
with st.sidebar:
    st.subheader("Spot run")
    pick = st.selectbox("Run directory", [c.rel(p) for p in spot_runs], key="spot_run",
                        help="Spot-level runs under the results root (trained from a data.spots config).")
run_path = c.under(pick)
if run_path is None:
    st.stop()
rv = _view(run_path)
if rv is None:
    st.stop()

st.subheader("Held-out correlation by model and gene set")
metric = st.radio("Metric", ["pearson", "spearman", "mse", "gene_corr_preservation"], horizontal=True,
                  key="spot_metric")
table = c.attempt(rv.table, metric)
if table is not None:
    st.dataframe(table, key="spot_table")
st.caption("Leave-one-sample-out (patient-out): mean ± std over held-out samples of each sample's mean over the "
           "set's genes (the per-gene value is computed across the held-out sample's spots). HVG / HEG sets are "
           "chosen on the training samples of each fold. `n/a`: undefined (a constant prediction has no "
           "correlation). `mse` is on the normalised log1p scale.")
paired = c.attempt(rv.paired, None, metric if metric != "gene_corr_preservation" else "pearson")
if paired is not None and not paired.empty:
    with st.expander(f"Paired differences vs {rv.main_labels[0]} (per held-out sample)"):
        st.dataframe(paired, hide_index=True, key="spot_paired")

st.subheader("Measured vs predicted spots (held-out)")
samples = c.attempt(rv.samples)
held = c.attempt(rv.heldout)
if samples is None or held is None:
    st.stop()
col1, col2, col3 = st.columns(3)
sample = col1.selectbox("Held-out sample", sorted(held["sample_id"].unique()), key="spot_sample")
genes = sorted(held.loc[held["sample_id"] == sample, "target"].unique())
gene = col2.selectbox("Gene", genes, key="spot_gene")
model = col3.selectbox("Model", rv.main_labels, key="spot_model")
view = c.attempt(rv.view, sample, gene, model)
if view is not None:
    from histoviz.viz.spots import spot_figure

    fig = c.attempt(spot_figure, view, gene, title=f"{sample}: {gene} ({model}, held out)")
    if fig is not None:
        st.plotly_chart(fig, key="spot_map")
    r = view.pearson(gene)
    st.caption(f"{len(view.centres)} spots, circles of the true spot diameter ({view.diameter:.0f} px). Pearson "
               f"across these spots: {r:.3f}. Each panel has its own colour range (retrieval averages are smoother "
               "than single-spot measurements)." if r == r else f"{len(view.centres)} spots.")
    if view.slide_path is None:
        st.warning("The sample's slide is not on this machine: spots are drawn without the tissue.")
