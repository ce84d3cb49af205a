"""``streamlit run app.py`` from a source checkout: the histoviz dashboard over the working
directory (``histoviz dashboard ROOT`` serves the same pages over ROOT). The pages live in
:mod:`histoviz.dashboard`."""

from histoviz.dashboard import run_app

run_app()
