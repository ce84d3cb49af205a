"""The histoviz dashboard for scientists: Streamlit pages over a results folder.

``histoviz dashboard ROOT`` serves :data:`APP` (``streamlit run`` of this package's
``streamlit_app.py``); ``streamlit run app.py`` from a source checkout runs the same pages.
The pages are scripts in ``views/`` (thin: they read through :mod:`histoviz.viz.results` and
draw with :mod:`histoviz.viz.figures`); :mod:`histoviz.dashboard.common` holds their cached
loaders. Nothing here is imported by the library.

Pages:

- **Models**: the runs of one cohort and split (others listed apart), per-target score
  distributions, the comparison table, the paired comparison of any two runs;
- **Targets**: every target with each model's score (search, gene panels); predicted vs true
  across held-out patients, and the target's map where a prediction file has it;
- **Outcomes**: Kaplan-Meier of predicted risk groups, c-index and AUC per fold, confusion
  matrix, calibration (reliability diagram, ECE, survival at a horizon vs Kaplan-Meier by risk
  decile), conformal coverage and set size per subgroup;
- **Cohort**: patients, slides, modalities per patient, tiles per slide, thumbnails, survival;
- **Explorer**: gene query, measured vs predicted heatmap, clinical filters, two groups compared;
- **Slide**: a slide of the chosen cohort with its own prediction maps, slide-level grade set
  and risk interval, and the napari command for the same view;
- **Spatial**: spot-level runs (model x gene-set table, paired differences, measured vs
  predicted spots).

Every path the pages read lies under the results root (``$HISTOVIZ_RESULTS_ROOT``, set by
``histoviz dashboard ROOT``; else the working directory); the server binds localhost.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["APP", "PAGES", "page_path", "run_app"]

#: The Streamlit script that ``histoviz dashboard`` serves.
APP = Path(__file__).resolve().with_name("streamlit_app.py")

#: ``page -> (title, icon)`` in navigation order; the first is the default page.
PAGES: dict[str, tuple[str, str]] = {
    "models": ("Models", ":material/leaderboard:"),
    "targets": ("Targets", ":material/genetics:"),
    "outcomes": ("Outcomes", ":material/monitor_heart:"),
    "cohort": ("Cohort", ":material/groups:"),
    "explorer": ("Explorer", ":material/query_stats:"),
    "slide": ("Slide", ":material/biotech:"),
    "spatial": ("Spatial", ":material/scatter_plot:"),
}


def page_path(name: str) -> Path:
    """The script of page ``name`` (``"models"``, ...)."""
    return APP.parent / "views" / f"{name}.py"


def run_app() -> None:
    """Build the navigation and run the chosen page (call from a Streamlit script)."""
    import streamlit as st

    from histoviz._version import __version__
    from histoviz.dashboard import common as c

    st.set_page_config(page_title="histoviz", page_icon=":microscope:", layout="wide")
    pages = [st.Page(page_path(name), title=title, icon=icon, default=i == 0)
             for i, (name, (title, icon)) in enumerate(PAGES.items())]
    nav = st.navigation(pages)
    with st.sidebar:
        c.sidebar()
        st.caption(f"histoviz {__version__}")
    nav.run()
