"""Which paths the dashboard may touch, slugs for the names it builds, and a model's on-disk identity.

The dashboard is a server: whoever reaches it types paths into it. By default what it reads is
limited to the runs directory (:func:`trojanscope.dirs.runs_dir`) and the data directory
(:func:`trojanscope.data.datasets.data_dir`), plus the built-in model names (``minilm``) and the
named datasets (``sst2``, ...); what it writes is limited to the runs directory. Setting
``TROJANSCOPE_UI_ALLOW_ANY_PATH=1`` where the dashboard starts lifts the read limit (any local
directory or file, hub ids, ``hf:`` datasets). Paths are resolved (symbolic links, ``..``) before
they are checked. The CLI is not limited: these checks are for what the dashboard's users type.

This module imports nothing from Streamlit (nor torch): pages call it, tests call it directly.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from trojanscope.errors import TrojanScopeError

ALLOW_ANY_PATH_ENV = "TROJANSCOPE_UI_ALLOW_ANY_PATH"
SLUG_MAX = 48
# the files whose change means "a different model": weights, config, card, tokenizer
_OPT_IN = f"set {ALLOW_ANY_PATH_ENV}=1 where the dashboard starts to allow any path"


def any_path_allowed() -> bool:
    """Whether the operator opted in to any path (and hub ids) in the dashboard."""
    return os.environ.get(ALLOW_ANY_PATH_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _runs_root() -> Path:
    from trojanscope.dirs import runs_dir

    return runs_dir().expanduser().resolve()


def allowed_roots() -> list[Path]:
    """The resolved directories the dashboard reads from: the runs directory and, when one is found,
    the data directory."""
    from trojanscope.data.datasets import data_dir

    roots = [_runs_root()]
    try:
        roots.append(data_dir().expanduser().resolve())
    except TrojanScopeError:  # no data directory: only the runs directory
        pass
    return roots


def _under(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _resolved(text: str) -> Path:
    try:
        return Path(text).expanduser().resolve()
    except (OSError, RuntimeError) as e:  # a symlink loop, an unreadable component
        raise TrojanScopeError(f"cannot resolve the path {text!r}: {type(e).__name__}") from None


def _roots_text(roots: list[Path]) -> str:
    return " or ".join(str(r) for r in roots)


def check_ui_model_source(text: str) -> str:
    """A model source typed into the dashboard, stripped, if the dashboard may load it; else a
    :class:`TrojanScopeError` saying what is allowed and how to opt in.

    Allowed: the built-in names (``minilm``) and directories that resolve under the runs or the
    data directory; with ``TROJANSCOPE_UI_ALLOW_ANY_PATH=1``, any directory or hub id.
    """
    from trojanscope.models.loading import BUILTIN_MODELS

    text = str(text or "").strip()
    if not text:
        raise TrojanScopeError("no model given; pick one from the list or type a directory under the runs directory")
    if text in BUILTIN_MODELS or any_path_allowed():
        return text
    roots = allowed_roots()
    if not any(_under(_resolved(text), r) for r in roots):
        raise TrojanScopeError(
            f"the dashboard loads models only from the built-in {', '.join(BUILTIN_MODELS)} and directories under "
            f"{_roots_text(roots)}; {text!r} is outside them (hub ids included): {_OPT_IN} and hub ids"
        )
    return text


def check_ui_data_source(text: str) -> str:
    """A data source typed into the dashboard, stripped, if the dashboard may read it; else a
    :class:`TrojanScopeError` saying what is allowed and how to opt in.

    Allowed: the named datasets (``sst2``, ...) and files or directories that resolve under the
    data or the runs directory; with ``TROJANSCOPE_UI_ALLOW_ANY_PATH=1``, any path and ``hf:NAME``.
    """
    from trojanscope.data.datasets import REGISTRY

    text = str(text or "").strip()
    if not text:
        raise TrojanScopeError(f"no data given; use one of {', '.join(REGISTRY)} or a file under the data directory")
    if text in REGISTRY or any_path_allowed():
        return text
    roots = allowed_roots()
    if text.startswith("hf:") or not any(_under(_resolved(text), r) for r in roots):
        raise TrojanScopeError(
            f"the dashboard reads data only from the named datasets ({', '.join(REGISTRY)}) and files under "
            f"{_roots_text(roots)}; {text!r} is outside them (hf: datasets included): {_OPT_IN} and hf: datasets"
        )
    return text


def check_ui_data_sources(text: str) -> str:
    """:func:`check_ui_data_source` for each item of a comma-separated list; returns ``text`` stripped."""
    items = [t.strip() for t in str(text or "").split(",") if t.strip()]
    if not items:
        check_ui_data_source("")
    for item in items:
        check_ui_data_source(item)
    return str(text).strip()


def slugify(text: str, max_length: int = SLUG_MAX, fallback: str = "x") -> str:
    """A safe name from any text: lowercase ``[a-z0-9_-]``, at most ``max_length`` characters, never
    empty (``fallback``), never starting with a dot or a dash (so never ``..`` nor an option)."""
    slug = re.sub(r"[^a-z0-9_-]+", "-", str(text).lower())
    slug = re.sub(r"-{2,}", "-", slug).strip("-_")[: max(1, int(max_length))].strip("-_")
    return slug or fallback


def check_under_runs(path: str | os.PathLike) -> Path:
    """The resolved ``path`` if it lies strictly under the runs directory (what the dashboard may
    write); else a :class:`TrojanScopeError`. Jobs submitted from the CLI are not checked."""
    root = _runs_root()
    resolved = _resolved(str(path))
    if resolved == root or root not in resolved.parents:
        raise TrojanScopeError(
            f"output {str(path)!r} is not inside the runs directory {root}; the dashboard writes only under it"
        )
    return resolved


def __getattr__(name: str):
    """``weights_identity`` and ``IDENTITY_FILES`` moved to :mod:`trojanscope.models.loading` (what makes a model
    directory *this* model is a model's matter, and tasks below this layer need it); read from there on first use
    so that importing this module still loads no torch."""
    if name in ("weights_identity", "IDENTITY_FILES"):
        from trojanscope.models import loading

        return getattr(loading, name)
    raise AttributeError(name)
