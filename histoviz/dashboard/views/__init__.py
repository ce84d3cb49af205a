"""Page scripts of the histoviz dashboard, run by Streamlit (never imported): each reads through
:mod:`histoviz.dashboard.common` and draws with :mod:`histoviz.viz.figures`."""
