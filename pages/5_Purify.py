"""Purify: remove a backdoor (MBTSAD and the defenses people compare it with) as a job, and see ASR
fall, CACC hold and the trigger's [CLS] attention fade, model beside model."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pandas as pd
import streamlit as st

from trojanscope import jobs
from trojanscope.analysis.embed_map import MapConfig
from trojanscope.analysis.probe import prepare_probe, probe
from trojanscope.data.datasets import trainable_datasets
from trojanscope.defenses import get_defense, purifiers
from trojanscope.defenses.pipeline import MIN_CLEAN, PurifySpec
from trojanscope.defenses.splitting import SplitConfig, split_variants
from trojanscope.errors import TrojanScopeError
from trojanscope.paths import slugify
from trojanscope.specs import check_knobs, knobs_of
from trojanscope.tasks import PurifyTaskSpec
from trojanscope.tasks.analyses import DetectTaskSpec, EmbedMapTaskSpec
from trojanscope.viz.figures import metric_bars, trigger_curves
from ui.jobwatch import analysis_jobs, computed_note, follow
from ui.common import (OTHER, ROLES, current_pair, get_model, guard, model_options, page_setup, pct, runs_dir,
                       source_attack, typed_source, ui_job_spec, cli_twin)

page_setup("Purify")
st.title("Purify")
st.caption("Remove a backdoor with a small clean subset: MBTSAD (token splitting + attention distillation) or a "
           "baseline. Each launch is a job: close the tab, it keeps running. CLI twin: `trojanscope purify ...` "
           "or `trojanscope jobs submit --kind purify -- ...`.")

pair = current_pair()

# --- the model and its backdoor ----------------------------------------------------------------
c1, c2, c3 = st.columns([3, 2, 1])
options = model_options()
default = pair.get("backdoored")
choices = ([default] if default and default not in options else []) + options + [OTHER]
source = c1.selectbox("Backdoored model", choices, index=choices.index(default) if default in choices else 0,
                      key="pur_model", help="default: the pair's backdoored model")
if source == OTHER:
    source = typed_source(c1.text_input("Model directory", key="pur_model_other")) or ""
attack = source_attack(source)
trigger = c2.text_input("Trigger", value=attack.trigger or "", key=f"pur_trigger_{source}",
                        help="from the model's card; type one if the card has none (empty: ASR is not measured)")
target_known = attack.target is not None
target = c3.number_input("Target", min_value=0, value=attack.target or 0, key=f"pur_target_{source}",
                         help="the backdoor's target label (POR: the class the trigger pushes to is found)")
if attack.known:
    st.caption(f"Card: attack **{attack.name}**, trigger `{', '.join(attack.triggers)}`"
               + (f", target {attack.target}" if target_known else "")
               + (f" (inherited from `{attack.origin}`)" if attack.inherited else ""))
else:
    st.info("This model's card records no backdoor: ASR is measured only for a trigger you type. Purifying a model "
            "that was never backdoored runs and reports ASR unchanged.")

# --- the recipe --------------------------------------------------------------------------------
methods = purifiers()
r1, r2, r3 = st.columns(3)
with r1:
    method = st.selectbox("Method", methods, index=methods.index("mbtsad") if "mbtsad" in methods else 0,
                          key="pur_method", format_func=lambda m: f"{m}: {get_defense(m).description}")
    data = st.selectbox("Data (its train split gives the clean subset)", trainable_datasets(),
                        key="pur_data")
    fraction = st.slider("Clean fraction of the training set", 0.01, 1.0, 0.2, step=0.01, key="pur_fraction",
                         help=f"the seed uses 20%; fewer than {MIN_CLEAN} texts is refused")
    seed = st.number_input("Seed", 0, 2**31 - 1, 0, key="pur_seed")
    device = st.selectbox("Device", ["auto", "cpu", "cuda"], key="pur_device")
    max_eval = st.number_input("Test texts for CACC/ASR (0 = all)", 0, 1_000_000, 0, step=100, key="pur_max_eval")
defense = get_defense(method)
knobs: dict[str, object] = {}
with r2:
    st.markdown(f"**{method} settings**")
    if defense.changes:
        st.caption(f"Changes: {defense.changes}")
    cfg0 = defense.config()
    declared = knobs_of(cfg0)  # the config's own help and bounds (trojanscope.specs.knob), where it declares them
    for f in dataclasses.fields(cfg0):
        value = getattr(cfg0, f.name)
        key = f"pur_knob_{method}_{f.name}"
        k = declared.get(f.name, {})
        label, hint = f.name, k.get("help")  # the name `--set name=value` takes on the CLI
        if k.get("choices"):
            choices = list(k["choices"])
            knobs[f.name] = st.selectbox(label, choices, index=choices.index(value) if value in choices else 0,
                                         key=key, help=hint)
        elif isinstance(value, bool):
            knobs[f.name] = st.checkbox(label, value=value, key=key, help=hint)
        elif isinstance(value, (int, float)):
            whole = isinstance(value, int)
            cast = int if whole else float
            lo = k.get("min")
            if lo is None and k.get("above") is not None and whole:
                lo = int(k["above"]) + 1
            bounds = {"min_value": None if lo is None else cast(lo),
                      "max_value": None if k.get("max") is None else cast(k["max"])}
            knobs[f.name] = st.number_input(label, value=value, step=1 if whole else None,
                                            format=None if whole else "%g", key=key, help=hint, **bounds)
        elif isinstance(value, str) or value is None:
            knobs[f.name] = st.text_input(label, value="" if value is None else value, key=key, help=hint)
    try:
        check_knobs(defense.config(**{n: (None if v == "" and getattr(cfg0, n) is None else v)
                                      for n, v in knobs.items()}), method)
    except (TrojanScopeError, TypeError) as e:
        st.error(str(e))
changed = {k: v for k, v in knobs.items() if v != getattr(cfg0, k) and not (v == "" and getattr(cfg0, k) is None)}
with r3:
    st.markdown("**Token splitting preview**")
    sample = st.text_input("A sentence", "the performances are beautiful and the story is compelling",
                           key="pur_preview")
    with guard("The preview"):
        for v in split_variants(sample, 0, SplitConfig(k=3, seed=int(seed))):
            st.markdown(f"- {v}")


@st.cache_data(max_entries=16, show_spinner=False)
def train_size(name: str) -> int:
    """The train split's size (read once per data name: the form reruns on every change)."""
    from trojanscope.data.datasets import load_dataset

    return len(load_dataset(name, "train"))


def epochs_of(cfg: dict) -> float:
    """The epochs a purification's config trains for in all (teacher and student, say); 1 without any."""
    return float(sum(v for n, v in cfg.items() if n.endswith("epochs") and isinstance(v, (int, float)))) or 1.0


def time_estimate() -> str:
    """How long this purification should take here, from this machine's finished jobs of the same method."""
    from trojanscope.jobs.eta import describe, run_estimate

    defaults = dataclasses.asdict(cfg0)
    n_clean = max(MIN_CLEAN, round(float(fraction) * train_size(data)))

    def units(job) -> float | None:
        recipe = ((job.spec or {}).get("spec") or {})
        n = (job.result or {}).get("n_clean")
        return n * epochs_of({**defaults, **(recipe.get("config") or {})}) if n else None

    done = [j for j in jobs.list_jobs(limit=200, status="done", kind="purify")
            if (j.config or {}).get("method") == method]
    est = run_estimate(done, n_clean * epochs_of({**defaults, **changed}), units)
    if est is None:
        return (f"No {method} purification has finished on this machine yet to estimate from "
                "(docs/benchmarks.md records the measured times).")
    seconds, k = est
    return (f"Estimate: {describe(seconds).replace(' left', '')} for {n_clean:,} clean texts, from {k} finished "
            f"{method} job{'s' if k > 1 else ''} here (wall time per clean text and epoch).")


with guard("The time estimate"):
    st.caption(time_estimate())

stamp = time.strftime("%Y%m%d-%H%M%S")
out = runs_dir() / "purified" / f"{slugify(source.rstrip('/').split('/')[-1], 32, 'model')}-{method}-s{seed}-{stamp}"
spec = PurifyTaskSpec(
    spec=PurifySpec(model=source or "", data=data, method=method, config=dict(changed), clean_fraction=float(fraction),
                    seed=int(seed), device=device, trigger=trigger.strip() or None,
                    target=int(target) if trigger.strip() and (target_known or not attack.is_por) else None,
                    max_eval=int(max_eval) or None),
    out=str(out))
if st.button("Purify", type="primary", key="pur_launch", disabled=not source):
    with guard("Launching the purification"):
        job_id = jobs.submit(ui_job_spec(spec))  # model, data and output checked
        st.session_state.setdefault("pur_jobs", []).append(job_id)
        st.success(f"Job `{job_id}` submitted: the purified model will be `{out}`.")
if source:
    cli_twin(spec)


# --- live jobs and the before/after table ------------------------------------------------------
def _same(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and str(a).rstrip("/") == str(b).rstrip("/")


def purify_jobs(model: str | None) -> list:
    """The model's purifications, newest first: a live bar for the running ones (polled only while one runs; the
    page reruns by itself when one ends, so its row, its bars and its attention view appear without a reload)."""
    mine = []
    with guard("Reading the job store"):
        mine = [j for j in jobs.list_jobs(limit=200, kind="purify") if _same((j.config or {}).get("model"), model)]
    running = [j for j in mine if not j.finished]
    ended = {j.id for j in follow("purify", running, done_note="its row, its bars and its attention view are below",
                                  label=lambda j: f"`{j.id}` {(j.config or {}).get('method')}")}
    for j in [j for j in mine if j.status == "failed" and j.id not in ended][:3]:
        st.error(f"`{j.id}` {(j.config or {}).get('method')} failed: {j.error}")
    done = [j for j in mine if j.status == "done" and j.result]
    if not done and not running:
        st.info("No finished purification of this model yet.")
    return done


def before_after(done: list) -> None:
    """The before/after table and bars of every finished purification of the model, the latest one's verdict."""
    with guard("The before/after table"):
        rows = []
        for j in done:
            r = j.result
            rows.append({"job": j.id, "method": r.get("method"), "verdict": r.get("verdict", "-"),
                         "clean texts": r.get("n_clean"),
                         "CACC before": pct(r["before"]["cacc"]), "CACC after": pct(r["after"]["cacc"]),
                         "ASR before": pct(r["before"]["asr"]), "ASR after": pct(r["after"]["asr"]),
                         "flip-ASR before": pct(r["before"].get("asr_flip")),
                         "flip-ASR after": pct(r["after"].get("asr_flip")),
                         "seconds": r.get("seconds"), "purified model": r.get("out")})
        st.subheader("Before and after")
        st.caption("ASR counts every non-target test text predicted as the target once the trigger is in, so it "
                   "never falls below the model's own error rate on those texts (a clean model's ASR is its error "
                   "rate). flip-ASR counts only the texts the model gets right without the trigger: the trigger's "
                   "own effect, near 0 for a model without the backdoor.")
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
        latest = done[0].result
        if latest.get("summary"):
            say = {"removed": st.success, "reduced": st.warning, "still there": st.error}.get(latest.get("verdict"),
                                                                                          st.info)
            say(f"Latest ({latest.get('method')}): {latest['summary']}.")
            removed_by = sorted({j.result.get("method") for j in done if j.result.get("verdict") == "removed"})
            if latest.get("verdict") != "removed":
                st.caption("Methods that removed it on this model: " + (", ".join(removed_by) if removed_by else
                           "none so far (removed means flip-ASR at most 10%)."))
        bars = {"backdoored": done[0].result["before"]}
        bars.update({f"{j.result.get('method')} ({j.id})": j.result["after"] for j in done})
        st.plotly_chart(metric_bars(bars), width="stretch", key="pur_bars")


done_purifications = purify_jobs(source)
if done_purifications:
    before_after(done_purifications)

# --- the purified model beside the backdoored one ----------------------------------------------
done_models = {j.id: j.result.get("out") for j in done_purifications if j.result.get("out")}
if done_models:
    st.subheader("Attention: backdoored vs purified")
    pick = st.selectbox("Purified model", list(done_models.values()), key="pur_pick")
    b1, b2 = st.columns([1, 3])
    if b1.button("Use it as the pair's clean side", key="pur_use"):
        st.session_state["pair"] = {**pair, "clean": pick}
        st.success(f"The pair is now backdoored `{pair.get('backdoored')}` and clean `{pick}`.")
    sentence = st.text_input("Sentence", "the film was awful and dull", key="pur_sentence")
    if trigger.strip():
        with guard("The attention view"):
            inp = prepare_probe(sentence, trigger.strip(), "end", 1, 0)
            series, preds = {}, []
            for name, src in (("backdoored", source), ("purified", pick)):
                m = get_model(src)
                if m is None:
                    continue
                res = probe(m, inp)
                series[name] = np.asarray(res.triggered.cls_trigger_mass())
                preds.append({"model": name, "clean sentence": res.label_names[res.clean.label],
                              "with the trigger": res.label_names[res.triggered.label]})
            if series:
                st.dataframe(pd.DataFrame(preds), hide_index=True)
                st.plotly_chart(trigger_curves(series, title="[CLS] attention on the trigger, per layer"),
                                width="stretch", key="pur_curves")
    else:
        st.info("Type the trigger above to compare the [CLS] attention on it.")

# --- detection baselines: flag poisoned inputs instead of purifying -----------------------------
st.subheader("Detect poisoned inputs (STRIP, RAP)")
st.caption("Detection baselines of the seed's Table I: fitted on clean dev data only (the threshold sits at the "
           "chosen false-rejection rate), then scored on clean and triggered test inputs. CLI twin: "
           "`trojanscope detect --model DIR --method strip|rap --data sst2 --json`.")
d1, d2, d3 = st.columns([1, 1, 1])
from trojanscope.defenses import detectors  # noqa: E402

det_method = d1.selectbox("Detector", detectors(), key="pur_det_method",
                          format_func=lambda m: f"{m}: {get_defense(m).description}")
det_frr = d2.number_input("False-rejection rate", 0.001, 0.5, 0.01, step=0.01, format="%g", key="pur_det_frr")
det_n = d3.number_input("Test inputs of each kind", 20, 2000, 200, step=20, key="pur_det_n")
det_go = st.button("Run the detector", key="pur_det_go", disabled=not trigger.strip(),
                   help="runs as a job: a bar with the time left and Cancel; its result is kept for these inputs")
det_spec = DetectTaskSpec(model=source or "", method=det_method, data=data, trigger=trigger.strip() or None,
                          target=int(target) if (target_known or not attack.is_por) else None, n=int(det_n),
                          knobs={"frr": float(det_frr)}, seed=int(seed), device=device)
det_found = analysis_jobs("pur_det", [det_spec], det_go, noun=f"{det_method} detection")[0] \
    if source and trigger.strip() else None
if det_found:
    from trojanscope.viz.figures import score_histograms

    with guard("Showing the detector"):
        res = det_found[1]
        name = res["method"]
        st.dataframe(pd.DataFrame([{"detector": name, "FRR": pct(res["frr"]), "FAR": pct(res["far"]),
                                    "AUROC": round(res["auroc"], 4), "ASR": pct(res["asr"]), "clean": res["n_clean"],
                                    "triggered": res["n_poisoned"], "seconds": res.get("seconds")}]),
                     hide_index=True)
        st.caption(f"FRR is measured on {res['n_clean']} clean *test* inputs; the threshold was set on clean *dev* "
                   f"data to flag {pct(float(det_frr))} of it (RAP: on the dev part it did not train on). Test "
                   "scores spread differently, so the measured FRR can differ from the one asked, the more so the "
                   "fewer dev texts set it. FAR: triggered test inputs (of the non-target classes) let through.")
        st.plotly_chart(score_histograms(res["scores_clean"], res["scores_poisoned"], res["threshold"],
                                         title=f"{name}: scores on clean vs triggered inputs"),
                        width="stretch", key="pur_det_hist")
        st.caption(computed_note(det_found[0]))
        cli_twin(det_spec)

# --- representation map: is token-split text out of the clean distribution? -------------------
st.subheader("Representation map")
st.caption("Where clean, triggered and augmented texts (token splitting, EDA, AEDA, Add Trig) land in the "
           "model's [CLS] space (seed Fig. 3), and how far each set lies from the clean data: the mean distance "
           "to the 10 nearest clean texts, relative to clean texts' own (1 = as close as clean text). "
           "CLI twin: `trojanscope embed-map --model DIR --data sst2 --out map.html --json`.")
m1, m2, m3 = st.columns([2, 1, 1])
map_models = [source] + ([st.session_state["pur_pick"]] if done_models and st.session_state.get("pur_pick") else [])
map_method = m2.selectbox("Projection", ["umap", "tsne", "pca"], key="pur_map_method")
map_n = m3.number_input("Clean texts", 50, 2000, 300, step=50, key="pur_map_n")
m1.markdown("Models: " + ", ".join(f"`{m}`" for m in map_models))


map_go = st.button("Draw the map", key="pur_map_go",
                   help="one job per model: a bar with the time left and Cancel; the maps are kept for these inputs")
map_specs = [EmbedMapTaskSpec(model=m, data=data, trigger=trigger.strip() or None,
                              config=MapConfig(n=int(map_n), method=map_method, seed=int(seed)), device=device)
             for m in map_models if m]
maps = analysis_jobs("pur_map", map_specs, map_go, noun="representation map")
if any(maps):
    from trojanscope.viz.figures import embed_map_figure

    with guard("The representation map"):
        cols = st.columns(len(map_specs))
        for col, spec_, found in zip(cols, map_specs, maps):
            if not found:
                col.info(f"No map of `{spec_.model}` for these settings yet.")
                continue
            res = found[1]
            col.plotly_chart(embed_map_figure(res, title=spec_.model.rstrip("/").split("/")[-1]), width="stretch",
                             key=f"pur_map_{spec_.model}")
            col.dataframe(pd.DataFrame([{"set": r["set"], "kNN distance (x clean)": r["knn_ratio"],
                                         "silhouette vs clean": r["silhouette"]} for r in res["summary"]]),
                          hide_index=True)
            col.caption(computed_note(found[0]))

st.caption("Pair in use: " + ", ".join(f"{r} `{pair.get(r) or '—'}`" for r in ROLES))
