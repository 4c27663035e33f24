"""The Purify page under AppTest: a purification launched from the UI becomes a job; when it is done,
the page shows CACC/ASR before and after, the attention of the backdoored vs the purified model, the
representation map and a detector's scores."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from conftest import finish_jobs, wait_for_job
from trojanscope import jobs
from ui.common import pct

ROOT = Path(__file__).resolve().parents[1]


def _wait(job_id: str, timeout: float = 300) -> jobs.Job:
    return wait_for_job(job_id, timeout)


def test_purify_from_the_page_shows_before_after_attention_map_and_detector(lab):
    """(The tiny pair's backdoor lives in the cf embedding row, out of reach of clean data: the falling
    ASR is asserted in tests/test_defenses.py on a backdoor in the encoder.)"""
    at = AppTest.from_file(str(ROOT / "pages" / "5_Purify.py"), default_timeout=120)
    at.session_state["pair"] = {"clean": str(lab / "demo" / "clean"), "backdoored": str(lab / "demo" / "backdoored")}
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    # trigger and target come from the card; the splitting preview is there
    assert at.text_input(key=f"pur_trigger_{lab / 'demo' / 'backdoored'}").value == "cf"
    assert at.selectbox(key="pur_method").value == "mbtsad"
    at.selectbox(key="pur_method").set_value("cft").run()
    at.slider(key="pur_fraction").set_value(0.5).run()
    at.number_input(key="pur_knob_cft_epochs").set_value(6).run()
    at.number_input(key="pur_knob_cft_lr").set_value(3e-3).run()
    at.button(key="pur_launch").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    (job_id,) = at.session_state["pur_jobs"]
    job = _wait(job_id)
    assert job.status == "done", (job.error, jobs.log_tail(job_id))
    assert job.result["before"]["asr"] is not None
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    table = at.dataframe[0].value
    assert list(table["method"]) == ["cft"]
    # the before/after table shows the job's own numbers and verdict
    r = job.result
    row = table.iloc[0]
    assert row["job"] == job_id and row["clean texts"] == r["n_clean"]
    for side in ("before", "after"):
        assert row[f"CACC {side}"] == pct(r[side]["cacc"]) and row[f"ASR {side}"] == pct(r[side]["asr"])
        assert row[f"flip-ASR {side}"] == pct(r[side].get("asr_flip"))
    assert r["verdict"] in ("removed", "reduced", "still there") and row["verdict"] == r["verdict"]
    # ... and the verdict line, in the colour of its verdict, says the job's summary
    box = {"removed": at.success, "reduced": at.warning, "still there": at.error}[r["verdict"]]
    assert [el.value for el in box if r["summary"] in el.value] == [f"Latest (cft): {r['summary']}."]
    assert "pur_bars" in {el.key for el in at.get("plotly_chart")}
    # the attention view: backdoored vs purified on a triggered sentence
    assert "pur_curves" in {el.key for el in at.get("plotly_chart")}
    # the representation map, backdoored and purified side by side (PCA: fast)
    at.selectbox(key="pur_map_method").set_value("pca")
    at.number_input(key="pur_map_n").set_value(50)
    at.button(key="pur_map_go").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert len(jobs.list_jobs(kind="embed-map")) == 2  # one job per model
    finish_jobs()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    maps = [el.key for el in at.get("plotly_chart") if el.key and el.key.startswith("pur_map_")]
    assert len(maps) == 2
    # the detection baselines: STRIP fitted on clean dev data, a histogram of its scores
    at.selectbox(key="pur_det_method").set_value("strip")
    at.number_input(key="pur_det_n").set_value(20)
    at.button(key="pur_det_go").click().run()
    finish_jobs()
    at.run()
    errors = [e.value for e in at.error if not e.value.startswith("Latest (")]  # (the verdict line may be red)
    assert not at.exception and not errors, errors
    assert "pur_det_hist" in {el.key for el in at.get("plotly_chart")}
    (shown,) = [df.value for df in at.dataframe if "detector" in df.value.columns]
    assert shown.iloc[0]["detector"] == "strip" and shown.iloc[0]["clean"] == shown.iloc[0]["triggered"] == 20
    assert shown.iloc[0]["ASR"].endswith("%")  # the triggered inputs' ASR, as `trojanscope detect` reports it
