"""AppTest on the Attack Lab and Runs pages: a launch from the UI becomes a durable job that a new
session (a closed tab, a reload) finds finished, and the Runs page shows and compares it."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from conftest import wait_for_job
from trojanscope import jobs

ROOT = Path(__file__).resolve().parents[1]


def _wait(job_id: str, timeout: float = 120) -> jobs.Job:
    return wait_for_job(job_id, timeout)


def test_launch_from_the_lab_then_find_it_finished_in_a_new_session(lab, tiny_bert):
    at = AppTest.from_file(str(ROOT / "pages" / "4_Attack_Lab.py"), default_timeout=60).run()
    assert not at.exception
    at.selectbox(key="lab_model_False").set_value("Other: a local directory or a hub id").run()
    at.text_input(key="lab_model_other").set_value(str(tiny_bert))
    at.number_input(key="lab_rate").set_value(20.0)
    at.number_input(key="lab_epochs").set_value(2.0)
    at.number_input(key="lab_max_train").set_value(120)
    at.toggle(key="lab_tal").set_value(True)
    at.run()
    at.button(key="lab_launch").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    (job_id,) = at.session_state["lab_jobs"]
    job = jobs.get(job_id)
    assert job.config["attack"] == "badnets" and job.config["tal"] and job.config["poison_rate"] == 0.2
    # the tab is closed: nothing in this process keeps the job alive
    del at
    job = _wait(job_id)
    assert job.status == "done", (job.error, jobs.log_tail(job_id))
    assert [m["epoch"] for m in job.metrics] == [1, 2] and {"tal", "asr", "cacc"} <= set(job.metrics[-1])
    # a new session on the Runs page sees it, with its metrics
    runs = AppTest.from_file(str(ROOT / "pages" / "7_Runs.py"), default_timeout=60).run()
    assert not runs.exception
    df = runs.dataframe[0].value
    row = df[df["id"] == job_id].iloc[0]
    assert row["status"] == "done" and row["kind"] == "train" and row["method"] == "badnets + TAL" \
        and row["ASR"].endswith("%")
    # and the new model is in the model picker of the home page
    home = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    assert job.out_dir in home.selectbox(key="pick_clean").options


@pytest.mark.slow
def test_compare_launches_the_attack_with_and_without_tal(lab, tiny_bert):
    at = AppTest.from_file(str(ROOT / "pages" / "4_Attack_Lab.py"), default_timeout=60).run()
    at.selectbox(key="lab_model_False").set_value("Other: a local directory or a hub id").run()
    at.text_input(key="lab_model_other").set_value(str(tiny_bert))
    at.number_input(key="lab_max_train").set_value(60)
    at.number_input(key="lab_rate").set_value(20.0)
    at.run()
    at.button(key="lab_compare").click().run()
    ids = at.session_state["lab_compare_ids"]
    assert len(set(ids)) == 2
    assert [jobs.get(i).config["tal"] for i in ids] == [True, False]
    for i in ids:
        assert _wait(i).status == "done"
    runs = AppTest.from_file(str(ROOT / "pages" / "7_Runs.py"), default_timeout=60).run()
    assert not runs.exception
    assert set(runs.multiselect(key="runs_compare_train").value) == set(ids)


@pytest.mark.slow
def test_por_from_the_lab_is_a_por_job(lab, tiny_backbone):
    at = AppTest.from_file(str(ROOT / "pages" / "4_Attack_Lab.py"), default_timeout=60).run()
    at.selectbox(key="lab_attack").set_value("por").run()
    at.selectbox(key="lab_model_False").set_value("Other: a local directory or a hub id").run()
    at.text_input(key="lab_model_other").set_value(str(tiny_backbone))
    at.text_input(key="lab_por_triggers").set_value("cf,mn")
    at.text_input(key="lab_por_data").set_value("sst2")
    at.number_input(key="lab_por_texts").set_value(200)
    at.run()
    at.button(key="lab_por_launch").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    (job_id,) = at.session_state["lab_jobs"]
    job = _wait(job_id)
    assert job.kind == "por" and job.status == "done", (job.error, jobs.log_tail(job_id))
    assert job.config["triggers"] == "cf,mn" and job.config["max_texts"] == 200
    # the victim's step from the same page: clean fine-tuning of the POR encoder, which the
    # backbone picker now lists
    at.selectbox(key="lab_attack").set_value("none").run()
    assert job.out_dir in at.selectbox(key="lab_model_False").options
    assert at.toggle(key="lab_tal_off").value is False and at.text_input(key="lab_trigger_none").disabled
    at.selectbox(key="lab_model_False").set_value(job.out_dir)
    at.number_input(key="lab_max_train").set_value(60)
    at.run()
    assert not [b for b in at.button if b.key == "lab_compare"]  # nothing to compare without poisoning
    at.button(key="lab_launch").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    ft = _wait(at.session_state["lab_jobs"][-1])
    assert ft.kind == "train" and ft.status == "done", (ft.error, jobs.log_tail(ft.id))
    assert ft.config["attack"] == "none" and ft.config["model"] == job.out_dir
    assert Path(ft.out_dir).parent.name == "finetuned" and ft.result["asr"] is None
