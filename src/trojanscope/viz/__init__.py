"""Figure builders (plotly) and offline BertViz. No Streamlit here: figures and HTML strings out."""
