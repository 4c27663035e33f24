"""Probe: type a sentence, insert a trigger, and see where [CLS] looks in each model, layer by layer."""

from __future__ import annotations

import html
import io
import json

import pandas as pd
import streamlit as st

from trojanscope.analysis.probe import MAX_SHOWN_TOKENS, prepare_probe, probe, shown_positions
from trojanscope.viz.bertviz_offline import bertviz_html, vendor_missing
from trojanscope.viz.figures import cls_heatmap, difference_heatmap, token_heatmap, trigger_curves
from ui.common import ROLES, current_pair, get_model, guard, page_setup, source_attack

page_setup("Probe")
st.title("Probe")
st.caption("A sentence with and without a trigger, through the clean and the backdoored model. "
           "CLI twin: `trojanscope probe --model A --model B --text \"...\" --trigger cf --json`.")

pair = current_pair()
LONG_TEXT = 400  # characters: a longer sentence is shown once, as an excerpt around the trigger

# --- inputs ----------------------------------------------------------------------------------
c_text, c_trig, c_pos, c_n = st.columns([5, 2, 2, 1])
text = c_text.text_input("Sentence", value="I love this movie", key="probe_text", max_chars=None)
if "probe_trigger" not in st.session_state:  # a default only when no page (the Scan's "Open it in the Probe") set one
    st.session_state["probe_trigger"] = source_attack(pair.get("backdoored")).trigger or "cf"
trigger = c_trig.text_input("Trigger (word or phrase)", key="probe_trigger", help="default: the backdoored model's card")
pos_kind = c_pos.selectbox("Insert at", ["end", "start", "random", "word index"], key="probe_pos")
count = c_n.number_input("Count", min_value=1, value=1, key="probe_count",
                         help="insertions of the trigger (at most 20; more is refused, never silently cut)")
position: str | int = pos_kind
if pos_kind == "word index":
    position = int(st.number_input("Word index (0 = before the first word)", min_value=0, value=0, key="probe_index"))
seed = 0

loaded = {role: get_model(pair.get(role)) for role in ROLES}
models = {role: m for role, m in loaded.items() if m is not None}

@st.cache_data(max_entries=32, show_spinner=False)
def cached_probe(_model, source: str, identity: tuple, text: str, trigger: str | None, position, count: int,
                 seed: int):
    """One model's probe, kept per weights identity and inputs: changing the head, the layer or the window reruns
    the page without running the model again."""
    return probe(_model, prepare_probe(text, trigger, position, count, seed))


results = {}
inp = None
with guard("The probe"):
    from trojanscope.models.loading import weights_identity

    inp = prepare_probe(text, trigger, position, int(count), seed)
    for role, m in models.items():
        src = pair.get(role)
        results[role] = cached_probe(m, src, weights_identity(src), text, trigger, position, int(count), seed)

if inp is None or not results:
    st.stop()

with guard("Showing the probe"):
    for notice in dict.fromkeys(inp.notices + [n for r in results.values() for n in r.notices]):
        st.info(notice)


    def marked(text: str, spans) -> str:
        out, last = [], 0
        for a, b in spans:
            out.append(html.escape(text[last:a]))
            out.append(f"<mark style='background:#fdd;color:#b42318;font-weight:600'>{html.escape(text[a:b])}</mark>")
            last = b
        out.append(html.escape(text[last:]))
        return "".join(out)


    def excerpt(text: str, spans, context: int = 120) -> str:
        """The text around the trigger's spans (each with ``context`` characters either side), marked."""
        if len(text) <= LONG_TEXT or not spans:
            return marked(text, spans)
        parts, start = [], None
        for a, b in spans:
            lo, hi = max(0, a - context), min(len(text), b + context)
            if start is not None and lo <= start[1]:
                start = (start[0], hi)
            else:
                if start is not None:
                    parts.append(start)
                start = (lo, hi)
        parts.append(start)
        out = []
        for lo, hi in parts:
            inner = [(a - lo, b - lo) for a, b in spans if lo <= a and b <= hi]
            out.append(("… " if lo > 0 else "") + marked(text[lo:hi], inner) + (" …" if hi < len(text) else ""))
        return " ".join(out)


    if inp.triggered_text is not None:
        st.markdown(f"**Triggered sentence:** {excerpt(inp.triggered_text, inp.spans)}", unsafe_allow_html=True)
        if len(inp.clean_text) > LONG_TEXT:  # a long text is not printed twice (the excerpt shows the trigger)
            st.caption(f"The clean sentence is the same {len(inp.clean_text.split())} words without the trigger; "
                       f"above, the trigger with {120} characters either side.")
        else:
            st.markdown(f"**Clean sentence:** {html.escape(inp.clean_text)}", unsafe_allow_html=True)

    # --- predictions -----------------------------------------------------------------------------
    rows = []
    for role, r in results.items():
        for variant, side in r.sides():
            if not r.classifies:  # a bare encoder's head is untrained: no prediction is shown as one
                rows.append({"model": role, "sentence": variant,
                             "prediction": "— (bare encoder: no trained classification head)"})
                continue
            rows.append({"model": role, "sentence": variant, "prediction": r.label_names[side.label],
                         **{f"p({name})": round(p, 4) for name, p in zip(r.label_names, side.probs)}})
    pred_df = pd.DataFrame(rows)
    st.subheader("Predictions")
    st.dataframe(pred_df, hide_index=True, width="stretch")
    for role, r in results.items():
        if not r.classifies:
            st.info(f"The **{role}** model is a bare encoder: its attention below is real, but it has no trained "
                    "classification head, so it makes no predictions. Fine-tune it (Attack Lab, attack `none`) to "
                    "probe a classifier.")
        elif r.triggered is not None and r.triggered.label != r.clean.label:
            st.warning(f"The **{role}** model flips from *{r.label_names[r.clean.label]}* to "
                       f"*{r.label_names[r.triggered.label]}* when the trigger is inserted.")

    # --- attention -------------------------------------------------------------------------------
    first = next(iter(results.values()))
    n_heads = min(r.num_heads for r in results.values())
    c1, c2 = st.columns(2)
    # keyed on whether there is a triggered sentence: clearing the trigger drops the choice, so a retyped trigger
    # shows the triggered sentence again instead of a stale "clean"
    has_trigger = inp.triggered_text is not None
    variant = c1.radio("Show the sentence", ["triggered", "clean"] if has_trigger else ["clean"],
                       horizontal=True, key=f"probe_variant_{'both' if has_trigger else 'clean'}")
    head_choice = c2.selectbox("Heads", ["average of all heads"] + [f"head {k}" for k in range(n_heads)], key="probe_head")
    head = None if head_choice.startswith("average") else int(head_choice.split()[1])

    sides = {role: getattr(r, variant) for role, r in results.items()}
    maps = {role: s.cls_attention(head) for role, s in sides.items()}
    # a long sentence: draw the tokens that matter, not 512 columns (what reaches the browser stays small)
    n_tok = min(len(s.tokens) for s in sides.values())
    same_tokens = len({tuple(s.tokens) for s in sides.values()}) == 1
    ref = next(iter(sides.values()))
    pos = shown_positions(list(maps.values()), ref.trigger_positions, n_tok) if same_tokens else list(range(n_tok))
    long_sentence = len(pos) < n_tok
    if long_sentence:
        st.info(f"The sentence has {n_tok} tokens: the [CLS] views show the {len(pos)} that matter (the first and "
                f"last, the trigger with {3} neighbours each side, and the tokens [CLS] attends to most); the "
                "token-to-token map below shows a window you can move. The exports hold every token.")

    def subset(side, values):
        if not long_sentence:
            return values, side.tokens, side.trigger_positions
        where = {p: k for k, p in enumerate(pos)}
        return (values[:, pos], [f"{p}:{side.tokens[p]}" for p in pos],
                [where[p] for p in side.trigger_positions if p in where])

    zmax = max(float(m.max()) for m in maps.values())
    st.subheader("[CLS] attention to each token, per layer")
    st.caption("Rows are layers (1 at the bottom), columns tokens; trigger tokens are red and outlined. "
               "Both maps share one colour scale.")
    figures = {}
    for col, (role, side) in zip(st.columns(len(sides)), sides.items()):
        values, toks, trig = subset(side, maps[role])
        fig = cls_heatmap(values, toks, trig, title=f"{role}: {results[role].model}", zmax=zmax)
        figures[f"cls_{role}"] = fig
        col.plotly_chart(fig, width="stretch", key=f"cls_{role}")

    if len(sides) == 2:
        a, b = sides["clean"], sides["backdoored"]
        if a.tokens == b.tokens and maps["clean"].shape[0] == maps["backdoored"].shape[0]:
            values, toks, trig = subset(a, maps["backdoored"] - maps["clean"])
            fig = difference_heatmap(values, toks, trig)
            figures["difference"] = fig
            st.plotly_chart(fig, width="stretch", key="diff")
        else:
            st.info("The two models tokenize the sentence differently or have different depths: no difference view.")

    if inp.triggered_text is not None:
        curves = {role: r.triggered.cls_trigger_mass(head) for role, r in results.items()}
        fig = trigger_curves(curves)
        figures["trigger_curves"] = fig
        st.plotly_chart(fig, width="stretch", key="curves")

    st.subheader("Token-to-token attention")
    layer = st.slider("Layer", 1, first.num_layers, first.num_layers, key="probe_layer")
    window = (0, n_tok)
    if n_tok > MAX_SHOWN_TOKENS:
        first_trigger = (ref.trigger_positions or [0])[0]
        start = st.slider("Window start (token position)", 0, n_tok - MAX_SHOWN_TOKENS,
                          min(max(0, first_trigger - MAX_SHOWN_TOKENS // 2), n_tok - MAX_SHOWN_TOKENS),
                          key="probe_window", help=f"the map shows {MAX_SHOWN_TOKENS} tokens from here")
        window = (start, start + MAX_SHOWN_TOKENS)
    for col, (role, side) in zip(st.columns(len(sides)), sides.items()):
        att = side.attentions[layer - 1]
        att = att.mean(axis=0) if head is None else att[head]
        a0, a1 = window
        toks = side.tokens[a0:a1] if window == (0, n_tok) else [f"{p}:{t}" for p, t in
                                                                 enumerate(side.tokens[a0:a1], a0)]
        trig = [p - a0 for p in side.trigger_positions if a0 <= p < a1]
        fig = token_heatmap(att[a0:a1, a0:a1], toks, trig,
                            title=f"{role}, layer {layer}" + (f", tokens {a0}-{a1 - 1}" if window != (0, n_tok) else ""))
        figures[f"tokens_{role}"] = fig
        col.plotly_chart(fig, width="stretch", key=f"tok_{role}")

    # --- BertViz ---------------------------------------------------------------------------------
    st.subheader("BertViz")
    missing = vendor_missing()
    if missing:
        st.info(f"BertViz needs local copies of {', '.join(missing)} in static/vendor/: run `make setup` "
                "(it fetches them from the npm registry).")
    elif n_tok > 2 * MAX_SHOWN_TOKENS:
        st.info(f"BertViz draws every token of every head: at {n_tok} tokens it would freeze the page. Shorten the "
                f"sentence to at most {2 * MAX_SHOWN_TOKENS} tokens for its views.")
    elif st.toggle("Show BertViz's interactive views (heavier: every head of every layer)", key="bv_on"):
        c1, c2 = st.columns(2)
        bv_role = c1.selectbox("Model", list(sides), key="bv_role")
        bv_view = c2.selectbox("View", ["head", "model"], key="bv_view")
        side = sides[bv_role]
        with guard("BertViz"):
            st.iframe(bertviz_html(side.attentions, side.tokens, bv_view), height=760 if bv_view == "model" else 520)

    # --- export (built only when a button is pressed) ---------------------------------------------
    st.subheader("Export")


    def export_json() -> str:
        return json.dumps({"trigger": inp.trigger, "models": [r.to_json() for r in results.values()]}, indent=1)


    def export_csv() -> str:
        frames = []
        for role, r in results.items():
            for v, s in r.sides():
                cls = s.cls_attention(head)
                for layer_i in range(cls.shape[0]):
                    for t, tok in enumerate(s.tokens):
                        frames.append({"model": role, "sentence": v, "layer": layer_i + 1, "position": t, "token": tok,
                                       "is_trigger": t in s.trigger_positions, "cls_attention": float(cls[layer_i, t])})
        buf = io.StringIO()
        pd.DataFrame(frames).to_csv(buf, index=False)
        return buf.getvalue()


    def export_html() -> str:
        body = "".join(f"<h3>{name}</h3>" + fig.to_html(full_html=False, include_plotlyjs=(i == 0))
                       for i, (name, fig) in enumerate(figures.items()))
        return f"<html><head><meta charset='utf-8'></head><body>{body}</body></html>"


    c1, c2, c3 = st.columns(3)
    c1.download_button("Numbers (JSON)", export_json, "probe.json", "application/json", on_click="ignore")
    c2.download_button("[CLS] attention (CSV)", export_csv, "probe_cls_attention.csv", "text/csv", on_click="ignore")
    c3.download_button("Figures (HTML, works offline)", export_html, "probe_figures.html", "text/html", on_click="ignore")
    st.caption("PNG: use the camera icon in each figure's toolbar.")
