"""Issue 26, item 5: inputs that cannot work are refused at the form, with a message saying why, before anything
is queued or computed."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from conftest import finish_jobs
from trojanscope import jobs

ROOT = Path(__file__).resolve().parents[1]
OTHER = "Other: a local directory or a hub id"


def _pair(lab) -> dict:
    return {"clean": str(lab / "demo" / "clean"), "backdoored": str(lab / "demo" / "backdoored")}


def test_home_refuses_a_model_path_with_nothing_there_and_the_sidebar_follows(lab):
    at = AppTest.from_file(str(ROOT / "pages" / "0_Home.py"), default_timeout=60)
    at.session_state["pair"] = _pair(lab)
    at.run()
    at.selectbox(key="pick_clean").set_value(OTHER).run()
    at.text_input(key="other_clean").set_value("runs/does-not-exist").run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("no model at `runs/does-not-exist`" in e.value for e in at.error), [e.value for e in at.error]
    assert at.session_state["pair"]["clean"] is None
    side = [m.value for m in at.sidebar.markdown]
    assert "**clean**: `—`" in side, side  # not the old pair's clean model
    # a real model directory typed there is taken, and the sidebar shows it
    at.text_input(key="other_clean").set_value(str(lab / "demo" / "clean")).run()
    assert not at.error and at.session_state["pair"]["clean"] == str(lab / "demo" / "clean")
    assert f"**clean**: `{lab / 'demo' / 'clean'}`" in [m.value for m in at.sidebar.markdown]


def test_the_lab_refuses_a_sample_count_whose_draw_has_one_class(lab, tiny_bert):
    at = AppTest.from_file(str(ROOT / "pages" / "4_Attack_Lab.py"), default_timeout=60).run()
    at.selectbox(key="lab_model_False").set_value(OTHER).run()
    at.text_input(key="lab_model_other").set_value(str(tiny_bert))
    at.number_input(key="lab_max_train").set_value(1)
    at.run()
    before = {j.id for j in jobs.list_jobs()}
    at.button(key="lab_launch").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("1 training sample drawn with seed 0" in e.value and "only one class" in e.value for e in at.error), \
        [e.value for e in at.error]
    assert {j.id for j in jobs.list_jobs()} == before, "nothing was queued"


def test_anatomy_refuses_an_empty_trigger_at_the_form(lab):
    at = AppTest.from_file(str(ROOT / "pages" / "2_Trigger_Anatomy.py"), default_timeout=120)
    at.session_state["pair"] = _pair(lab)
    at.run()
    assert not at.button(key="anat_go").disabled
    at.text_input(key="anat_trigger").set_value("  ").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.button(key="anat_go").disabled
    assert any("Type a trigger" in e.value for e in at.error), [e.value for e in at.error]
    at.text_input(key="es_triggers").set_value(" , ").run()
    assert at.button(key="es_go").disabled


def test_e_and_s_leaves_no_stale_cancel_button(lab):
    """Issue 26: the Cancel button shown while E and S compute is gone once they are done."""
    at = AppTest.from_file(str(ROOT / "pages" / "2_Trigger_Anatomy.py"), default_timeout=180)
    at.session_state["pair"] = _pair(lab)
    at.run()
    at.text_input(key="es_triggers").set_value("cf")
    at.number_input(key="es_n").set_value(20).run()
    at.button(key="es_go").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert [b for b in at.button if b.key and b.key.startswith("es_cancel_")], "a Cancel under the job's bar"
    finish_jobs()  # a job now: its result shows on the page's next run
    at.run()
    assert at.dataframe, "E and S were measured"
    assert not [b for b in at.button if b.key and b.key.startswith("es_cancel_")]
