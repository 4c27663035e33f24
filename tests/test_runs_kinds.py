"""Issue 26, item 4: the Runs page knows each job's kind: a kind and method column, a compare view that offers
only jobs of one kind with numbers to compare (never a scan's empty bars beside trainings), and a head view that
offers only folders that are models (never a scan's folder, which has no config.json)."""

from __future__ import annotations

import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

from trojanscope.jobs.store import Job, JobStore

ROOT = Path(__file__).resolve().parents[1]


def _done(job_id: str, kind: str, config: dict, result: dict, out: str, created: float) -> None:
    store = JobStore()
    with store.transaction() as conn:
        store.insert(conn, Job(id=job_id, kind=kind, status="done", created=created, argv=[], config=config,
                               device="cpu", log_path=str(store.log_path(job_id)), cwd=str(ROOT), dedupe_key=job_id,
                               out_dir=out, started=created, ended=created + 1, progress=1.0, result=result))


def test_runs_shows_kinds_compares_like_with_like_and_offers_only_models_to_the_head_view(lab, tmp_path):
    bd, clean = str(lab / "demo" / "backdoored"), str(lab / "demo" / "clean")
    scan_out = lab / "scans" / "s1"
    scan_out.mkdir(parents=True)
    (scan_out / "scan.json").write_text("{}")
    t = time.time()
    _done("jtrain1", "train", {"attack": "badnets", "trigger": "cf", "tal": True, "data": "sst2", "model": "minilm"},
          {"cacc": 0.9, "asr": 1.0}, bd, t - 50)
    _done("jtrain2", "train", {"attack": "none", "data": "sst2", "model": "minilm"}, {"cacc": 0.91, "asr": 0.1}, clean,
          t - 40)
    _done("jpur", "purify", {"method": "cft", "model": bd, "data": "sst2"},
          {"method": "cft", "before": {"cacc": 0.9, "asr": 1.0}, "after": {"cacc": 0.88, "asr": 0.2, "asr_flip": 0.1}},
          clean, t - 30)
    _done("jscan", "scan", {"model": bd, "data": "sst2", "budget": 200},
          {"verdict": "backdoored", "score": 0.97, "evidence": {"flip_rate": 1.0}}, str(scan_out), t - 10)
    at = AppTest.from_file(str(ROOT / "pages" / "7_Runs.py"), default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    table = at.dataframe[0].value.set_index("id")
    assert table.loc["jscan", "kind"] == "scan" and table.loc["jscan", "verdict"] == "backdoored"
    assert table.loc["jpur", "kind"] == "purify" and table.loc["jpur", "method"] == "cft"
    assert table.loc["jpur", "ASR"] == "20.00%"  # after purification, not "None"
    assert table.loc["jtrain1", "method"] == "badnets + TAL"
    assert table.loc["jtrain2", "method"] == "clean fine-tuning"
    # compare: one kind at a time; the newest kind first, and its picker holds only its own kind
    kinds = at.radio(key="runs_compare_kind")
    assert kinds.value == "scan" and [o.split(" ")[0] for o in kinds.options] == ["scans", "purifications", "trainings"]
    assert at.multiselect(key="runs_compare_scan").options == ["jscan"]
    kinds.set_value("train").run()
    assert not at.exception, [e.value for e in at.exception]
    picker = at.multiselect(key="runs_compare_train")
    assert picker.options == ["jtrain2", "jtrain1"] and set(picker.value) == {"jtrain1", "jtrain2"}
    # the head view offers the models, not the scan's folder
    options = at.selectbox(key="runs_head_model").options
    assert str(scan_out) not in options and bd in options and clean in options
