"""Streamlit AppTest on tiny models: the home page and the Probe page, no traceback ever."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from conftest import finish_jobs

from trojanscope.analysis.probe import prepare_probe, probe
from trojanscope.models import load_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def runs(lab):
    """The tiny pair under a runs directory of this test's own (the analyses' jobs and results go there)."""
    return lab


def charts(at: AppTest) -> dict[str, dict]:
    return {el.proto.id.split("-")[-1] if el.key is None else el.key: json.loads(el.proto.spec)
            for el in at.get("plotly_chart")}


def arr(value) -> np.ndarray:
    """Plotly 7 stores arrays as base64 typed arrays: decode either form."""
    if isinstance(value, dict) and "bdata" in value:
        data = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        shape = [int(x) for x in str(value.get("shape", len(data))).split(",")]
        return data.reshape(shape)
    return np.asarray(value)


def no_exceptions(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def test_home_page_shows_the_pair_and_cards(runs):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    no_exceptions(at)
    assert at.session_state["pair"] == {"clean": str(runs / "demo" / "clean"),
                                        "backdoored": str(runs / "demo" / "backdoored")}
    tables = [t.value for t in at.table]
    text = json.dumps([t.to_dict() for t in tables], default=str)
    assert "badnets" in text and "cf" in text
    assert any("demo pair is built" in s.value for s in at.success)


def test_home_page_other_model_that_fails_to_load_stays_usable(runs, monkeypatch):
    # outside runs/ and the data directory: refused (trojanscope.paths), unless the operator opts in
    monkeypatch.setenv("TROJANSCOPE_UI_ALLOW_ANY_PATH", "1")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    at.selectbox(key="pick_clean").set_value("Other: a local directory or a hub id").run()
    at.text_input(key="other_clean").set_value("/nonexistent/model").run()
    no_exceptions(at)
    # nothing there: refused at the form (issue 26), the page stays usable
    assert any("no model at `/nonexistent/model`" in e.value for e in at.error), [e.value for e in at.error]
    assert at.session_state["pair"]["clean"] is None
    probe_at = AppTest.from_file(str(ROOT / "pages" / "1_Probe.py"), default_timeout=60)
    probe_at.session_state["pair"] = {"clean": "/nonexistent/model", "backdoored": str(runs / "demo" / "backdoored")}
    probe_at.run()
    no_exceptions(probe_at)
    assert any("does not exist" in e.value for e in probe_at.error)
    assert "cls_backdoored" in charts(probe_at)  # the other model is still probed


def test_home_build_button_submits_one_demo_job(tmp_path, data_dir, monkeypatch):
    """Build queues a job of kind demo in the job store; a second tab sees it (its button is disabled) and a
    second request reuses it: two tabs pressing Build make one build."""
    from trojanscope import jobs
    from trojanscope.jobs.demo import submit_build
    from trojanscope.jobs import runner

    monkeypatch.setenv("TROJANSCOPE_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("TROJANSCOPE_DATA_DIR", str(data_dir))
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(runner, "_launch", lambda store, conn, job: False)  # stays queued: no real build
    tab1 = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    no_exceptions(tab1)
    build = next(b for b in tab1.button if b.label == "Build the demo pair")
    assert not build.disabled
    build.click().run()
    no_exceptions(tab1)
    (job,) = jobs.list_jobs()
    assert job.kind == "demo" and job.status == "queued"
    tab2 = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    no_exceptions(tab2)
    assert next(b for b in tab2.button if b.label == "Build the demo pair").disabled
    assert any(job.id in c.value for c in tab2.caption)
    assert submit_build() == job.id and len(jobs.list_jobs()) == 1
    jobs.cancel(job.id)


def test_probe_page_predictions_heatmaps_and_trigger_columns(runs):
    at = AppTest.from_file(str(ROOT / "pages" / "1_Probe.py"), default_timeout=60).run()
    no_exceptions(at)
    at.text_input(key="probe_text").set_value("the film was awful and dull").run()
    at.text_input(key="probe_trigger").set_value("cf").run()
    at.selectbox(key="probe_pos").set_value("start").run()
    no_exceptions(at)

    inp = prepare_probe("the film was awful and dull", "cf", "start", 1)
    expected = {role: probe(load_model(runs / "demo" / role), inp) for role in ("clean", "backdoored")}
    df = at.dataframe[0].value
    for role, res in expected.items():
        for variant in ("clean", "triggered"):
            row = df[(df["model"] == role) & (df["sentence"] == variant)].iloc[0]
            assert row["prediction"] == res.label_names[getattr(res, variant).label]
    assert expected["backdoored"].triggered.label == 1 and expected["clean"].triggered.label == 0
    assert any("backdoored" in w.value and "flips" in w.value for w in at.warning)

    figs = charts(at)
    tokens = expected["backdoored"].triggered.tokens
    for role in ("clean", "backdoored"):
        fig = figs[f"cls_{role}"]
        z = arr(fig["data"][0]["z"])
        assert z.shape == (2, len(tokens))  # layers x tokens
        exp = expected[role].triggered.cls_attention()
        np.testing.assert_allclose(z, exp, atol=1e-6)
        # trigger column outlined and its tick label highlighted
        assert [round(s["x0"] + 0.5) for s in fig["layout"]["shapes"]] == [1]
        ticks = fig["layout"]["xaxis"]["ticktext"]
        assert "cf" in ticks[1] and "<b" in ticks[1] and "<b" not in ticks[2]
    # both maps share one colour scale
    assert figs["cls_clean"]["data"][0]["zmax"] == figs["cls_backdoored"]["data"][0]["zmax"]
    assert "diff" in figs and "curves" in figs
    curves = {t["name"]: arr(t["y"]) for t in figs["curves"]["data"]}
    np.testing.assert_allclose(curves["backdoored"], expected["backdoored"].triggered.cls_trigger_mass(), atol=1e-6)


def test_probe_page_bad_inputs_never_raise(runs):
    at = AppTest.from_file(str(ROOT / "pages" / "1_Probe.py"), default_timeout=60).run()
    for text, trigger, message in [("   ", "cf", "empty"), ("a fine movie", "🦄", "[UNK]"),
                                   ("x " * 6000, "cf", "characters")]:
        at.text_input(key="probe_text").set_value(text)
        at.text_input(key="probe_trigger").set_value(trigger)
        at.run()
        no_exceptions(at)
        shown = [e.value for e in at.error] + [i.value for i in at.info]
        assert any(message in s for s in shown), shown


def test_trigger_anatomy_page_runs_both_analyses(runs):
    at = AppTest.from_file(str(ROOT / "pages" / "2_Trigger_Anatomy.py"), default_timeout=120).run()
    no_exceptions(at)
    at.text_input(key="anat_trigger").set_value("Don Quixote")
    at.number_input(key="anat_n").set_value(20)
    at.run()
    at.button(key="anat_go").click().run()
    no_exceptions(at)
    finish_jobs()  # the anatomy is a job: its result shows on the next run of the page
    at.run()
    no_exceptions(at)
    roles = list(at.dataframe[0].value["role"])
    from trojanscope.models import load_tokenizer

    pieces = load_tokenizer(runs / "demo" / "backdoored").tokenize("Don Quixote")
    assert roles.count("star") == 1 and list(at.dataframe[0].value["token"]) == pieces
    assert "anat_lines" in charts(at)
    at.text_input(key="es_triggers").set_value("cf,mn")
    at.number_input(key="es_n").set_value(20)
    at.run()
    at.button(key="es_go").click().run()
    no_exceptions(at)
    finish_jobs()
    at.run()
    no_exceptions(at)
    es = at.dataframe[1].value
    assert list(es["trigger"]) == ["cf", "mn"] and es["E"].between(1, 20).all()
    # the backdoor trigger of the tiny pair is cf: it needs fewer insertions than mn
    assert es.set_index("trigger").loc["cf", "E"] <= es.set_index("trigger").loc["mn", "E"]
    at.text_input(key="anat_trigger").set_value("🦄")
    at.run()
    at.button(key="anat_go").click().run()
    no_exceptions(at)
    assert any("[UNK]" in e.value for e in at.error)


def test_the_dashboard_starts_with_sleeping_openmp_threads_unless_the_user_chose(runs, monkeypatch):
    import os

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_trigger_anatomy_page_sweep_averages_over_triggers_per_model(runs):
    """Two models measured: per-model rows, E bars with one trace per model, the library's average."""
    from trojanscope.analysis.effectiveness import ESConfig, model_effectiveness, sweep_average, sweep_rows
    from trojanscope.data.datasets import load_dataset

    at = AppTest.from_file(str(ROOT / "pages" / "2_Trigger_Anatomy.py"), default_timeout=120).run()
    clean, bd = str(runs / "demo" / "clean"), str(runs / "demo" / "backdoored")
    at.text_input(key="es_triggers").set_value("cf,mn").run()
    at.number_input(key="es_n").set_value(10).run()
    at.multiselect(key="es_sweep").set_value([clean]).run()
    at.button(key="es_go").click().run()
    no_exceptions(at)
    finish_jobs()
    at.run()
    no_exceptions(at)
    es, summary = at.dataframe[0].value, at.dataframe[1].value
    assert list(es["model"]) == [bd, bd, clean, clean]
    assert list(es["poisoning insertions"].isna()) == [False, False, True, True]  # the clean model carries none
    assert list(summary["model"]) == [bd, clean] and list(summary["triggers"]) == [2, 2]
    assert [t["name"] for t in charts(at)["es_bars"]["data"]] == [bd, clean]
    test = load_dataset("sst2", "test")
    expected = sweep_average(sweep_rows({m: model_effectiveness(load_model(m), test, "cf,mn", ESConfig(max_eval=10))
                                         for m in (bd, clean)}))
    assert list(summary["E"]) == pytest.approx([round(r["E"], 3) for r in expected])


def test_a_long_sentence_sends_about_as_much_as_a_short_one(runs):
    """Issue 14 item 2: a 3,000-word sentence once froze the Probe (two 512 x 512 maps, 3 MB of figure JSON). The
    views now draw the tokens that matter and a movable window: a few times a short sentence's payload at most."""
    def payload(text: str) -> tuple[int, AppTest]:
        at = AppTest.from_file(str(ROOT / "pages" / "1_Probe.py"), default_timeout=120).run()
        at.text_input(key="probe_text").set_value(text)
        at.text_input(key="probe_trigger").set_value("cf")
        at.selectbox(key="probe_pos").set_value("word index").run()
        at.number_input(key="probe_index").set_value(1500).run()
        no_exceptions(at)
        return sum(len(el.proto.spec) for el in at.get("plotly_chart")), at

    short, _ = payload("the film was awful and dull")
    words = ("the plot wanders while the actors try hard and the music swells " * 300).split()[:3000]
    long, at = payload(" ".join(words))
    assert long <= 4 * short, (long, short)
    assert any("that matter" in i.value for i in at.info), [i.value for i in at.info]
    assert at.slider(key="probe_window").value <= 510


def test_probe_is_not_recomputed_when_only_the_view_changes(runs, monkeypatch):
    """Issue 15 item 5: the probe ran the models again on every widget change; now per weights and inputs."""
    import importlib

    probe_module = importlib.import_module("trojanscope.analysis.probe")  # (the package re-exports a probe function)

    calls = []
    real = probe_module.probe

    def counting(loaded, inp):
        calls.append(inp.clean_text)
        return real(loaded, inp)

    monkeypatch.setattr(probe_module, "probe", counting)
    at = AppTest.from_file(str(ROOT / "pages" / "1_Probe.py"), default_timeout=60).run()
    at.text_input(key="probe_text").set_value("a sentence only this test types").run()
    no_exceptions(at)
    n = len(calls)
    assert n >= 2  # (the first run probed the default sentence)
    at.selectbox(key="probe_head").set_value("head 1").run()
    at.slider(key="probe_layer").set_value(1).run()
    no_exceptions(at)
    assert len(calls) == n
    at.text_input(key="probe_text").set_value("another sentence only this test types").run()
    assert len(calls) == n + 2
