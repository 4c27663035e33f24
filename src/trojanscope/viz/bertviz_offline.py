"""BertViz head view and model view that render without the internet.

BertViz's HTML loads require.js, d3 and jQuery from cdnjs. The project's set-up
(``scripts/fetch_js.sh``, run by ``make``) downloads the same libraries from the npm registry into
``static/vendor/``, which Streamlit serves at ``/app/static/vendor/``; this module rewrites the
URLs to point there.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np

VENDOR_FILES = {"require": "require.js", "d3": "d3.min.js", "jquery": "jquery.min.js"}
STATIC_URL = "/app/static/vendor"


def vendor_dir() -> Path:
    return Path(__file__).resolve().parents[3] / "static" / "vendor"


def vendor_missing(directory: Path | None = None) -> list[str]:
    directory = directory or vendor_dir()
    return [name for name in VENDOR_FILES.values() if not (directory / name).is_file()]


def localize(html: str, base_url: str = STATIC_URL) -> str:
    """Replace cdnjs URLs of require.js, d3 and jQuery with ``base_url`` copies."""
    html = re.sub(r"https://cdnjs\.cloudflare\.com/ajax/libs/require\.js/[\d.]+/require\.min\.js",
                  f"{base_url}/require.js", html)
    html = re.sub(r"https://cdnjs\.cloudflare\.com/ajax/libs/d3/[\d.]+/d3\.min", f"{base_url}/d3.min", html)
    html = re.sub(r"https://cdnjs\.cloudflare\.com/ajax/libs/jquery/[\d.]+/jquery\.min", f"{base_url}/jquery.min", html)
    return html


def bertviz_html(attentions: np.ndarray, tokens: Sequence[str], view: str = "head",
                 base_url: str = STATIC_URL, decimals: int = 3) -> str:
    """HTML of BertViz's ``head`` or ``model`` view for one sentence.

    ``attentions``: ``[layers, heads, tokens, tokens]`` (e.g. ``ProbeSide.attentions``). Values are
    rounded to ``decimals`` places: BertViz embeds them as JSON, and full float precision makes the
    page several megabytes for a 30-token sentence.
    """
    import torch
    from bertviz import head_view, model_view

    rounded = np.round(np.asarray(attentions, dtype=np.float64), decimals)
    att = tuple(torch.from_numpy(np.ascontiguousarray(a))[None] for a in rounded)
    fn = {"head": head_view, "model": model_view}.get(view)
    if fn is None:
        raise ValueError(f"unknown BertViz view {view!r}; allowed: head, model")
    html = fn(att, list(tokens), html_action="return")
    text = html.data if hasattr(html, "data") else str(html)
    if "require.js" not in text:  # bertviz versions that leave loading require.js to the notebook
        text = f'<script src="{base_url}/require.js"></script>' + text
    return localize(text, base_url)
