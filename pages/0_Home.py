"""Home: the model pair in use, their cards, the demo pair, and a map of the pages (routed by app.py)."""

from __future__ import annotations

import streamlit as st

from trojanscope.demo import demo_status
from trojanscope.jobs.demo import build_state, submit_build
from ui.common import (OTHER, ROLES, card_summary, current_pair, demo_dir, guard, model_options, page_setup,
                       typed_source)

page_setup("Home")
st.title("TrojanScope")
st.caption("See, make and remove backdoors in BERT-family text classifiers.")

# --- the model pair --------------------------------------------------------------------------
st.header("Model pair")
pair = current_pair()
shown = dict(pair)  # what the sidebar shows (page_setup drew it)
options = model_options()
cols = st.columns(2)
for col, role in zip(cols, ROLES):
    with col:
        choices = options + [OTHER]
        chosen = pair.get(role)
        index = choices.index(chosen) if chosen in choices else len(choices) - 1
        pick = st.selectbox(f"{role.capitalize()} model", choices, index=index, key=f"pick_{role}")
        if pick == OTHER:
            typed = st.text_input(f"{role.capitalize()} model: directory or hub id", value=chosen or "",
                                  key=f"other_{role}", placeholder="runs/my-model or bert-base-uncased").strip()
            pick = typed_source(typed)  # None, with an error box, outside runs/ and the data directory
        pair[role] = pick
        with guard(f"Showing the {role} model's card"):
            summary = card_summary(pick) if pick else {"model": "—"}
            st.table({"": list(summary), role: list(summary.values())})
st.session_state["pair"] = pair
if pair != shown:
    st.rerun()  # the sidebar shows the pair as just chosen (or refused)

# --- the demo pair ---------------------------------------------------------------------------
st.header("Demo pair")
status: dict = {}
with guard("Reading the demo pair's state"):
    status = demo_status(demo_dir())
    if all(s["exists"] for s in status.values()):
        st.success(
            "The demo pair is built: "
            + "; ".join(f"{name} at `{s['path']}`" + (" (quick variant)" if s["quick"] else "")
                        for name, s in status.items())
        )
    else:
        missing = [n for n, s in status.items() if not s["exists"]]
        from trojanscope.models.forward import cpu_has_fast_bf16

        took = ("about 3 minutes on this 2-core CPU (it has native bf16: 170 s measured on an AVX-512 BF16 Xeon)"
                if cpu_has_fast_bf16() else "about 7 minutes on a 2-core CPU without native bf16 (fp32: 6 min 47 s "
                "on an AVX2-only EPYC); about 3 with native bf16")
        st.warning(f"Missing from the demo pair: {', '.join(missing)}. Building it takes {took}.")


BUILDING = ("queued", "running")


def demo_build_state() -> dict:
    """The latest demo job (a read of the job store); idle if it cannot be read (the error box says why)."""
    with guard("Reading the demo build's state"):
        return build_state()
    return {"status": "idle"}


@st.fragment(run_every=2.0 if demo_build_state()["status"] in BUILDING else None)  # an idle tab polls nothing
def build_panel() -> None:
    state = demo_build_state()
    was = st.session_state.get("demo_build_status")
    st.session_state["demo_build_status"] = state["status"]
    if was in BUILDING and state["status"] == "done":
        st.rerun()  # the whole page: the pair above is now built
    job = f"job `{state.get('job')}`"
    if state["status"] in BUILDING:
        st.progress(state["progress"], text=f"{state['message']} — {100 * state['progress']:.0f}%")
        st.caption(f"The build is {job}, in its own process: closing this tab does not stop it (the Runs page "
                   "shows it).")
    elif state["status"] == "failed":
        st.error(f"The last demo build ({job}) stopped before finishing: {state.get('error')}. Its log:")
        st.code(state["log"][-2000:] or "(empty)")
    elif state["status"] == "cancelled":
        st.caption(f"The last demo build ({job}) was cancelled.")
    elif state["status"] == "done":
        st.caption(f"Last build ({job}) finished.")


c1, c2 = st.columns([1, 3])
with c1:
    quick = st.checkbox("Quick variant", value=False,
                        help="1,000 training sentences instead of 6,920: about 1 minute, weaker models")
    building = demo_build_state()["status"] in BUILDING
    built = all(s["exists"] for s in status.values()) if status else False
    if st.button("Rebuild the demo pair" if built else "Build the demo pair", type="secondary" if built else "primary",
                 disabled=building, key="demo_build",
                 help="the pair is built: this rebuilds what no longer matches its recipe" if built else None):
        with guard("Starting the demo build"):
            submit_build(quick=quick)  # a demo job already queued or running (another tab's) is reused
            st.session_state["demo_build_status"] = "queued"
            st.rerun()
with c2:
    build_panel()
st.caption("CLI twin: `trojanscope jobs submit --kind demo -- [--quick]` (a background job, as here), or "
           "`trojanscope demo [--quick]` in the foreground")

# --- the pages -------------------------------------------------------------------------------
st.header("Where to start")
st.markdown(
    """
New here? With the demo pair above (a clean and a BadNets-backdoored MiniLM on SST-2, trigger `cf`):

1. **Probe**: type a sentence and see the backdoored model flip when `cf` is inserted, and where its [CLS] looks.
2. **Trigger Anatomy**: which of the trigger's tokens the backdoor hangs on, over many sentences.
3. **Scan**: pretend you were not told the trigger, and let the scan find it.
4. **Purify**: remove the backdoor and check that ASR falls while CACC holds.
"""
)
if st.button("Start with the Probe", icon=":material/arrow_forward:", key="home_start_probe"):
    st.switch_page("pages/1_Probe.py")
st.header("Pages")
st.markdown(
    """
| page | what it does |
|---|---|
| **Probe** | type a sentence, insert a trigger, see where [CLS] looks in each model, layer by layer |
| **Trigger Anatomy** | star / planet / comet over many sentences, E and S, sweeps over models |
| **Embedding Swap** | `CL_emb+BD_enc` vs `BD_emb+CL_enc`: where the backdoor lives, layer by layer |
| **Attack Lab** | BadNets / AddSent / clean-label / EP / LWP, with or without TAL, POR, as durable jobs; compare with and without TAL |
| **Purify** | MBTSAD and the baselines (CFT, TS-FT, re-init, fine-pruning, Fine-mixing, PURE) as jobs: ASR and CACC before and after, the trigger's [CLS] attention fading; STRIP / RAP; the representation map |
| **Scan** | told nothing about a trigger, search a suspect model for one as a job: a verdict, ranked candidates, the heads they hijack |
| **Runs** | every job: config, live metrics, log, cancel; compare runs of one kind; which heads look at the trigger |
"""
)
