"""BertViz head view and model view that render without the internet.

BertViz's HTML loads require.js, d3 and jQuery from cdnjs. The project's set-up
(``scripts/fetch_js.sh``, run by ``make``) downloads the same libraries from the npm registry into
``static/vendor/`` of the checkout (beside ``app.py``), which Streamlit serves at ``/app/static/vendor/``;
this module rewrites the URLs to point there. The JavaScript is not package data: it belongs to the dashboard,
which runs from a checkout; an installed wheel has no ``static/vendor/`` (:func:`vendor_missing` lists every file,
:func:`bertviz_html` raises :class:`~trojanscope.errors.TrojanScopeError`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np

from trojanscope.dirs import checkout_root
from trojanscope.errors import TrojanScopeError

VENDOR_FILES = {"require": "require.js", "d3": "d3.min.js", "jquery": "jquery.min.js"}
STATIC_URL = "/app/static/vendor"
FETCH_HINT = "run `make setup` in the checkout (scripts/fetch_js.sh fetches them from the npm registry)"


def vendor_dir() -> Path:
    """The checkout's ``static/vendor/``; a :class:`TrojanScopeError` when the package runs from an installed wheel
    (no checkout, so nothing that Streamlit serves)."""
    root = checkout_root()
    if root is None:
        raise TrojanScopeError("BertViz's JavaScript (static/vendor/) is served by the dashboard from a source "
                               "checkout, and this trojanscope is an installed package: run the dashboard from a "
                               f"checkout and {FETCH_HINT}")
    return root / "static" / "vendor"


def vendor_missing(directory: Path | None = None) -> list[str]:
    """The files of :data:`VENDOR_FILES` absent from ``directory`` (the checkout's ``static/vendor/``; all of
    them when there is no checkout)."""
    if directory is None:
        try:
            directory = vendor_dir()
        except TrojanScopeError:
            return list(VENDOR_FILES.values())
    return [name for name in VENDOR_FILES.values() if not (directory / name).is_file()]


def require_vendor() -> Path:
    """The checkout's ``static/vendor/`` holding every file BertViz loads, else a :class:`TrojanScopeError` saying
    how to get them."""
    directory = vendor_dir()
    missing = vendor_missing(directory)
    if missing:
        raise TrojanScopeError(f"BertViz needs local copies of {', '.join(missing)} in {directory}: {FETCH_HINT}")
    return directory


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
    page several megabytes for a 30-token sentence. With the default ``base_url`` (the checkout's
    ``static/vendor/``, served by Streamlit) a :class:`TrojanScopeError` when those files are absent
    (:func:`require_vendor`); a caller that passes its own ``base_url`` serves them itself.
    """
    if base_url == STATIC_URL:
        require_vendor()
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
    text = one_based(text)
    if view == "model":
        text = FIT_WIDTH + text
    return localize(text, base_url)


# BertViz labels layers and heads by their 0-based indices; the other charts count from 1 (labels only: its
# scripts index the attention by position in these lists, not by the numbers)
_INDEX_LISTS = re.compile(r'"(include_layers|include_heads)": \[([\d, ]*)\]')


def one_based(html: str) -> str:
    """BertViz's HTML with its layers and heads numbered from 1, like every other chart of the dashboard."""
    def shift(m: re.Match) -> str:
        numbers = [int(x) + 1 for x in m.group(2).split(",") if x.strip()]
        return f'"{m.group(1)}": [{", ".join(map(str, numbers))}]'

    return _INDEX_LISTS.sub(shift, html)


# The model view draws a fixed 970-pixel-wide SVG: in a narrower frame its last heads were cut off. This scales each
# SVG to the frame's width (its viewBox follows the size BertViz sets, also when a click opens the detail view).
FIT_WIDTH = """<script>
(function () {
  function fit() {
    document.querySelectorAll("svg").forEach(function (s) {
      var w = +s.getAttribute("width"), h = +s.getAttribute("height");
      if (!w || !h) return;
      var box = "0 0 " + w + " " + h;
      if (s.getAttribute("viewBox") !== box) s.setAttribute("viewBox", box);
      s.style.width = "100%"; s.style.maxWidth = w + "px"; s.style.height = "auto";
    });
  }
  new MutationObserver(fit).observe(document.documentElement,
    {subtree: true, childList: true, attributes: true, attributeFilter: ["width", "height"]});
})();
</script>
"""
