"""Issue 26, item 6: a config declares each knob's meaning and bounds beside it (trojanscope.specs.knob); validation
enforces them and the Purify form shows them (help on every MBTSAD knob, a select for its choices, the bad value
refused at the form), with a time estimate from this machine's finished runs."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import pytest
from streamlit.testing.v1 import AppTest

from trojanscope.defenses.mbtsad import ABLATIONS, MBTSADConfig
from trojanscope.errors import TrojanScopeError
from trojanscope.jobs.eta import run_estimate
from trojanscope.specs import check_knobs, knobs_of

ROOT = Path(__file__).resolve().parents[1]


def test_every_mbtsad_knob_says_what_it_means_and_validation_enforces_its_bounds():
    declared = knobs_of(MBTSADConfig)
    assert set(declared) == {f.name for f in dataclasses.fields(MBTSADConfig)}
    assert all(len(k["help"]) > 10 for k in declared.values())
    assert declared["ablation"]["choices"] == ABLATIONS
    MBTSADConfig().validate()
    with pytest.raises(TrojanScopeError, match=r"MBTSAD: ratio must be above 0 and at most 1, got 0 \(ratio: share"):
        MBTSADConfig(ratio=0.0).validate()
    with pytest.raises(TrojanScopeError, match=r"beta must be at least 0, got -1 \(beta: weight of the attention"):
        MBTSADConfig(beta=-1.0).validate()
    with pytest.raises(TrojanScopeError, match="unknown ablation 'all'; allowed: none, no_att, no_hid, ce_only"):
        MBTSADConfig(ablation="all").validate()
    with pytest.raises(TrojanScopeError, match="k must be at least 1"):
        check_knobs(MBTSADConfig(k=0), "MBTSAD")


def test_the_estimate_scales_this_machines_runs_by_clean_texts_and_epochs():
    jobs = [SimpleNamespace(started=0.0, ended=100.0, n=1000), SimpleNamespace(started=0.0, ended=300.0, n=1000),
            SimpleNamespace(started=0.0, ended=None, n=1000), SimpleNamespace(started=0.0, ended=50.0, n=None)]
    seconds, k = run_estimate(jobs, 4000, lambda j: j.n)
    assert k == 2 and seconds == pytest.approx(0.2 * 4000)  # median of 0.1 and 0.3 s per unit
    assert run_estimate([], 100, lambda j: 1) is None


def test_the_purify_form_shows_each_knobs_help_and_refuses_a_bad_value_at_the_form(lab):
    at = AppTest.from_file(str(ROOT / "pages" / "5_Purify.py"), default_timeout=120)
    at.session_state["pair"] = {"clean": str(lab / "demo" / "clean"), "backdoored": str(lab / "demo" / "backdoored")}
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="pur_method").value == "mbtsad"
    beta = at.number_input(key="pur_knob_mbtsad_beta")
    assert "attention-distillation" in beta.help and beta.min == 0
    assert at.number_input(key="pur_knob_mbtsad_ratio").max == 1
    ablation = at.selectbox(key="pur_knob_mbtsad_ablation")  # a choice, not free text
    assert list(ablation.options) == list(ABLATIONS)
    assert any("No mbtsad purification has finished on this machine yet" in c.value for c in at.caption)
    at.number_input(key="pur_knob_mbtsad_ratio").set_value(0.0).run()
    assert any("ratio must be above 0" in e.value for e in at.error), [e.value for e in at.error]
