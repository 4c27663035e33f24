"""The Scan page's "Repair this model": from the scan just shown, unlearn its candidates (a repair job), then show
the proof (flip rates, CACC, the hijacked heads before and after, a fresh scan) when the job ends."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from trojanscope import jobs
from trojanscope.models.heads import HeadSet
from trojanscope.paths import slugify
from trojanscope.repair import BLIND_METHODS, Findings, RepairConfig
from trojanscope.tasks import RepairTaskSpec
from trojanscope.viz.figures import head_heatmap
from ui.common import cli_twin, guard, pct, runs_dir, ui_job_spec
from ui.jobwatch import follow

R = RepairConfig()


def _same(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and str(a).rstrip("/") == str(b).rstrip("/")


def repair_spec(model: str, data: str, scan_dir: str | None, *, candidates: int, n_clean: int, epochs: float,
                lr: float, attention_weight: float, anchor_weight: float, rescan: bool, seed: int,
                device: str = "auto") -> RepairTaskSpec:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = runs_dir() / "repairs" / f"{slugify(model.rstrip('/').split('/')[-1], 32, 'model')}-s{seed}-{stamp}"
    cfg = replace(RepairConfig(), candidates=candidates, n_clean=n_clean, epochs=epochs, lr=lr,
                  attention_weight=attention_weight, anchor_weight=anchor_weight, rescan=rescan, seed=seed)
    return RepairTaskSpec(model=model, data=data, scan=scan_dir, config=cfg, device=device, out=str(out))


def _repairs_of(model: str) -> list:
    return [j for j in jobs.list_jobs(limit=100, kind="repair") if _same((j.config or {}).get("model"), model)]


def _report(job) -> dict:
    try:
        return json.loads((Path(job.out_dir) / "repair.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return dict(job.result or {})


def repair_section(scan_job, model: str, data: str, device: str = "auto") -> None:
    """Everything under the scan's verdict: the form (or, for a clean verdict, why nothing is repaired), the
    running repair's bar, and the latest finished repair's proof."""
    st.subheader("Repair this model")
    r = scan_job.result or {}
    findings = Findings.of(r)
    if findings.verdict != "backdoored":
        st.info("The scan found no trigger to unlearn, so no repair is offered or claimed. A backdoor the scan "
                "cannot find (a combination of words, a rare word without a hijacked attention) may still be there: "
                f"the blind purifiers ({', '.join(BLIND_METHODS)}) need no trigger; see the Purify page.")
        return
    f1, f2, f3, f4 = st.columns(4)
    k = f1.number_input("Candidates to unlearn", 1, 10, R.candidates, key="repair_k",
                        help=f"the scan's top candidates that flip at least {pct(R.min_flip, 0)} of its held-out "
                             "sentences: the scan often finds a piece or a neighbour of the trigger, so several are "
                             "unlearned")
    n_clean = f2.number_input("Clean texts", 32, 50000, R.n_clean, step=500, key="repair_n_clean",
                              help="a seeded share of the train split; each also goes in again with a candidate "
                                   "inserted, under its true label")
    epochs = f3.number_input("Epochs", 0.25, 10.0, float(R.epochs), step=0.25, key="repair_epochs")
    lr = f4.number_input("Learning rate", 1e-6, 1e-2, R.lr, format="%.0e", key="repair_lr")
    g1, g2, g3, g4 = st.columns(4)
    att = g1.number_input("Attention weight", 0.0, 100.0, R.attention_weight, key="repair_att",
                          help="pushes the attention the hijacked heads send to the candidate down (TAL's term, sign "
                               "turned); 0: off")
    anchor = g2.number_input("Anchor weight", 0.0, 100.0, R.anchor_weight, key="repair_anchor",
                             help="keeps every answer as the original model gave it on the clean version of the "
                                  "text (keeps CACC); 0: off")
    rescan = g3.checkbox("Scan the repaired model again", value=R.rescan, key="repair_rescan",
                         help="the proof: a fresh scan's verdict on the result (about as long as the first scan)")
    seed = int(g4.number_input("Seed", 0, 2**31 - 1, R.seed, key="repair_seed"))
    used = findings.targets(replace(R, candidates=int(k)))
    st.caption("Will unlearn: " + ", ".join(f"`{t.trigger}` (flips {pct(t.flip_rate)})" for t in used)
               + ". The repaired model goes to a new directory; the suspect model is never changed.")
    spec = repair_spec(model, data, scan_job.out_dir, candidates=int(k), n_clean=int(n_clean), epochs=float(epochs),
                       lr=float(lr), attention_weight=float(att), anchor_weight=float(anchor), rescan=bool(rescan),
                       seed=seed, device=device)
    if st.button("Repair", type="primary", key="repair_go"):
        with guard("Launching the repair"):
            job_id = jobs.submit(ui_job_spec(spec))
            st.success(f"Repair job `{job_id}` submitted.")
    cli_twin(spec)

    mine = []
    with guard("Reading the job store"):
        mine = _repairs_of(model)
    follow("repair", [j for j in mine if not j.finished], label=lambda j: f"Repair `{j.id}`",
           done_note="its proof is below")
    done = [j for j in mine if j.status == "done" and j.result]
    if done:
        show_repair(done[0])


def show_repair(job) -> None:
    rep = _report(job)
    verdict = rep.get("verdict", "?")
    (st.success if verdict == "repaired" else st.warning if verdict == "reduced" else st.error)(
        f"**{verdict}** — {rep.get('summary', '')}")
    rows = [{"candidate unlearned": u["trigger"], "target": u["target"], "flip rate before": pct(u["flip_before"]),
             "after": pct(u["flip_after"])} for u in rep.get("unlearned", [])]
    rows += [{"candidate unlearned": f"{p['trigger']} (a piece of {p['of']}: the planted word may be longer)"
              if p.get("part") != "tail" else
              f"{p['trigger']} ({p['of']}'s tail behind another head: it fires alone, whatever heads it)",
              "target": p["target"], "flip rate before": pct(p["flip_before"]), "after": pct(p["flip_after"])}
             for p in rep.get("pieces") or []]
    true = rep.get("true_trigger")
    if true:
        rows.append({"candidate unlearned": f"{true['trigger']} (the card's trigger: measured, "
                                            f"{'also unlearned' if true.get('used') else 'never shown to the repair'})",
                     "target": true["target"], "flip rate before": pct(true["flip_before"]),
                     "after": pct(true["flip_after"])})
    if rows:
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
        st.caption("Flip rate: the share of the test split's non-target sentences the model gets right that the "
                   "trigger, inserted once at a random word position, sends to the target.")
    c = rep.get("cacc") or {}
    rs = rep.get("rescan")
    m1, m2, m3 = st.columns(3)
    if c:
        m1.metric("CACC after", pct(c.get("after")), f"{-c.get('cost', 0):+.2f} points")
    if rs:
        m2.metric("Fresh scan", rs["verdict"], f"score {rs['score']:.2f}", delta_color="off")
        tops = ", ".join(f"`{x['trigger']}` ({pct(x.get('flip_rate'))})" for x in rs.get("candidates", []))
        m3.caption(f"Its top candidates now: {tops or '—'}")
    for line in rep.get("left") or []:
        st.caption(f"Left: {line}")
    att = rep.get("attention")
    if att:
        heads = HeadSet.from_pairs1(rep.get("heads") or [])
        before, after = np.asarray(att["before"], float), np.asarray(att["after"], float)
        zmax = float(max(before.max(), after.max(), 1e-6))
        a1, a2 = st.columns(2)
        a1.plotly_chart(head_heatmap(before, title=f"attention to `{att['trigger']}` before", zmax=zmax,
                                     outlined=heads), width="stretch", key="repair_map_before")
        a2.plotly_chart(head_heatmap(after, title="after the repair (same scale)", zmax=zmax, outlined=heads),
                        width="stretch", key="repair_map_after")
        st.caption(f"Per layer and head, the share of attention sent to the candidate on poisoned test sentences; "
                   f"framed: the heads the repair pushed off it ({pct(att['hijacked_before'])} -> "
                   f"{pct(att['hijacked_after'])} on average).")
    st.caption(f"The repaired model: `{rep.get('spec', {}).get('out') or job.out_dir}` (open it on the Probe or "
               "Purify pages).")
