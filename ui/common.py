"""Shared page plumbing: the model pair in session state, cached model loading, error boxes."""

from __future__ import annotations

import contextlib
import json
import logging
import shlex
from pathlib import Path
from typing import Any, Iterator

import streamlit as st

from trojanscope.errors import TrojanScopeError
from trojanscope.jobs.store import runs_dir
from trojanscope.models.loading import LoadedModel, load_model, read_card, weights_identity
from trojanscope.paths import check_ui_data_sources, check_ui_model_source, check_under_runs

log = logging.getLogger("trojanscope.ui")
OTHER = "Other: a local directory or a hub id"
ROLES = ("clean", "backdoored")


def demo_dir() -> Path:
    return runs_dir() / "demo"


ICON = str(Path(__file__).resolve().parents[1] / "assets" / "trojanscope.png")  # local: no favicon from a CDN


def page_setup(title: str) -> None:
    st.set_page_config(page_title=f"{title} · TrojanScope", page_icon=ICON, layout="wide")
    pair = current_pair()
    with st.sidebar:
        st.caption("Model pair in use (change it on the home page)")
        for role in ROLES:
            st.markdown(f"**{role}**: `{pair.get(role) or '—'}`")


def model_options() -> list[str]:
    """Every saved model under the runs directory (demo pair first), as directory paths."""
    root = runs_dir()
    found: list[str] = []
    for name in ROLES:
        if (demo_dir() / name / "config.json").is_file():
            found.append(str(demo_dir() / name))
    if root.is_dir():
        for cfg in sorted(root.glob("**/config.json")):
            path = str(cfg.parent)
            hidden = any(part.startswith(".") for part in cfg.parent.relative_to(root).parts)  # temp/backup dirs
            if path not in found and not hidden:
                found.append(path)
    return found


def current_pair() -> dict[str, str | None]:
    """The chosen pair, defaulting to the demo pair (or the first models found)."""
    if "pair" not in st.session_state:
        opts = model_options()
        demo = {r: str(demo_dir() / r) for r in ROLES}
        pair = {r: (demo[r] if demo[r] in opts else None) for r in ROLES}
        rest = [o for o in opts if o not in pair.values()]
        for r in ROLES:
            if pair[r] is None and rest:
                pair[r] = rest.pop(0)
        st.session_state["pair"] = pair
    return st.session_state["pair"]


def ui_device() -> str:
    """Where the dashboard's own analyses run (probe, head view, anatomy, swap, previews): the GPU when there is
    one, unless ``TROJANSCOPE_UI_DEVICE`` says otherwise (``cpu``, ``cuda:1``); read by every page's model."""
    import os

    from trojanscope.utils import resolve_device

    return str(resolve_device(os.environ.get("TROJANSCOPE_UI_DEVICE") or "auto"))


@st.cache_resource(max_entries=4, show_spinner="Loading model…")
def _load_cached(source: str, identity: tuple, device: str = "cpu") -> LoadedModel:
    """Keyed on the source *and* its files' identity: a model rebuilt in place is loaded anew."""
    return load_model(source, device=device)


def allowed_model(source: str) -> str:
    """``source`` if the dashboard may load it: listed by :func:`model_options` (found under the runs
    directory), or passing :func:`trojanscope.paths.check_ui_model_source`; else a TrojanScopeError."""
    try:
        return check_ui_model_source(source)
    except TrojanScopeError:
        if source in model_options():
            return source
        raise


def typed_source(text: str | None, kind: str = "model") -> str | None:
    """What the user typed (a model, or comma-separated data), if the dashboard may use it; else
    ``None`` with an error box saying what is allowed."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        if kind != "model":
            return check_ui_data_sources(text)
        source = allowed_model(text)
        missing = missing_model(source)
        if missing:
            raise TrojanScopeError(missing)
        return source
    except TrojanScopeError as e:
        st.error(str(e))
        return None


def missing_model(text: str) -> str | None:
    """Why ``text`` names no model (a path with nothing there, a directory without ``config.json``), or None:
    a built-in name, a model directory, or a hub id where the operator allows them (nothing to check offline)."""
    from trojanscope.models.loading import BUILTIN_MODELS
    from trojanscope.paths import any_path_allowed

    if text in BUILTIN_MODELS:
        return None
    path = Path(text).expanduser()
    if path.is_dir():
        return None if (path / "config.json").is_file() else \
            f"`{text}` is a directory but holds no model (no config.json): pick a model directory"
    from trojanscope.paths import allowed_roots

    # "runs/x" reads as a hub id "org/name" too: it is a path when its first part exists here or names one of
    # the directories the dashboard reads (the runs directory need not exist yet in a fresh checkout)
    head = text.split("/")[0]
    local = text.startswith(("/", ".", "~")) or not any_path_allowed() or ("/" in text and (
        Path(head).exists() or head in {root.name for root in allowed_roots()} | {"runs"}))
    return f"there is no model at `{text}`: no such directory" if local else None


def ui_job_spec(spec: Any) -> Any:
    """Task spec ``spec`` (:mod:`trojanscope.tasks`) if the dashboard may submit it: the models and data it reads
    are ones the dashboard may read and its ``out`` resolves under the runs directory; else a TrojanScopeError.
    Jobs submitted from the CLI are not checked."""
    from trojanscope.tasks.base import sources_of

    recipe = getattr(spec, "spec", spec)
    for source in sources_of(spec) or [""]:
        allowed_model(source)
    data = getattr(recipe, "data", None)
    if data is None and hasattr(recipe, "por"):
        data = recipe.por.data
    if data is not None:
        check_ui_data_sources(str(data))
    if not spec.out:
        raise TrojanScopeError("a job from the dashboard needs an output directory under the runs directory")
    check_under_runs(spec.out)
    return spec


def cli_twin(spec: Any) -> None:
    """The command that queues the same job from a shell: ``trojanscope jobs submit --spec '<JSON>'``."""
    text = json.dumps({"kind": spec.kind, **spec.to_dict()}, ensure_ascii=False)
    with st.expander("CLI twin"):
        st.caption("The same job from a shell (the spec is the whole recipe; `--spec @file.json` reads a file):")
        st.code(f"trojanscope jobs submit --spec {shlex.quote(text)}", language="bash", wrap_lines=True)


def get_model(source: str | None, *, trusted: bool = False) -> LoadedModel | None:
    """The loaded model, or ``None`` with an error box saying why (the page stays usable).

    Unless ``trusted`` (a path the server itself recorded, such as a finished job's output), the
    source must be one the dashboard may load (:func:`allowed_model`).
    """
    if not source:
        st.info("No model chosen: pick one on the home page.")
        return None
    try:
        if not trusted:
            allowed_model(source)
        return _load_cached(source, weights_identity(source), ui_device())
    except TrojanScopeError as e:
        st.error(f"Could not load `{source}`: {e}")
    except Exception as e:  # noqa: BLE001 - never a traceback on the page
        log.exception("loading %s failed", source)
        st.error(f"Could not load `{source}`: {type(e).__name__}: {e}")
    return None


@contextlib.contextmanager
def guard(what: str = "This action") -> Iterator[None]:
    """Show user errors as an error box and unexpected ones without a traceback."""
    try:
        yield
    except TrojanScopeError as e:
        st.error(str(e))
    except Exception as e:  # noqa: BLE001
        log.exception("%s failed", what)
        st.error(f"{what} failed unexpectedly: {type(e).__name__}: {e}. Details are in the server log.")


def pct(value: float | None, digits: int = 1) -> str:
    """A share as a percentage, or a dash when there is none."""
    return "—" if value is None else f"{100 * float(value):.{digits}f}%"


def card_summary(source: str | None) -> dict[str, str]:
    """A short, printable summary of a model's card (base, attack, trigger, target, CACC/ASR)."""
    if not source or not Path(source).is_dir():
        return {"source": source or "—", "card": "no trojanscope.json (foreign model)" if source else "—"}
    try:
        card = read_card(source)
    except TrojanScopeError as e:
        return {"source": source, "card": str(e)}
    if card is None:
        return {"source": source, "card": "no trojanscope.json (foreign model)"}
    from trojanscope.models.planted import planted_attack

    attack = planted_attack(card, source)  # the one answer, through clean fine-tuning of a POR encoder
    m = card.metrics or {}
    inherited = f" (inherited from {attack.origin})" if attack.inherited else ""
    return {
        "source": source,
        "base model": str(card.base_model),
        "data": str((card.data or {}).get("name", "—")),
        "kind": "encoder (no trained classification head)" if card.task == "encoder" else "classifier",
        "attack": (attack.name or "none") + inherited,
        "trigger": ", ".join(attack.triggers) or "—",
        "target": ("the class each trigger pushes to (POR)" if attack.is_por
                   else "—" if attack.target is None else str(attack.target)),
        "CACC": pct(m.get("cacc")),
        "ASR": pct(m.get("asr")),
    }


def source_attack(source: str | None):
    """The planted attack of a model directory from its card chain, without loading the model
    (``models.planted``); the empty answer for hub ids, foreign models and unreadable cards."""
    from trojanscope.models.planted import NONE, planted_attack

    if not source or not Path(source).is_dir():
        return NONE
    try:
        return planted_attack(read_card(source), source)
    except TrojanScopeError:
        return NONE
