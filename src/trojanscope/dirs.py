"""Where TrojanScope keeps what it makes: the runs directory (jobs, the demo pair, the dashboard's outputs); and
where the source checkout is, when the package runs from one (:func:`checkout_root`).

Kept apart and free of heavy imports (no torch): the job store, the demo builder and the dashboard's path checks
all read it here.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

RUNS_DIR_ENV = "TROJANSCOPE_RUNS_DIR"


def runs_dir() -> Path:
    """``$TROJANSCOPE_RUNS_DIR`` or ``runs`` (relative to the working directory)."""
    return Path(os.environ.get(RUNS_DIR_ENV, "runs"))


@functools.lru_cache(maxsize=1)
def checkout_root() -> Path | None:
    """The root of the source checkout this package runs from (an editable install, ``PYTHONPATH=src``), or None
    when it runs from an installed wheel.

    Why: a few things lie beside the package only in a checkout, never in a wheel: ``static/vendor/`` (the
    JavaScript the dashboard serves, :mod:`trojanscope.viz.bertviz_offline`) and the ``data/`` and ``../shared/data``
    next to the repository (:func:`trojanscope.data.datasets.data_dir`). Files the library itself needs are package
    data instead (:mod:`trojanscope.resources`). The checkout is recognised by its layout, not by counting parents:
    this file lies at ``<root>/src/trojanscope/dirs.py`` and ``<root>/pyproject.toml`` names the project
    ``trojanscope``; so a wheel installed into a virtualenv that happens to lie inside some checkout
    (``.venv/lib/python3.x/site-packages/trojanscope``) is not taken for one.
    """
    src = Path(__file__).resolve().parent.parent
    if src.name != "src":
        return None
    root = src.parent
    try:
        text = (root / "pyproject.toml").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    try:
        import tomllib  # Python 3.11+
    except ModuleNotFoundError:  # 3.10: the [project] table's name line is enough
        named = re.search(r'(?m)^name\s*=\s*"trojanscope"\s*$', text) is not None
    else:
        try:
            named = tomllib.loads(text).get("project", {}).get("name") == "trojanscope"
        except tomllib.TOMLDecodeError:
            named = False
    return root if named else None
