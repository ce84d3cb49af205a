"""The script ``histoviz dashboard ROOT`` serves (``streamlit run`` of this file)."""

from histoviz.dashboard import run_app

run_app()
