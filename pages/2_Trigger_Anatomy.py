"""Trigger anatomy: star / planet / comet over many sentences; E and S per trigger; sweeps."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import streamlit as st

from trojanscope.analysis.anatomy import AnatomyConfig, AnatomyResult
from trojanscope.analysis.effectiveness import ESConfig, ESResult, sweep_average, sweep_rows
from trojanscope.data.datasets import REGISTRY
from trojanscope.models.planted import attack_of
from trojanscope.tasks.analyses import AnatomyTaskSpec, EffectivenessTaskSpec
from trojanscope.viz.figures import anatomy_lines, es_bars, token_heatmap
from ui.common import OTHER, cli_twin, current_pair, get_model, guard, model_options, page_setup
from ui.jobwatch import analysis_jobs, computed_note

page_setup("Trigger Anatomy")
st.title("Trigger anatomy")
st.caption("Which trigger token does the backdoor hang on? How many insertions does a trigger need? "
           "CLI twins: `trojanscope anatomy`, `trojanscope effectiveness`.")

pair = current_pair()
bd = get_model(pair.get("backdoored"))  # its card names the trigger (the analyses run as jobs)
if bd is None:
    st.stop()
card_attack = attack_of(bd)  # through clean fine-tuning: a POR encoder's triggers
datasets = [n for n in REGISTRY]


# --- star / planet / comet ---------------------------------------------------------------------
st.header("Star, planet, comet")
st.caption("Star: the trigger token [CLS] attends to most in the upper layers. Planet: another trigger token "
           "without which the star stops working (flip rate or [CLS]-to-star attention drops by at least the "
           "threshold). Comet: a token whose removal changes nothing (methods.md 3b).")
c1, c2, c3, c4 = st.columns([3, 2, 1, 1])
default_trigger = card_attack.trigger or "cf"
trigger = c1.text_input("Trigger", value=default_trigger, key="anat_trigger")
data_name = c2.selectbox("Sentences from", datasets, key="anat_data")
n = c3.number_input("Sentences", 10, 2000, 200, step=50, key="anat_n")
threshold = c4.number_input("Threshold", 0.01, 1.0, 0.2, step=0.05, key="anat_thr")
if not trigger.strip():
    st.error("Type a trigger: the word, wordpieces or sentence inserted into each sentence (e.g. "
             f"`{default_trigger}`). An empty trigger has no tokens to take apart.")
go = st.button("Analyse the trigger", type="primary", key="anat_go", disabled=not trigger.strip(),
               help="runs as a job: a bar with the time left and Cancel; its result is kept for these inputs")
anat_spec = AnatomyTaskSpec(model=pair.get("backdoored"), clean=pair.get("clean"), trigger=trigger.strip(),
                            data=data_name, config=AnatomyConfig(n=int(n), threshold=float(threshold)))
found = analysis_jobs("anatomy", [anat_spec], go, noun="trigger anatomy")[0] if trigger.strip() else None
with guard("Showing the anatomy"):
    res = AnatomyResult.from_json(found[1]) if found else None
    if res is not None:
        for note in res.notes:
            st.info(note)
        st.markdown(f"Over **{res.n}** test sentences of every class, the full trigger changes **{100 * res.flip_rate:.1f}%** "
                    f"of the predictions; the star alone **{100 * res.star_alone['flip_rate']:.1f}%**.")
        st.caption("These rates count every sampled sentence, those the model already puts in the target class "
                   "too, which the trigger cannot change: on balanced two-class data a backdoor with ASR 100% "
                   "changes about half. ASR counts only the sentences of the other classes.")
        table = pd.DataFrame([{
            "token": t.token, "role": t.role, "upper-layer [CLS] attention": round(t.upper_attention, 4),
            "flip rate without it": None if t.flip_rate_without is None else round(t.flip_rate_without, 3),
            "flip drop": None if t.flip_drop is None else round(t.flip_drop, 3),
            "[CLS]-to-star drop": None if t.star_attention_drop is None else round(t.star_attention_drop, 3),
        } for t in res.tokens])
        st.dataframe(table, hide_index=True, width="stretch")
        st.plotly_chart(anatomy_lines(res.tokens), width="stretch", key="anat_lines")
        tokens = [t.token for t in res.tokens]
        cols = st.columns(2)
        for col, (name, mat) in zip(cols, res.inner_attention.items()):
            col.plotly_chart(token_heatmap(np.array(mat), tokens, [], title=f"inside the trigger: {name.replace('_', ' ')} "
                                           "layer(s)"), width="stretch", key=f"anat_inner_{name}")
        st.caption(computed_note(found[0]))
        cli_twin(anat_spec)
        st.download_button("Anatomy (JSON)", json.dumps(res.to_json()), "anatomy.json", "application/json",
                           on_click="ignore")

# --- E and S -----------------------------------------------------------------------------------
st.header("Effectiveness E and stealthiness S")
st.caption("E: mean number of insertions until a correctly classified sample of another class flips (1 is best, "
           "20 = never). S: the share of the poisoned text's characters that the insertions add (lower is "
           "stealthier). methods.md section 3.")
c1, c2, c3 = st.columns([3, 2, 1])
default_triggers = ",".join(card_attack.triggers) or "cf,mn,bb,tq,mb"
triggers = c1.text_input("Triggers (comma-separated)", value=default_triggers, key="es_triggers")
es_data = c2.selectbox("Test data", datasets, key="es_data")
max_eval = c3.number_input("Samples", 10, 5000, 200, step=50, key="es_n")
sweep = st.multiselect("Sweep: also measure these models (e.g. POR models made with 1, 3, 5, 7, 9 insertions, "
                       "each fine-tuned)", [o for o in model_options() if o != pair.get("backdoored")] + [OTHER],
                       key="es_sweep")
models = [pair.get("backdoored")] + [m for m in sweep if m != OTHER]
es_ok = bool([t for t in triggers.split(",") if t.strip()])
if not es_ok:
    st.error("Type at least one trigger (comma-separated), e.g. `cf,mn`.")
es_go = st.button("Measure E and S", type="primary", key="es_go", disabled=not es_ok,
                  help="runs as a job: a bar with the time left and Cancel; its result is kept for these inputs")
es_spec = EffectivenessTaskSpec(models=models, triggers=triggers, data=es_data, config=ESConfig(max_eval=int(max_eval)))
es_found = analysis_jobs("es", [es_spec], es_go, noun="E and S measurement")[0] if es_ok else None
with guard("Showing E and S"):
    es = None
    if es_found:
        full = es_found[1]
        es = {m: (r, ESResult.from_json(r)) for m, r in (full.get("sweep") or {full["model"]: full}).items()}
    if es:
        insertions = {}
        for m, (raw, result) in es.items():
            for notice in result.notices:
                st.info(f"`{m}`: {notice}")
            insertions[m] = raw.get("insertions")
        rows = sweep_rows({m: result for m, (_, result) in es.items()}, insertions)
        labels = {"insertions": "poisoning insertions", "never": "never flipped"}
        digits = {"E": 3, "S": 4, "never flipped": 3}
        types = {"E": float, "S": float, "never flipped": float, "poisoning insertions": "Int64"}  # None: NaN / <NA>
        df = pd.DataFrame(rows).rename(columns=labels).astype(types).round(digits)
        st.dataframe(df, hide_index=True, width="stretch")
        st.plotly_chart(es_bars(rows), width="stretch", key="es_bars")
        if len(es) > 1:
            summary = (pd.DataFrame(sweep_average(rows)).rename(columns=labels)
                       .astype({k: types[k] for k in ("E", "S", "poisoning insertions")}).round(digits))
            st.markdown("**Sweep: average over triggers per model** (seed Table 12: 1.23, 1.16, 1.77, 4.98, 10.09 "
                        "for 1, 3, 5, 7, 9 insertions; `triggers`: how many had eligible samples)")
            st.dataframe(summary, hide_index=True, width="stretch")
        st.caption(computed_note(es_found[0]))
        cli_twin(es_spec)
