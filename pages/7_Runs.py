"""Runs: every job with its config, metrics and log; compare runs; the head view of a result."""

from __future__ import annotations

import json

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


def row(j) -> dict:
    cfg, res = j.config or {}, j.result or {}
    return {"id": j.id, "status": j.status, "progress": round(100 * (j.progress or 0)), "attack": cfg.get("attack"),
            "trigger": cfg.get("trigger"), "poison %": 100 * float(cfg.get("poison_rate") or 0),
            "TAL": bool(cfg.get("tal")), "data": cfg.get("data"), "seed": cfg.get("seed"),
            "CACC": pct(res.get("cacc"), 2), "ASR": pct(res.get("asr"), 2), "model": j.out_dir}


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
    done = [j.id for j in all_jobs if j.status == "done"]
    picked = st.multiselect("Finished runs", done, default=done[:2], key="runs_compare")
    if picked:
        cmp = table[table["id"].isin(picked)]
        st.dataframe(cmp, hide_index=True, width="stretch")
        st.plotly_chart(metric_bars({i: by_id[i].result for i in picked}, ("cacc", "asr")), width="stretch",
                        key="runs_bars")
        st.plotly_chart(epoch_curves({i: by_id[i].metrics for i in picked}, ["asr", "cacc", "ce_poisoned", "tal"],
                                     title="Per epoch"), width="stretch", key="runs_curves")

    # --- head view ---------------------------------------------------------------------------------
    st.subheader("Head view: which heads look at the trigger?")
    st.caption("Per layer and head, the attention mass sent to the trigger on poisoned test sentences; TAL's chosen "
               "heads are outlined. CLI twin: `trojanscope heads --model RUN --model CLEAN --json`.")
    choices = [j.out_dir for j in all_jobs if j.status == "done" and j.out_dir]
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
        st.info("No finished run yet.")
