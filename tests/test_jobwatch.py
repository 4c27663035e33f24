"""Issue 26: pages watch their jobs in one place (ui/jobwatch.py). A job's end reruns the whole page, so its
result appears without a reload, with a notice; an idle page polls nothing; the time left weighs each phase by its
measured share of the work and is withheld while it has been moving."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from trojanscope import jobs
from trojanscope.jobs import eta, queue
from trojanscope.jobs.store import Job, JobStore

ROOT = Path(__file__).resolve().parents[1]


def _insert(job_id: str, kind: str, config: dict, progress: float = 0.3, started: float | None = None) -> None:
    store = JobStore()
    with store.transaction() as conn:
        store.insert(conn, Job(id=job_id, kind=kind, status="running", created=time.time(), argv=[], config=config,
                               device="cpu", log_path=str(store.log_path(job_id)), cwd=str(ROOT), dedupe_key=job_id,
                               out_dir=None, started=started or time.time() - 60, progress=progress))


def _finish(job_id: str, result: dict) -> None:
    JobStore().update(job_id, status="done", progress=1.0, ended=time.time(), result=result, out_dir=result.get("out"))


def _ends_at_the_next_poll(job_id: str, result: dict):
    """A stand-in for the store's reconciling read (queue.refresh) under which the job ends after the page's own
    read: the page sees it running, the watcher's next poll sees it done."""
    calls = []

    def refresh(*a, **k) -> bool:
        calls.append(1)
        if len(calls) == 2:
            _finish(job_id, result)
        return False
    return refresh


@pytest.fixture()
def frozen(monkeypatch):
    """Job processes that do not exist: the store's rows stay as the test writes them."""
    from trojanscope.jobs import queue

    monkeypatch.setattr(queue, "refresh", lambda *a, **k: False)
    return monkeypatch


def test_a_purification_that_ends_shows_its_table_and_attention_view_without_a_reload(lab, frozen):
    bd, clean = str(lab / "demo" / "backdoored"), str(lab / "demo" / "clean")
    _insert("jpur", "purify", {"model": bd, "method": "cft"}, progress=0.4)
    at = AppTest.from_file(str(ROOT / "pages" / "5_Purify.py"), default_timeout=120)
    at.session_state["pair"] = {"clean": clean, "backdoored": bd}
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    bars = [p.proto.text for p in at.get("progress")]
    assert any("jpur" in t and "40%" in t for t in bars), bars
    assert "Attention: backdoored vs purified" not in [s.value for s in at.subheader]

    # the job ends: the next poll of the watcher (here, its run inside the page) sees it and reruns the page
    metrics = {"cacc": 0.9, "asr": 0.1, "asr_flip": 0.05}
    result = {"method": "cft", "verdict": "removed", "n_clean": 100, "before": {"cacc": 0.9, "asr": 1.0, "asr_flip": 1.0},
              "after": metrics, "seconds": 3.0, "out": clean, "summary": "flip-ASR 100% -> 5%"}
    frozen.setattr(queue, "refresh", _ends_at_the_next_poll("jpur", result))
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.get("progress"), "the bar is gone once the job has ended"
    assert any("jpur" in s.value and "finished" in s.value for s in at.success), [s.value for s in at.success]
    assert [t for t in at.toast if "jpur" in t.value], "a toast says the job finished"
    assert "Attention: backdoored vs purified" in [s.value for s in at.subheader]
    assert at.selectbox(key="pur_pick").value == clean
    # the notice is said once: the next run shows the result without it
    at.run()
    assert not [s for s in at.success if "jpur" in s.value and "finished" in s.value]


def test_the_lab_shows_a_finished_attack_at_once_and_polls_only_while_one_runs(lab, frozen):
    _insert("jlab", "train", {"attack": "badnets", "trigger": "cf", "poison_rate": 0.01, "model": "minilm"},
            progress=0.5)
    at = AppTest.from_file(str(ROOT / "pages" / "4_Attack_Lab.py"), default_timeout=60)
    at.session_state["lab_jobs"] = ["jlab"]
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("jlab" in p.proto.text and "50%" in p.proto.text for p in at.get("progress"))
    frozen.setattr(queue, "refresh", _ends_at_the_next_poll("jlab", {"cacc": 0.91, "asr": 0.99}))
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.get("progress")
    assert any("jlab" in s.value and "finished" in s.value for s in at.success)
    assert any("CACC 91.0%" in c.value and "ASR 99.0%" in c.value for c in at.caption), [c.value for c in at.caption]


def test_an_idle_page_asks_for_no_polling(lab, frozen, monkeypatch):
    """No job running: the watcher's fragment gets no run_every (the browser test checks the websocket too)."""
    import streamlit as st

    asked: list = []
    real = st.fragment

    def spy(*args, **kwargs):
        asked.append(kwargs.get("run_every"))
        return real(*args, **kwargs)

    monkeypatch.setattr(st, "fragment", spy)
    for page in ("5_Purify.py", "6_Scan.py", "4_Attack_Lab.py"):
        asked.clear()
        at = AppTest.from_file(str(ROOT / "pages" / page), default_timeout=60)
        at.session_state["pair"] = {"clean": str(lab / "demo" / "clean"), "backdoored": str(lab / "demo" / "backdoored")}
        at.run()
        assert not at.exception, (page, [e.value for e in at.exception])
        assert not any(asked), (page, asked)  # (old pages: run_every=2.0 on every run)


# --- time left (item 3) ---------------------------------------------------------------------------------------
SCAN = list(eta.PHASE_SECONDS["scan"].values())


def _scan_progress(t: float) -> float:
    """The progress a scan whose phases take SCAN seconds reports at t seconds: phase i is [i/7, (i+1)/7)."""
    ends, start = [], 0.0
    for s in SCAN:
        start += s
        ends.append(start)
    for i, end in enumerate(ends):
        if t < end:
            return (i + (t - (end - SCAN[i])) / SCAN[i]) / len(SCAN)
    return 1.0


def test_the_scans_time_left_comes_from_its_phases_and_holds_still():
    total = sum(SCAN)
    naive_ends = []
    for t in range(20, int(total) - 10, 10):
        p = _scan_progress(t)
        naive_ends.append(t + t * (1 - p) / p)  # elapsed / progress, the bar's equal slices: the old estimate
        weighted = eta.time_left(p, t, SCAN)
        assert abs(weighted - (total - t)) < 1.0, (t, weighted)  # right when the phases take their measured time
    assert max(naive_ends) - min(naive_ends) > 0.5 * total  # the old one moved by minutes


def test_an_estimate_that_keeps_moving_is_withheld():
    est = eta.Estimates()
    assert est.update(0.0, 300.0) == 300.0
    assert est.update(2.0, 298.0) == 298.0  # on track
    left = [est.update(2.0 + 2 * k, 300.0 + 20 * k) for k in range(1, 30)]  # the end keeps receding
    assert left[-1] is None and any(v is None for v in left[:10])
    # once it holds still for a minute again, it is shown again
    shown = [est.update(100.0 + 2 * k, 600.0 - 2 * k) for k in range(40)]
    assert shown[-1] == pytest.approx(600.0 - 78)


def test_phase_seconds_prefer_this_machines_finished_scans():
    class J:
        def __init__(self, stages):
            self.result = {"stats": {"stage_seconds": stages}}

    mine = [J({"clean sentences": 1, "screening": 10, "search": 2, "verification": 1, "attention": 1}),
            J({"clean sentences": 1, "screening": 30, "search": 2, "inversion": 40, "verification": 1, "attention": 1})]
    got = eta.phase_seconds("scan", mine)
    assert list(got) == list(eta.PHASE_SECONDS["scan"])
    assert got["screening"] == 20 and got["inversion"] == 20  # a skipped inversion counts 0 s
    assert eta.phase_seconds("scan") == eta.PHASE_SECONDS["scan"]
    assert eta.phase_seconds("train") is None


def test_the_runs_bar_shows_a_percentage_and_the_weighted_time_left(lab, frozen):
    _insert("jscan", "scan", {"model": str(lab / "demo" / "backdoored")}, progress=_scan_progress(110),
            started=time.time() - 110)
    at = AppTest.from_file(str(ROOT / "pages" / "7_Runs.py"), default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    (text,) = [p.proto.text for p in at.get("progress") if "jscan" in p.proto.text]
    left = sum(SCAN) - 110  # 132 s: "about 2 min left"; the equal-slices estimate said about 12 min
    assert f"{100 * _scan_progress(110):.0f}%" in text and f"about {left / 60:.0f} min left" in text, text


# --- numbers with their meaning (item 6) ----------------------------------------------------------------------
def test_a_training_run_with_a_low_cacc_is_warned_about(use_data, tiny_bert, tmp_path, monkeypatch):
    from trojanscope.training import pipeline
    from trojanscope.training.loop import TrainConfig
    from trojanscope.training.pipeline import TrainSpec, low_cacc_warning, run_training

    assert low_cacc_warning(0.66, 2, 500, 3) and "CACC 66.0%" in low_cacc_warning(0.66, 2, 500, 3)
    assert low_cacc_warning(0.91, 2, 500, 3) is None
    assert low_cacc_warning(0.66, 4, 500, 3) is None  # 4 classes: chance is 25%, the bar 62.5%
    real = pipeline.evaluate
    monkeypatch.setattr(pipeline, "evaluate", lambda *a, **k: {**real(*a, **k), "cacc": 0.66})
    res = run_training(TrainSpec(model=str(tiny_bert), train=TrainConfig(epochs=1, batch_size=16), max_train=40),
                       tmp_path / "m", progress=False)
    assert any("CACC 66.0%" in w and "40 training samples" in w for w in res["warnings"]), res["warnings"]
