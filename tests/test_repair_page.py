"""The Scan page's "Repair this model" under AppTest: from the scan just shown, one click queues a repair job
that reuses that scan; when it ends the page shows the verdict, the flip rates before and after (the card's
trigger among them), CACC and the attention maps before and after; a clean verdict offers no repair."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from streamlit.testing.v1 import AppTest

from conftest import wait_for_job
from trojanscope import jobs
from trojanscope.analysis.scan import ScanConfig
from trojanscope.tasks import ScanTaskSpec

ROOT = Path(__file__).resolve().parents[1]
SCAN = replace(ScanConfig(), budget=200, n_search=20, n_verify=30, inversion_steps=40)


def _scanned(lab: Path, which: str) -> str:
    job_id = jobs.submit(ScanTaskSpec(model=str(lab / "demo" / which), data="sst2", config=SCAN,
                                      out=str(lab / "scans" / which)))
    job = wait_for_job(job_id, 300)
    assert job.status == "done", (job.error, jobs.log_tail(job_id))
    return str(lab / "demo" / which)


def _page(lab: Path, model: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / "6_Scan.py"), default_timeout=120)
    at.session_state["pair"] = {"clean": str(lab / "demo" / "clean"), "backdoored": str(lab / "demo" / "backdoored")}
    at.session_state["scan_model"] = model
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_repair_from_the_scan_page_shows_the_proof(lab):
    model = _scanned(lab, "backdoored")
    at = _page(lab, model)
    assert "Repair this model" in [h.value for h in at.subheader]
    assert any("`cf`" in c.value for c in at.caption if c.value.startswith("Will unlearn"))
    at.number_input(key="repair_n_clean").set_value(300)
    at.number_input(key="repair_epochs").set_value(3.0)
    at.number_input(key="repair_lr").set_value(1e-3)
    at.checkbox(key="repair_rescan").uncheck().run()
    before = {j.id for j in jobs.list_jobs(kind="repair")}
    at.button(key="repair_go").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    (job_id,) = {j.id for j in jobs.list_jobs(kind="repair")} - before
    job = wait_for_job(job_id, 600)
    assert job.status == "done", (job.error, jobs.log_tail(job_id))
    assert job.spec["scan"] and Path(job.spec["scan"]).name == "backdoored"  # the scan shown, not a new one
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(s.value.startswith("**repaired**") for s in at.success), [s.value for s in at.success]
    table = at.dataframe[-1].value
    assert "cf" in list(table["candidate unlearned"])
    assert any("the card's trigger" in t for t in table["candidate unlearned"])
    keys = {el.key for el in at.get("plotly_chart")}
    assert {"repair_map_before", "repair_map_after"} <= keys


def test_a_clean_verdict_offers_no_repair(lab):
    model = _scanned(lab, "clean")
    at = _page(lab, model)
    assert "Repair this model" in [h.value for h in at.subheader]
    assert any("no repair is offered" in i.value for i in at.info)
    assert not [b for b in at.button if b.key == "repair_go"]
