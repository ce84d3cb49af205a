"""Pages of the histoviz Streamlit dashboard (``streamlit run app.py``); thin over histoviz."""
