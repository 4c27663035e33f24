"""Embedding Swap: swap the embedding layers of the clean and the backdoored model and see which part
carries the backdoor (methods.md 3a, seed Table 13), plus the same question layer by layer."""

from __future__ import annotations

import json
import shlex

import pandas as pd
import streamlit as st

from trojanscope.analysis.swap import HYBRIDS, MODELS, REPRESENTATIONS, SEED_FINDING, SwapConfig
from trojanscope.tasks.analyses import SwapTaskSpec
from trojanscope.viz.figures import SWAP_COLUMNS, swap_bars, swap_layers
from ui.common import current_pair, guard, page_setup, pct, source_attack
from ui.jobwatch import analysis_jobs, computed_note

page_setup("Embedding Swap")
st.title("Embedding swap")
st.caption("Build CL_emb+BD_enc (the backdoored model with the clean model's embeddings) and BD_emb+CL_enc, feed "
           "clean and poisoned texts to all four models and compare their output representations "
           "(cosine similarity of the last-layer [CLS] state, or the pooler output).")

pair = current_pair()
clean_src, bd_src = pair.get("clean"), pair.get("backdoored")
if not clean_src or not bd_src:
    st.info("The swap needs a clean and a backdoored model: pick the pair on the home page.")
    st.stop()

attack = source_attack(bd_src)  # the card chain's answer (a POR encoder's triggers through clean fine-tuning)

# --- inputs (nothing runs until "Run") ---------------------------------------------------------
c_data, c_trig, c_target, c_n, c_seed, c_rep = st.columns([2, 2, 1, 1, 1, 1])
data = c_data.text_input("Dataset (test split)", value="sst2", key="swap_data",
                         help="sst2, olid, agnews, imdb, or a .csv/.tsv/.jsonl file")
por = attack.is_por  # POR plants no label: the target is the class the trigger pushes to
trigger = c_trig.text_input("Trigger", key="swap_trigger", help="default: the backdoored model's card",
                            value=attack.trigger or "cf")
if por and c_target.checkbox("Auto target", value=True, key="swap_target_auto",
                             help="POR plants no label: use the class the trigger pushes to (as E and S find it)"):
    target = None
else:
    target = c_target.number_input("Target label", min_value=0, value=attack.target or 0,
                                   key="swap_target")
n = c_n.number_input("N texts", min_value=1, max_value=5000, value=200, key="swap_n",
                     help="N clean and N poisoned texts (the seed uses 200)")
seed = c_seed.number_input("Seed", min_value=0, value=0, key="swap_seed")
representation = c_rep.selectbox("Representation", list(REPRESENTATIONS), key="swap_rep",
                                 help="cls: last-layer [CLS] state (any model); pooler: BERT/ALBERT pooler output")
run = st.button("Run", key="swap_run", type="primary", help="runs as a job: a bar with the time left and Cancel; "
                "its result is kept for these inputs")

inputs = (clean_src, bd_src, data.strip(), trigger.strip(), None if target is None else int(target), int(n), int(seed),
          representation)
spec = SwapTaskSpec(clean=clean_src, backdoored=bd_src, data=inputs[2],
                    config=SwapConfig(n=inputs[5], seed=inputs[6], trigger=inputs[3] or None, target=inputs[4],
                                      representation=representation))
# a job: a bar with the time left and Cancel while it runs; the newest result for these inputs is kept and shown
found = analysis_jobs("swap", [spec], run, noun="embedding swap")[0]
res = found[1] if found else None
cli = ("trojanscope swap --clean " + shlex.quote(clean_src) + " --backdoored " + shlex.quote(bd_src)
       + f" --data {shlex.quote(inputs[2])} --trigger {shlex.quote(inputs[3] or 'cf')}"
       + ("" if inputs[4] is None else f" --target {inputs[4]}")
       + f" --n {inputs[5]} --seed {inputs[6]} --representation {representation} --json")
if res is None:
    st.info("Set the inputs and press **Run**. It runs as a job (leave the page, it keeps running) over four models "
            "and 2 x N texts: about 80 s at N = 200 for the MiniLM demo pair on a 2-core CPU (measured; it grows "
            "with N), seconds on a GPU. A finished result is kept: coming back to the same inputs shows it "
            "without recomputing.")
    st.caption(SEED_FINDING)
    st.caption("CLI twin:")
    st.code(cli, language="bash")
    st.stop()
st.caption(computed_note(found[0]))

with guard("Showing the embedding swap"):
    for notice in res.get("notices", []):
        st.info(notice)

    # --- Table 13 ----------------------------------------------------------------------------------
    st.subheader("Cosine similarity of the hybrids to BD and CL (Table 13)")
    rows = []
    for h in HYBRIDS:
        row = {"model": h}
        for ref, kind in SWAP_COLUMNS:
            row[f"vs {ref} · {kind}"] = (f"{res['similarity'][h][ref][kind]:.3f} ± "
                                         f"{res['spread'][h][ref][kind]:.3f}")
        rows.append(row)
    c_table, c_note = st.columns([3, 2])
    c_table.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    c_table.caption(f"Mean ± standard deviation over {res['n_clean']} clean and {res['n_poisoned']} poisoned texts "
                    f"(trigger `{res['trigger']}` inserted once into non-target samples, target {res['target']}). "
                    f"For reference, BD vs CL: {res['baseline']['clean']:.3f} on clean, "
                    f"{res['baseline']['poisoned']:.3f} on poisoned text.")
    from trojanscope.analysis.swap import conclusion

    c_note.info(res.get("conclusion") or conclusion(res["similarity"], res["asr"]))  # this run's numbers
    c_note.caption(SEED_FINDING)

    st.subheader("Attack success and clean accuracy of the four models")
    st.dataframe(pd.DataFrame([{"model": m, "ASR (poisoned)": pct(res["asr"][m]), "CACC (clean)": pct(res["cacc"][m])}
                               for m in MODELS]), hide_index=True, width="stretch")

    st.plotly_chart(swap_bars(res), width="stretch", key="swap_bars")

    # --- per-layer view ------------------------------------------------------------------------------
    if res["layers"]:
        unit = res.get("layer_unit", "layer")
        st.subheader(f"Where in depth does the backdoor live? (per {unit})")
        st.caption(f"CL bottom k: CL's embeddings and first k {unit}s under BD's remaining {unit}s and head "
                   "(k=0 is CL_emb+BD_enc, the right end is CL). BD bottom k: the mirror (k=0 is BD_emb+CL_enc, the "
                   "right end is BD). Solid: similarity to BD on poisoned text; dashed: ASR.")
        st.plotly_chart(swap_layers(res), width="stretch", key="swap_layers")

    st.caption("CLI twin:")
    st.code(cli, language="bash")
    st.download_button("Numbers (JSON)", json.dumps(res, indent=1), "embedding_swap.json", "application/json",
                       on_click="ignore")
