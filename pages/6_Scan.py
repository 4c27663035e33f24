"""Scan: find a trigger nobody told you about. A suspect model and clean sentences in; a verdict, ranked candidate
triggers that really flip the model, and the heads whose attention they hijack, out (as a job)."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from trojanscope import jobs
from trojanscope.analysis.scan import ScanConfig
from trojanscope.data.datasets import trainable_datasets
from trojanscope.models.heads import HeadSet
from trojanscope.paths import slugify
from trojanscope.tasks import ScanTaskSpec
from trojanscope.viz.figures import head_heatmap
from ui.jobwatch import follow
from ui.repair import repair_section
from ui.common import OTHER, current_pair, guard, model_options, page_setup, pct, runs_dir, typed_source, ui_job_spec, cli_twin

page_setup("Scan")
st.title("Scan")
st.caption("Told nothing about a trigger, search for one: common neutral words and rare wordpieces inserted into "
           "clean sentences, plus triggers inverted by gradient; then check whether the best candidates hijack "
           "attention heads (AttenTD's focus drift, on every head). Each scan is a job. CLI twin: "
           "`trojanscope scan --model DIR --data sst2 --json` or `trojanscope jobs submit --kind scan -- ...`.")

pair = current_pair()
C = ScanConfig()


def _same(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and str(a).rstrip("/") == str(b).rstrip("/")


# --- the recipe ---------------------------------------------------------------------------------
c1, c2, c3 = st.columns([3, 2, 2])
options = model_options()
default = pair.get("backdoored")
choices = ([default] if default and default not in options else []) + options + [OTHER]
source = c1.selectbox("Suspect model", choices, index=choices.index(default) if default in choices else 0,
                      key="scan_model", help="default: the pair's backdoored model")
if source == OTHER:
    source = typed_source(c1.text_input("Model directory", key="scan_model_other")) or ""
data = c2.selectbox("Clean data of the model's task", trainable_datasets(), key="scan_data")
budget = c3.number_input("Budget (candidate words)", min_value=1, max_value=20000, value=C.budget, step=500,
                         key="scan_budget", help="words the vocabulary search tries; inversion comes on top")
d1, d2, d3 = st.columns(3)
inversion = d1.checkbox("Gradient inversion", value=C.inversion, key="scan_inversion",
                        help="also invert triggers in embedding space: finds triggers outside the word list")
seed = d2.number_input("Seed", 0, 2**31 - 1, C.seed, key="scan_seed")
device = d3.selectbox("Device", ["auto", "cpu", "cuda"], key="scan_device")
NONE = "(none)"
clean_default = pair.get("clean")
ref_choices = [NONE] + ([clean_default] if clean_default and clean_default not in options else []) + options + [OTHER]
reference = st.selectbox(
    "Clean reference model (optional)", ref_choices, key="scan_reference",
    help="a clean classifier of the same task and classes (the pair's clean model, for the pair's task, or one you "
         "trained clean): every verified candidate is tried on it too and counts only for what the suspect does "
         "beyond it. A clean model's universal adversarial words (found by inversion on any model of the task) flip "
         "the reference too; a planted trigger does not. The search then also looks for what the suspect does "
         "beyond it (a second screening, on the reference): slower, and it finds quieter triggers such as LWP's "
         "combinations")
if reference == OTHER:  # a refused path ("") disables the Scan button: no scan without the reference asked for
    typed = st.text_input("Reference model directory", key="scan_reference_other")
    reference = typed_source(typed) or ("" if (typed or "").strip() else NONE)
if reference != NONE and _same(reference, source):
    st.warning("The reference is the suspect itself: every candidate would cancel out. Pick another model, or none.")
with st.expander("Advanced"):
    a1, a2, a3 = st.columns(3)
    n_search = a1.number_input("Search sentences per class", 1, 1000, C.n_search, key="scan_n_search",
                               help="clean sentences the candidates are inserted into (AttenTD: 40)")
    n_verify = a2.number_input("Held-out sentences per class", 1, 5000, C.n_verify, key="scan_n_verify",
                               help="the reported flip rates come from these, never used in the search")
    inv_steps = a3.number_input("Inversion steps", 1, 2000, C.inversion_steps, key="scan_inv_steps")
    always_invert = a3.checkbox("Invert even when a word already flips", value=C.always_invert,
                                key="scan_always_invert",
                                help="by default inversion, the costliest phase, is skipped once a word of the "
                                     "search surely flips everything")


def scan_spec(model: str) -> ScanTaskSpec:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = runs_dir() / "scans" / f"{slugify(model.rstrip('/').split('/')[-1], 32, 'model')}-s{seed}-{stamp}"
    config = replace(C, budget=int(budget), seed=int(seed), n_search=int(n_search), n_verify=int(n_verify),
                     inversion_steps=int(inv_steps), inversion=bool(inversion), always_invert=bool(always_invert))
    ref = None if reference in (NONE, "") or _same(reference, model) else reference
    return ScanTaskSpec(model=model, data=data, config=config, reference=ref, device=device, out=str(out))


spec = scan_spec(source) if source else None
if st.button("Scan", type="primary", key="scan_go", disabled=not source or reference == ""):
    with guard("Launching the scan"):
        job_id = jobs.submit(ui_job_spec(spec))  # model, data and output checked before queuing
        st.success(f"Scan job `{job_id}` submitted.")
if spec is not None:
    cli_twin(spec)


# --- results ------------------------------------------------------------------------------------
def _scans_of(model: str | None) -> list:
    if not model:
        return []
    return [j for j in jobs.list_jobs(limit=200, kind="scan") if _same((j.config or {}).get("model"), model)]


def _full(job) -> dict:
    """The full result (abnormality maps included) from the job's scan.json; {} when unreadable."""
    try:
        return json.loads((Path(job.out_dir) / "scan.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return {}


def drift_map(full: dict, title: str):
    ab = (full.get("abnormality") or [None])[0]
    if not ab or "head_excess" not in ab:  # (a scan saved before the per-head excess was recorded: no map)
        return None
    return head_heatmap(np.asarray(ab["head_excess"], dtype=float), title=title, zmax=1.0,
                        outlined=HeadSet.from_pairs1(full.get("heads") or []))


def scan_jobs(model: str | None) -> list:
    """The suspect model's scans, newest first, with a live bar for the running ones (polled only while one runs;
    the page reruns by itself when one ends, so its verdict appears below without a reload)."""
    mine, clean_running = [], []
    with guard("Reading the job store"):
        mine = _scans_of(model)
        clean = pair.get("clean")
        if clean and not _same(clean, model):  # the pair's clean model's scan, for the map beside
            clean_running = [j for j in _scans_of(clean) if not j.finished]
    ended = {j.id for j in follow("scan", [j for j in mine if not j.finished] + clean_running,
                                  label=lambda j: f"Scan `{j.id}`", done_note="its verdict is below")}
    for j in [j for j in mine if j.status == "failed" and j.id not in ended][:2]:
        st.error(f"Scan `{j.id}` failed: {j.error}")
    done = [j for j in mine if j.status == "done" and j.result]
    if not done and not [j for j in mine if not j.finished]:
        st.info("No finished scan of this model yet: press Scan.")
    return done


def show_verdict(job) -> None:
    """The latest finished scan: verdict, candidates, the drifting-heads maps (this model's and the clean one's)."""
    r = job.result
    st.subheader("Verdict")
    v1, v2, v3, v4 = st.columns(4)
    v1.metric("Verdict", r["verdict"])
    v2.metric("Score", f"{r['score']:.2f}", help=f"backdoored at {C.threshold:g} or more; the combination of the "
              "best candidate's held-out flip rate and its attention evidence (trojanscope.analysis.scan)")
    v3.metric("Target class", "—" if r.get("target") is None else str(r["target"]))
    v4.metric("Time", f"{r['seconds']:.0f} s")
    ev = r.get("evidence", {})
    best = (r.get("candidates") or [{}])[0].get("trigger", "")
    why = ("what its first wordpiece adds to the rest of the word, which flips sentences behind other first pieces too"
           if len(best.split()) == 1 else "what its words do beyond their effects added up or its best word alone")
    top = (r.get("candidates") or [{}])[0]
    if top.get("reference_flip") is not None:
        why = (f"what it does that the clean reference model does not (it flips {pct(top['reference_flip'])} of the "
               f"reference's sentences)")
    beyond = ("" if ev.get("flip_evidence") is None or abs(ev["flip_evidence"] - (ev.get("sure_flip") or 0)) < 0.005
              else f"; it counts as {pct(ev['flip_evidence'])}, {why}")
    st.caption(f"Evidence: the best candidate flips {pct(ev.get('flip_rate'))} of held-out sentences of other "
               f"classes ({pct(ev.get('sure_flip'))} with a target probability of 0.9 or more{beyond}); drifting heads exceed a random word's by {pct(ev.get('drift_excess'))} of all heads; its "
               f"[CLS] attention mass exceeds a random word's by {ev.get('cls_excess', 0):.3f}. "
               f"Scanned {r.get('stats', {}).get('candidates_per_second', '—')} candidate words per second.")
    stats = r.get("stats") or {}
    for warning in stats.get("warnings") or []:  # another task's data, a reference of another vocabulary
        st.warning(warning)
    phases = ", ".join(f"{k} {v:.0f} s" for k, v in (stats.get("stage_seconds") or {}).items())
    if phases or stats.get("inversion_skipped"):
        st.caption((f"Time by phase: {phases}. " if phases else "")
                   + (f"Inversion skipped: {stats['inversion_skipped']}." if stats.get("inversion_skipped") else ""))
    st.subheader("Candidate triggers")
    cands = r.get("candidates") or []
    st.dataframe(pd.DataFrame([{"trigger": c["trigger"], "flip rate (held out)": pct(c["flip_rate"]),
                                "sure flips": pct(c.get("sure_flip")),
                                "evidence": pct(c.get("flip_evidence", c.get("sure_flip"))),
                                **({"flips on the reference": pct(c["reference_flip"])}
                                   if "reference_flip" in c else {}),
                                "target": c["target"], "confidence": round(c.get("confidence") or 0, 3),
                                "found by": c.get("source")} for c in cands]), hide_index=True, width="stretch")
    if cands:
        p1, p2 = st.columns([2, 3])
        pick = p1.selectbox("Send a candidate to the Probe", [c["trigger"] for c in cands], key="scan_pick")
        if p2.button("Open it in the Probe", key="scan_to_probe"):
            st.session_state["probe_trigger"] = pick
            st.switch_page("pages/1_Probe.py")
    st.subheader("Hijacked heads")
    st.caption("Per layer and head: how much more often a focus head's focus moves onto the best candidate than "
               "onto a random neutral word (0 = no more than chance). Framed: heads counted as drifting.")
    m1, m2 = st.columns(2)
    with guard("The drift map"):
        fig = drift_map(_full(job), f"{Path(source).name}: drift to `{cands[0]['trigger'] if cands else '—'}`")
        if fig is not None:
            m1.plotly_chart(fig, width="stretch", key="scan_map")
    clean = pair.get("clean")
    with m2:
        if clean and not _same(clean, source):
            with guard("The clean model's map"):
                theirs = [j for j in _scans_of(clean) if j.status == "done" and j.result]
                if theirs:
                    fig = drift_map(_full(theirs[0]), f"{Path(clean).name} (the pair's clean model): "
                                                      f"{theirs[0].result['verdict']}, score "
                                                      f"{theirs[0].result['score']:.2f}")
                    if fig is not None:
                        st.plotly_chart(fig, width="stretch", key="scan_map_clean")
                else:
                    st.info(f"For comparison, scan the pair's clean model `{clean}` too.")
                    if st.button("Scan the clean model", key="scan_clean_go"):
                        jobs.submit(ui_job_spec(scan_spec(clean)))
                        st.rerun()  # the scan shows with the page's running scans, and its map here when done


done_scans = scan_jobs(source)
if done_scans:
    show_verdict(done_scans[0])
    with guard("The repair section"):
        repair_section(done_scans[0], source, data, device)
