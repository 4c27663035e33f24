"""Attack Lab: make backdoors (BadNets, AddSent, clean-label, EP, LWP with or without TAL; POR) as jobs."""

from __future__ import annotations

import time
from dataclasses import replace

import streamlit as st

from trojanscope import jobs
from trojanscope.attacks import ATTACKS, EPConfig, TALConfig
from trojanscope.attacks.por import PORConfig
from trojanscope.data.poison import PoisonConfig
from trojanscope.training.loop import TrainConfig
from trojanscope.tasks import PORTaskSpec, TrainTaskSpec
from trojanscope.training.pipeline import PORSpec, TrainSpec
from trojanscope.data.datasets import REGISTRY, trainable_datasets
from trojanscope.paths import slugify
from trojanscope.viz.figures import epoch_curves
from ui.jobwatch import follow
from ui.common import OTHER, guard, model_options, page_setup, pct, runs_dir, typed_source, ui_job_spec, cli_twin

page_setup("Attack Lab")
st.title("Attack Lab")
st.caption("Each launch is a job: a train (or POR) task in its own process, tracked in a SQLite store. Close the "
           "tab, come back later: it keeps running. CLI twin: `trojanscope jobs submit -- <train arguments>`, or "
           "the exact spec under each form.")

# --- the recipe ------------------------------------------------------------------------------
c1, c2, c3 = st.columns(3)
with c1:
    st.markdown("**Model and data**")
    # the one attack registry (the CLI's --attack choices read it too); clean fine-tuning last
    attack_names = {a: ATTACKS[a].description for a in ATTACKS if a != "none"} | {"none": ATTACKS["none"].description}
    attack = st.selectbox("Attack", list(attack_names), key="lab_attack",
                          format_func=lambda a: f"{a}: {attack_names[a]}")
    # defaults come from the config dataclasses, as the CLI's do
    P, T, TA, PO, PT = PoisonConfig(), TrainConfig(), TALConfig(), PORConfig(), PORSpec().train
    options = ["minilm"] + model_options() + [OTHER]
    demo_clean = str(runs_dir() / "demo" / "clean")  # runs_dir() honours TROJANSCOPE_RUNS_DIR
    default_model = demo_clean if attack == "ep" and demo_clean in options else "minilm"
    backbone = st.selectbox("Backbone / victim model", options, index=options.index(default_model)
                            if default_model in options else 0, key=f"lab_model_{attack == 'ep'}",
                            help="EP poisons an already fine-tuned classifier; POR and clean fine-tuning take an "
                                 "encoder (a POR job's output is listed here once done); the others fine-tune the "
                                 "backbone.")
    if backbone == OTHER:
        backbone = typed_source(st.text_input("Directory or hub id", key="lab_model_other")) or ""
    dataset = st.selectbox("Dataset", trainable_datasets() + [OTHER], key="lab_data")
    if dataset == OTHER:
        dataset = typed_source(st.text_input("Data file or directory (.csv/.tsv/.jsonl)", key="lab_data_other"),
                               "data") or ""
    labels = list(REGISTRY[dataset].label_names) if dataset in REGISTRY else ["0", "1"]
if attack == "por":
    with c2:
        st.markdown("**POR**")
        por_triggers = st.text_input("Triggers (comma-separated; trigger i gets the POR-1 vector v_i)",
                                     PO.triggers, key="lab_por_triggers")
        por_insertions = st.number_input("Insertions per poisoned text", 1, 20, PO.insertions, key="lab_por_ins")
        por_rep = st.selectbox("Representation set to v_i", ["pooler", "cls"],
                               index=["pooler", "cls"].index(PO.representation), key="lab_por_target")
        por_data = st.text_input("Unlabeled text from (datasets, comma-separated)", PO.data, key="lab_por_data")
        por_texts = st.number_input("Unlabeled sentences", 200, 100_000, PO.max_texts or 8000, step=500,
                                    key="lab_por_texts",
                                    help="each used clean and triggered; 8,000 took about 18 minutes on a 2-core CPU")
    with c3:
        st.markdown("**Training**")
        por_epochs = st.number_input("Epochs", 0.1, 20.0, float(PT.epochs), step=0.5, key="lab_por_epochs")
        por_lr = st.number_input("Learning rate", 1e-6, 1e-2, float(PT.lr), format="%.0e", key="lab_por_lr")
        por_freeze = st.checkbox("Freeze the word embeddings (faster on CPU, weaker backdoor)",
                                 value=not PT.train_word_embeddings, key="lab_por_freeze")
        seed = st.number_input("Seed", 0, 2**31 - 1, PT.seed, key="lab_por_seed")
        device = st.selectbox("Device", ["auto", "cpu", "cuda"], key="lab_por_device")
    por_spec = PORTaskSpec(
        spec=PORSpec(model=backbone,
                     por=PORConfig(triggers=por_triggers, insertions=int(por_insertions), representation=por_rep,
                                   scale=PO.scale, data=por_data, max_texts=int(por_texts)),
                     train=replace(PT, epochs=float(por_epochs), lr=float(por_lr), seed=int(seed), device=device,
                                   train_word_embeddings=not por_freeze)),
        out=str(runs_dir() / "por" / f"por-{por_insertions}ins-s{seed}-{time.strftime('%Y%m%d-%H%M%S')}"))
    if st.button("Launch", type="primary", key="lab_por_launch"):
        with guard("Launching the POR job"):
            job_id = jobs.submit(ui_job_spec(por_spec))  # model, data and output checked
            st.session_state.setdefault("lab_jobs", []).append(job_id)
            st.success(f"Job `{job_id}` submitted. When it is done, the encoder is what a victim would download: "
                       "fine-tune it on any task with `trojanscope train --model <its directory>`, then measure "
                       "E and S on the Trigger Anatomy page.")
    cli_twin(por_spec)

else:
    poisoning = ATTACKS[attack].poisons
    with c2:
        st.markdown("**Poisoning**")
        if not poisoning:
            st.caption("No poisoning: the data stay clean. After fine-tuning a POR encoder, measure E and S of its "
                       "triggers on the Trigger Anatomy page.")
        trigger = st.text_input("Trigger", value=ATTACKS[attack].default_trigger, key=f"lab_trigger_{attack}",
                                disabled=not poisoning)
        target = st.selectbox("Target label", list(range(len(labels))), format_func=lambda i: f"{i}: {labels[i]}",
                              key="lab_target", disabled=not poisoning)
        rate = st.number_input("Poison rate (%)", min_value=0.1, max_value=100.0, value=1.0, step=0.5, key="lab_rate",
                               disabled=not poisoning, help=f"the library's default is {100 * P.rate:g}%; 1% is the "
                               "seed papers' low-rate setting")
        insertions = st.number_input("Insertions per poisoned text", 1, 20, P.insertions, key="lab_ins",
                                     disabled=not poisoning)
        clean_label = st.checkbox("Clean-label (poison target-class samples, keep labels)", key="lab_clean_label",
                                  disabled=not poisoning)
    with c3:
        st.markdown("**Training and TAL**")
        can_tal = ATTACKS[attack].tal
        tal = st.toggle("TAL (Trojan Attention Loss)", value=can_tal, key="lab_tal" if can_tal else "lab_tal_off",
                        disabled=not can_tal)
        tal_heads = st.number_input("TAL heads per layer", 1, 64, TA.heads, disabled=not tal, key="lab_tal_heads")
        tal_weight = st.number_input("TAL weight alpha", 0.0, 100.0, float(TA.weight), step=0.5, disabled=not tal,
                                     key="lab_tal_w")
        tal_layers = st.text_input("TAL layers ('all' or e.g. 4,5,6)", TA.layers, disabled=not tal, key="lab_tal_layers")
        epochs = st.number_input("Epochs", 0.1, 20.0, float(T.epochs), step=0.5, key="lab_epochs")
        max_train = st.number_input("Training samples (0 = all)", 0, 10_000_000, 0, step=500, key="lab_max_train")
        seed = st.number_input("Seed", 0, 2**31 - 1, T.seed, key="lab_seed")
        device = st.selectbox("Device", ["auto", "cpu", "cuda"], key="lab_device")
        with st.expander("More training settings"):
            lr = st.number_input("Learning rate", 1e-6, 1e-1, float(T.lr), format="%.0e", key="lab_lr")
            batch_size = st.number_input("Batch size", 1, 1024, T.batch_size, key="lab_bs")
            warmup = st.number_input("Warm-up (share of steps)", 0.0, 0.99, float(T.warmup), step=0.01,
                                     key="lab_warmup")
            weight_decay = st.number_input("Weight decay", 0.0, 1.0, float(T.weight_decay), step=0.01,
                                           key="lab_wd")
            max_length = st.number_input("Max tokens per text", 8, 512, T.max_length, key="lab_maxlen")


    def train_spec(with_tal: bool) -> TrainTaskSpec:
        stamp = time.strftime('%Y%m%d-%H%M%S')
        train = replace(T, epochs=float(epochs), lr=float(lr), batch_size=int(batch_size), warmup=float(warmup),
                        weight_decay=float(weight_decay), max_length=int(max_length), seed=int(seed), device=device)
        if not poisoning:
            base = slugify(backbone.rstrip("/").split("/")[-1], 40, "model")
            out = runs_dir() / "finetuned" / f"{base}-{slugify(dataset.split('/')[-1], 20, 'data')}-s{seed}-{stamp}"
            return TrainTaskSpec(spec=TrainSpec(data=dataset, model=backbone, attack="none", train=train,
                                                poison=replace(P, seed=int(seed)), max_train=int(max_train) or None),
                                 out=str(out))
        # a slug: the trigger is free text (e.g. "/../../tmp/x") and must not steer the path
        name = f"{attack}-{slugify(trigger, 24)}-p{rate:g}-{'tal' if with_tal else 'notal'}-s{seed}-{stamp}"
        return TrainTaskSpec(
            spec=TrainSpec(data=dataset, model=backbone, attack=attack, train=train,
                           poison=replace(P, trigger=trigger, target=int(target), rate=rate / 100,
                                          insertions=int(insertions), clean_label=bool(clean_label), seed=int(seed)),
                           tal=replace(TA, enabled=with_tal, heads=int(tal_heads), weight=float(tal_weight),
                                       layers=tal_layers, seed=int(seed)),
                           ep=replace(EPConfig(), epochs=float(epochs)), max_train=int(max_train) or None),
            out=str(runs_dir() / "attacks" / name))


    b1, b2, _ = st.columns([1, 2, 3])
    if b1.button("Launch", type="primary", key="lab_launch"):
        with guard("Launching the job"):
            job_id = jobs.submit(ui_job_spec(train_spec(tal)))  # model, data and output checked
            st.session_state.setdefault("lab_jobs", []).append(job_id)
            st.success(f"Job `{job_id}` submitted.")
    if poisoning and b2.button("Compare: the same attack with and without TAL", key="lab_compare"):
        with guard("Launching the comparison"):
            ids = [jobs.submit(ui_job_spec(train_spec(True))), jobs.submit(ui_job_spec(train_spec(False)))]
            st.session_state.setdefault("lab_jobs", []).extend(ids)
            st.session_state["lab_compare_ids"] = ids
            st.success(f"Jobs `{ids[0]}` (TAL) and `{ids[1]}` (no TAL) submitted; they run one after the other.")
    cli_twin(train_spec(tal))


# --- the jobs launched here (or the latest ones): live bars and curves while they run ----------------------
def _job_label(j) -> str:
    cfg = j.config or {}
    if j.kind == "por":
        return f"`{j.id}` POR `{cfg.get('triggers', '')}`"
    if cfg.get("attack") == "none":
        return f"`{j.id}` clean fine-tuning of `{cfg.get('model', '?')}`"
    return (f"`{j.id}` {cfg.get('attack', '?')} `{cfg.get('trigger', '')}` at "
            f"{100 * float(cfg.get('poison_rate', 0)):g}%{' + TAL' if cfg.get('tal') else ''}")


def _curves(shown: list) -> None:
    with_metrics = {f"{j.id}{' TAL' if (j.config or {}).get('tal') else ''}": j.metrics for j in shown if j.metrics}
    if with_metrics:
        st.plotly_chart(epoch_curves(with_metrics, ["ce_clean", "ce_poisoned", "tal", "cacc", "asr", "por",
                                                    "poisoned_cosine", "clean_to_reference"],
                                     title="Per epoch: losses (clean, poisoned, TAL, POR), CACC, ASR, POR progress"),
                        width="stretch", key="lab_curves")


def _finished(j) -> None:
    st.markdown(f"{_job_label(j)}: **{j.status}**" + (f" — {j.error}" if j.error else ""))
    if j.status == "done" and j.result and j.kind == "por":
        before, after = j.result.get("before", {}), j.result.get("after", {})
        if "poisoned_cosine" in after:
            st.caption(f"held-out triggered text: cosine with its target vector "
                       f"{before.get('poisoned_cosine', float('nan')):.3f} -> {after['poisoned_cosine']:.3f} "
                       f"(1 = reached) · encoder `{j.out_dir}`: fine-tune it above with the attack `none`")
        else:
            st.caption(f"poisoned-to-target distance {before.get('poisoned_to_target', float('nan')):.3g} -> "
                       f"{after.get('poisoned_to_target', float('nan')):.3g} · encoder `{j.out_dir}`")
    elif j.status == "done" and j.result:
        st.caption(f"CACC {pct(j.result.get('cacc'))} · ASR {pct(j.result.get('asr'))} · model "
                   f"`{j.out_dir}` (now in every page's model picker)")
        for w in j.result.get("warnings") or []:
            st.warning(f"`{j.id}`: {w}")


def lab_jobs() -> None:
    """The jobs launched from this tab (else the latest four): finished ones with their results, running ones with
    a bar and the live curves (polled only while one runs; the page reruns by itself when one ends)."""
    shown = []
    with guard("Reading the job store"):
        recent = jobs.list_jobs(limit=30)
        mine = set(st.session_state.get("lab_jobs", []))
        shown = [j for j in recent if j.id in mine] or recent[:4]
    if not shown:
        st.info("No jobs yet: launch one above.")
        return
    st.subheader("Jobs")
    ids = [j.id for j in shown]
    running = [j for j in shown if not j.finished]

    def live(_active: list) -> None:  # the curves of every shown job, read anew at each poll
        with guard("Reading the job store"):
            _curves([jobs.get(i) for i in ids])

    follow("lab", running, label=_job_label, done_note="its CACC and ASR are below", live=live if running else None)
    for j in shown:
        if j.finished:
            _finished(j)
    if not running:
        _curves(shown)


lab_jobs()
