"""histoviz dashboard: ``streamlit run app.py`` from the repository root.

Three pages over histoviz (no model, tiling or metric code here):

- **Slide**: metadata, tissue grid and prediction maps of one slide;
- **Cohort**: the cohort table, Kaplan-Meier curves with a log-rank test, embedding summary;
- **Models**: the cross-validated comparison of run directories and per-target correlations.

Paths typed into the pages are relative to the working directory.
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:  # app_pages/ must import when run from another folder
    sys.path.insert(0, str(_HERE))

st.set_page_config(page_title="histoviz", page_icon=":microscope:", layout="wide")

pages = [
    st.Page(_HERE / "app_pages" / "slide.py", title="Slide", icon=":material/biotech:", default=True),
    st.Page(_HERE / "app_pages" / "cohort.py", title="Cohort", icon=":material/groups:"),
    st.Page(_HERE / "app_pages" / "models.py", title="Models", icon=":material/leaderboard:"),
    st.Page(_HERE / "app_pages" / "spatial.py", title="Spatial", icon=":material/scatter_plot:"),
]
nav = st.navigation(pages)
with st.sidebar:
    from histoviz._version import __version__

    st.caption(f"histoviz {__version__} · paths are relative to `{Path.cwd()}`")
nav.run()
