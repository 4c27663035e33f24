"""The Scan page under AppTest: a scan launched from the UI becomes a job; when it is done the page shows the
verdict, the ranked candidates (the planted cf among them), the drifting-heads map, and the same map for the
pair's clean model once that is scanned; a candidate goes to the Probe in one click."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
from streamlit.testing.v1 import AppTest

from conftest import wait_for_job
from trojanscope import jobs

ROOT = Path(__file__).resolve().parents[1]


def _scan_from_page(at: AppTest, button: str = "scan_go") -> str:
    before = {j.id for j in jobs.list_jobs(kind="scan")}
    at.button(key=button).click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    (job_id,) = {j.id for j in jobs.list_jobs(kind="scan")} - before
    job = wait_for_job(job_id, 300)
    assert job.status == "done", (job.error, jobs.log_tail(job_id))
    return job_id


def test_scan_from_the_page_shows_verdict_candidates_and_head_maps(lab):
    at = AppTest.from_file(str(ROOT / "pages" / "6_Scan.py"), default_timeout=120)
    at.session_state["pair"] = {"clean": str(lab / "demo" / "clean"), "backdoored": str(lab / "demo" / "backdoored")}
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="scan_model").value == str(lab / "demo" / "backdoored")
    at.number_input(key="scan_budget").set_value(200)
    at.number_input(key="scan_n_search").set_value(20)
    at.number_input(key="scan_n_verify").set_value(30)
    at.number_input(key="scan_inv_steps").set_value(40).run()
    # the pair's clean model as the reference: the planted cf flips nothing there and keeps its evidence
    at.selectbox(key="scan_reference").set_value(str(lab / "demo" / "clean")).run()
    job_id = _scan_from_page(at)
    job = jobs.get(job_id)
    assert job.result["verdict"] == "backdoored"
    assert job.config["reference"] == str(lab / "demo" / "clean")
    cf = [c for c in job.result["candidates"] if c["trigger"] == "cf"]
    assert cf and cf[0]["reference_flip"] <= 0.1
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert [m.value for m in at.metric][0] == "backdoored"
    table = at.dataframe[0].value
    assert "cf" in list(table["trigger"]) and "flips on the reference" in table.columns
    assert "scan_map" in {el.key for el in at.get("plotly_chart")}
    # the map outlines the result's drifting heads ([layer (1-based), head]) on their own rows (row 0 is layer 1)
    (chart,) = [el for el in at.get("plotly_chart") if el.key == "scan_map"]
    spec = json.loads(chart.proto.spec)
    shapes = spec["layout"].get("shapes", [])
    assert sorted([round(s["y0"] + 1.5), round(s["x0"] + 0.5)] for s in shapes) == sorted(job.result["heads"])
    # its cells are the per-head drift excess the scan recorded (scan.json), not a recomputation of the page's
    saved = json.loads((Path(job.out_dir) / "scan.json").read_text())
    z = spec["data"][0]["z"]
    if isinstance(z, dict):  # plotly's typed-array encoding
        z = np.frombuffer(base64.b64decode(z["bdata"]), dtype=z["dtype"]).reshape(
            [int(n) for n in str(z["shape"]).split(",")])
    np.testing.assert_allclose(np.asarray(z, dtype=float), saved["abnormality"][0]["head_excess"])
    assert np.asarray(z).any() or not job.result["heads"]  # drifting heads show on the map
    # the pair's clean model, scanned from the same page, gets its map beside
    _scan_from_page(at, "scan_clean_go")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert "scan_map_clean" in {el.key for el in at.get("plotly_chart")}
    # one click sends a candidate to the Probe
    at.selectbox(key="scan_pick").set_value("cf")
    at.button(key="scan_to_probe").click().run()
    assert at.session_state["probe_trigger"] == "cf"


def test_a_scan_with_a_bad_model_path_is_refused_before_queuing(lab, monkeypatch):
    monkeypatch.delenv("TROJANSCOPE_UI_ALLOW_ANY_PATH")
    at = AppTest.from_file(str(ROOT / "pages" / "6_Scan.py"), default_timeout=60)
    at.session_state["pair"] = {"clean": str(lab / "demo" / "clean"), "backdoored": str(lab / "demo" / "backdoored")}
    at.run()
    at.selectbox(key="scan_model").set_value("Other: a local directory or a hub id").run()
    at.text_input(key="scan_model_other").set_value("/etc").run()
    assert at.error, "a path outside runs/ and the data directory is refused"
    assert at.button(key="scan_go").disabled  # nothing to submit: the refused path never reaches the queue
    # a refused reference path: an error, and no scan without the reference asked for
    at.selectbox(key="scan_model").set_value(str(lab / "demo" / "backdoored")).run()
    assert not at.button(key="scan_go").disabled
    at.selectbox(key="scan_reference").set_value("Other: a local directory or a hub id").run()
    at.text_input(key="scan_reference_other").set_value("/etc").run()
    assert at.error and at.button(key="scan_go").disabled
