"""Shared page plumbing: the model pair in session state, cached model loading, error boxes."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Iterator

import streamlit as st

from trojanscope.errors import TrojanScopeError
from trojanscope.jobs.store import runs_dir
from trojanscope.models.loading import LoadedModel, load_model, read_card

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
            if path not in found and not any(part.startswith(".") for part in cfg.parent.parts):
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


@st.cache_resource(max_entries=4, show_spinner="Loading model…")
def _load_cached(source: str) -> LoadedModel:
    return load_model(source)


def get_model(source: str | None) -> LoadedModel | None:
    """The loaded model, or ``None`` with an error box saying why (the page stays usable)."""
    if not source:
        st.info("No model chosen: pick one on the home page.")
        return None
    try:
        return _load_cached(source)
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
    attack = card.attack or {}
    m = card.metrics or {}
    return {
        "source": source,
        "base model": str(card.base_model),
        "data": str((card.data or {}).get("name", "—")),
        "attack": attack.get("name", "none"),
        "trigger": attack.get("trigger", "—"),
        "target": str(attack.get("target", "—")),
        "CACC": pct(m.get("cacc")),
        "ASR": pct(m.get("asr")),
    }
