"""The Purify page under AppTest: a purification launched from the UI becomes a job; when it is done,
the page shows ASR before and after and the attention of the backdoored vs the purified model."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from trojanscope import jobs

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def lab(tiny_pair, data_dir, monkeypatch, tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "demo").symlink_to(tiny_pair / "demo")
    monkeypatch.setenv("TROJANSCOPE_RUNS_DIR", str(runs))
    monkeypatch.setenv("TROJANSCOPE_DATA_DIR", str(data_dir))
    monkeypatch.setenv("TROJANSCOPE_UI_ALLOW_ANY_PATH", "1")  # the demo pair is a symlink to tmp models
    monkeypatch.chdir(ROOT)
    return runs


def _wait(job_id: str, timeout: float = 300) -> jobs.Job:
    end = time.time() + timeout
    while time.time() < end:
        job = jobs.get(job_id)
        if job.finished:
            return job
        jobs.schedule()
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not finish: {jobs.get(job_id)}")


def test_purify_from_the_page_then_see_asr_fall(lab):
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
    assert "pur_bars" in {el.key for el in at.get("plotly_chart")}
    # the attention view: backdoored vs purified on a triggered sentence
    assert "pur_curves" in {el.key for el in at.get("plotly_chart")}
    # the representation map, backdoored and purified side by side (PCA: fast)
    at.selectbox(key="pur_map_method").set_value("pca")
    at.number_input(key="pur_map_n").set_value(50)
    at.button(key="pur_map_go").click().run()
    assert not at.exception, [e.value for e in at.exception]
    maps = [el.key for el in at.get("plotly_chart") if el.key and el.key.startswith("pur_map_")]
    assert len(maps) == 2
    # the detection baselines: STRIP fitted on clean dev data, a histogram of its scores
    at.selectbox(key="pur_det_method").set_value("strip")
    at.number_input(key="pur_det_n").set_value(20)
    at.button(key="pur_det_go").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert "pur_det_hist" in {el.key for el in at.get("plotly_chart")}
