"""histoviz dashboard: ``histoviz dashboard ROOT`` (or ``streamlit run app.py`` from the repository
root, which serves the working directory).

Pages over histoviz (no model, tiling or metric code here):

- **Models**: per-target score distributions per model and modality, the comparison table,
  the paired comparison of any two runs (difference, interval, fold win rate, verdict);
- **Targets**: every target with each model's score (search, gene panels); predicted vs true
  across held-out patients, and the target's map where a prediction file has it;
- **Outcomes**: Kaplan-Meier of predicted risk groups with the numbers at risk, log-rank,
  c-index and AUC per fold, confusion matrix, conformal coverage per subgroup;
- **Cohort**: patients, slides, modalities per patient, tiles per slide, thumbnails, survival;
- **Slide**: a slide, its tissue grid and prediction maps (the value under the cursor), and
  the napari command for the same view;
- **Spatial**: spot-level runs (model x gene-set table, paired differences, measured vs
  predicted spots).

Every path the pages read lies under the results root (``$HISTOVIZ_RESULTS_ROOT``, set by
``histoviz dashboard ROOT``; else the working directory); the server binds localhost.
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:  # app_pages/ must import when run from another folder
    sys.path.insert(0, str(_HERE))

from app_pages import common as c  # noqa: E402

st.set_page_config(page_title="histoviz", page_icon=":microscope:", layout="wide")

pages = [
    st.Page(_HERE / "app_pages" / "models.py", title="Models", icon=":material/leaderboard:", default=True),
    st.Page(_HERE / "app_pages" / "targets.py", title="Targets", icon=":material/genetics:"),
    st.Page(_HERE / "app_pages" / "outcomes.py", title="Outcomes", icon=":material/monitor_heart:"),
    st.Page(_HERE / "app_pages" / "cohort.py", title="Cohort", icon=":material/groups:"),
    st.Page(_HERE / "app_pages" / "slide.py", title="Slide", icon=":material/biotech:"),
    st.Page(_HERE / "app_pages" / "spatial.py", title="Spatial", icon=":material/scatter_plot:"),
]
nav = st.navigation(pages)
with st.sidebar:
    from histoviz._version import __version__

    c.sidebar()
    st.caption(f"histoviz {__version__}")
nav.run()
