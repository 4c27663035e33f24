"""TrojanScope: see, make and remove backdoors in BERT-family text classifiers.

The library imports nothing from Streamlit; the dashboard (``app.py``, ``pages/``) and the
``trojanscope`` CLI are thin layers over it.
"""

from trojanscope.errors import TrojanScopeError

__version__ = "0.1.0"
__all__ = ["TrojanScopeError", "__version__"]
