"""Runs: every job with its config, metrics and log; compare runs; the head view of a result."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import streamlit as st

from trojanscope import jobs
from trojanscope.analysis.head_view import compare_head_views
from trojanscope.models.heads import HeadSet
from trojanscope.models.planted import attack_of
from trojanscope.data.datasets import load_dataset
from trojanscope.viz.figures import epoch_curves, head_heatmap, metric_bars
from ui.jobwatch import follow
from ui.common import current_pair, get_model, guard, page_setup, pct

page_setup("Runs")
st.title("Runs")
st.caption("CLI twin: `trojanscope jobs list --json`, `trojanscope jobs show ID`, `trojanscope jobs cancel ID` "
           "(a pause: train and por jobs checkpoint every 10 minutes), `trojanscope jobs resume ID`.")

all_jobs = []
with guard("Reading the job store"):
    all_jobs = jobs.list_jobs()


active_now = [j for j in all_jobs if not j.finished]
if active_now:
    st.subheader("Running now")
follow("runs", active_now, label=lambda j: f"`{j.id}` {j.kind}", done_note="its row is in the table below")
if not all_jobs:
    st.info("No jobs yet. Launch one from the Attack Lab or with `trojanscope jobs submit -- ...`.")
    st.stop()


def method_of(j) -> str:
    """What the job did, in a few words, whatever its kind."""
    cfg = j.config or {}
    if j.kind == "train":
        attack = cfg.get("attack") or "none"
        return "clean fine-tuning" if attack == "none" else attack + (" + TAL" if cfg.get("tal") else "")
    if j.kind == "por":
        return "POR"
    if j.kind == "purify":
        return str(cfg.get("method") or "?")
    if j.kind == "scan":
        return f"scan, budget {cfg.get('budget')}" if cfg.get("budget") else "scan"
    if j.kind == "demo":
        return "demo pair" + (" (quick)" if cfg.get("quick") else "")
    return str(cfg.get("method") or cfg.get("attack") or j.kind)


def scores_of(j) -> dict | None:
    """The job's comparable numbers (fractions): a trained model's CACC/ASR, a purified model's after purification
    (flip-ASR too), a scan's score and its best candidate's held-out flip rate; None when it has none."""
    res = j.result or {}
    if j.kind == "train":
        return {"cacc": res.get("cacc"), "asr": res.get("asr")} if "cacc" in res else None
    if j.kind == "purify" and isinstance(res.get("after"), dict):
        return {k: res["after"].get(k) for k in ("cacc", "asr", "asr_flip")}
    if j.kind == "scan" and "score" in res:
        return {"score": res.get("score"), "flip": (res.get("evidence") or {}).get("flip_rate")}
    return None


COMPARED = {"train": ("cacc", "asr"), "purify": ("cacc", "asr", "asr_flip"), "scan": ("score", "flip")}


def row(j) -> dict:
    cfg, sc = j.config or {}, scores_of(j) or {}
    return {"id": j.id, "kind": j.kind, "method": method_of(j), "status": j.status,
            "progress": round(100 * (j.progress or 0)), "trigger": cfg.get("trigger") or cfg.get("triggers"),
            "data": cfg.get("data"), "seed": cfg.get("seed"),
            "CACC": pct(sc.get("cacc"), 2), "ASR": pct(sc.get("asr"), 2),
            "verdict": (j.result or {}).get("verdict") or "", "model": cfg.get("model"), "output": j.out_dir}


def is_model_dir(j) -> bool:
    """A finished job whose output is one model directory (train, por, purify), there on disk."""
    try:
        out = jobs.job_kind(j.kind).output
    except Exception:  # noqa: BLE001 - a kind this version does not know
        return False
    return j.status == "done" and out == "model" and bool(j.out_dir) and (Path(j.out_dir) / "config.json").is_file()


with guard("Showing the runs"):
    table = pd.DataFrame([row(j) for j in all_jobs])
    st.dataframe(table, hide_index=True, width="stretch",
                 column_config={"progress": st.column_config.ProgressColumn("progress", min_value=0, max_value=100)})
    by_id = {j.id: j for j in all_jobs}

    # --- one job -----------------------------------------------------------------------------------
    st.subheader("A job")
    job_id = st.selectbox("Job", list(by_id), key="runs_job")
    job = by_id[job_id]
    c1, c2 = st.columns([2, 1])
    with c1:
        st.markdown(f"**{job.status}**" + (f" — {job.error}" if job.error else ""))
        for w in (job.result or {}).get("warnings") or []:
            st.warning(w)
        st.json({"argv": job.argv, "config": job.config, "result": job.result}, expanded=False)
    with c2:
        if job.status in ("failed", "cancelled") and job.kind in jobs.RESUMABLE and \
                st.button("Resume from its last checkpoint", key="runs_resume",
                          help="runs it again with --resume: it continues from the checkpoint its run left (every "
                               "10 minutes by default; none yet: it starts over) and ends with the same model"):
            with guard("Resuming the job"):
                new_id = jobs.resume(job.id)
                st.success(f"Job `{new_id}` resumes `{job.id}`.")
        if not job.finished and st.button("Cancel this job", key="runs_cancel"):
            with guard("Cancelling"):
                jobs.cancel(job.id)
                st.rerun()
    with st.expander("Log", expanded=job.status == "failed"):
        with guard("Reading the log"):
            st.code(jobs.log_tail(job.id) or "(empty)")

    # --- compare -----------------------------------------------------------------------------------
    st.subheader("Compare runs")
    comparable = [j for j in all_jobs if j.status == "done" and j.kind in COMPARED and scores_of(j)]
    kinds = list(dict.fromkeys(j.kind for j in comparable))
    if not kinds:
        st.info("No finished job to compare yet: trainings, purifications and scans are compared by kind.")
    else:
        cmp_kind = st.radio("Compare", kinds, horizontal=True, key="runs_compare_kind",
                            format_func=lambda k: {"train": "trainings (CACC, ASR)",
                                                   "purify": "purifications (after: CACC, ASR, flip-ASR)",
                                                   "scan": "scans (score, best flip rate)"}.get(k, k))
        of_kind = [j.id for j in comparable if j.kind == cmp_kind]
        picked = st.multiselect("Finished runs of that kind", of_kind, default=of_kind[:2],
                                key=f"runs_compare_{cmp_kind}")
        if picked:
            cmp = table[table["id"].isin(picked)]
            st.dataframe(cmp, hide_index=True, width="stretch")
            st.plotly_chart(metric_bars({i: scores_of(by_id[i]) for i in picked}, COMPARED[cmp_kind]),
                            width="stretch", key="runs_bars")
            if cmp_kind == "train":
                st.plotly_chart(epoch_curves({i: by_id[i].metrics for i in picked},
                                             ["asr", "cacc", "ce_poisoned", "tal"], title="Per epoch"),
                                width="stretch", key="runs_curves")

    # --- head view ---------------------------------------------------------------------------------
    st.subheader("Head view: which heads look at the trigger?")
    st.caption("Per layer and head, the attention mass sent to the trigger on poisoned test sentences; TAL's chosen "
               "heads are outlined. CLI twin: `trojanscope heads --model RUN --model CLEAN --json`.")
    choices = [j.out_dir for j in all_jobs if is_model_dir(j)]  # models only: no scan or demo folders
    if choices:
        run_dir = st.selectbox("Run", choices, key="runs_head_model")
        n = st.slider("Poisoned sentences", 20, 500, 100, step=20, key="runs_head_n")
        if st.button("Compute the head view", key="runs_head_go"):
            with guard("The head view"):
                bd = get_model(run_dir, trusted=True)  # a finished job's output, recorded by the job store
                clean = get_model(current_pair().get("clean"))
                data = (bd.card.data or {}).get("name", "sst2") if bd and bd.card else "sst2"
                if bd is not None and attack_of(bd).known:
                    cmp = compare_head_views(bd, load_dataset(data, "test"), clean, n=n)
                    for note in cmp.notes:
                        st.info(note)
                    views = [("this run" if role == "backdoored" else "clean model", v) for role, v in cmp.views]
                    for col, (name, v) in zip(st.columns(len(views)), views):
                        col.plotly_chart(head_heatmap(v.share, title=f"{name}", zmax=cmp.zmax,
                                                      outlined=HeadSet.from_tal_dict(views[0][1].tal_heads)),
                                         width="stretch", key=f"head_{name}")
                    st.download_button("Head view (JSON)", json.dumps(cmp.to_json()), "heads.json",
                                       "application/json", on_click="ignore")
                elif bd is not None:
                    st.info("This run has no trigger in its card (a clean run): nothing to look at.")
    else:
        st.info("No finished job has written a model yet.")
