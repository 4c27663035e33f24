"""The Runs page follows running jobs by itself (issue 14): a live section with progress and time left that
refreshes while jobs run, and polls nothing when none do."""

from __future__ import annotations

import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

from trojanscope.jobs.store import Job, JobStore

ROOT = Path(__file__).resolve().parents[1]


def _insert(store: JobStore, job_id: str, status: str, progress: float, started: float | None) -> None:
    with store.transaction() as conn:
        store.insert(conn, Job(id=job_id, kind="train", status=status, created=time.time(), argv=["--data", "sst2"],
                               config={"data": "sst2"}, device="cpu", log_path=str(store.log_path(job_id)),
                               cwd=str(ROOT), dedupe_key=job_id, out_dir=None, started=started, progress=progress))


def test_runs_shows_running_jobs_with_time_left_and_idles_without(lab, monkeypatch):
    from trojanscope.jobs import queue

    monkeypatch.setattr(queue, "refresh", lambda *a, **k: False)  # keep the fake running job (no process) alive
    at = AppTest.from_file(str(ROOT / "pages" / "7_Runs.py"), default_timeout=60)
    store = JobStore()
    _insert(store, "jdone", "done", 1.0, time.time() - 100)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not [p for p in at.get("progress")], "no running job: no live section"
    _insert(store, "jrun", "running", 0.5, time.time() - 60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    texts = [p.proto.text for p in at.get("progress")]
    assert any("jrun" in t and "50%" in t and "s left" in t for t in texts), texts
