"""TrojanScope dashboard: ``streamlit run app.py``.

The entry point only routes: each page is a file in ``pages/`` (thin: widgets -> library call ->
figure). ``st.navigation`` names them in the sidebar ("Home", not the file name; Material icons,
which need no emoji font) and gives each a stable URL (``/Probe``, ``/Attack_Lab``, ...).
"""

from __future__ import annotations

import os

import streamlit as st

from trojanscope.processes import with_openmp_defaults  # imports no torch

# Jobs train beside the dashboard on the same cores: OpenMP threads that sleep instead of spinning
# while they wait keep both usable (trojanscope.processes.background_env). Set before torch loads.
with_openmp_defaults(os.environ)

from ui.common import ICON  # noqa: E402 - after the environment is set

PAGES = [
    # (file, title, icon, url path)
    ("pages/0_Home.py", "Home", ":material/home:", "Home"),
    ("pages/1_Probe.py", "Probe", ":material/troubleshoot:", "Probe"),
    ("pages/2_Trigger_Anatomy.py", "Trigger Anatomy", ":material/hub:", "Trigger_Anatomy"),
    ("pages/3_Embedding_Swap.py", "Embedding Swap", ":material/swap_horiz:", "Embedding_Swap"),
    ("pages/4_Attack_Lab.py", "Attack Lab", ":material/science:", "Attack_Lab"),
    ("pages/5_Purify.py", "Purify", ":material/cleaning_services:", "Purify"),
    ("pages/6_Scan.py", "Scan", ":material/radar:", "Scan"),
    ("pages/7_Runs.py", "Runs", ":material/list_alt:", "Runs"),
]

st.set_page_config(page_title="TrojanScope", page_icon=ICON, layout="wide")
st.navigation([st.Page(path, title=title, icon=icon, url_path=url, default=i == 0)
               for i, (path, title, icon, url) in enumerate(PAGES)]).run()
