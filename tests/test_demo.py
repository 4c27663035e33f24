"""The demo pair's recipes, and its build as a job of the job store (kind ``demo``)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trojanscope import jobs
from trojanscope.demo import _same_recipe, demo_specs
from trojanscope.jobs.demo import build_state, submit_build
from trojanscope.jobs import runner
from trojanscope.cli.jobs import add_jobs_parser, cmd_jobs, submit_argv


def test_demo_recipes():
    specs = demo_specs()
    assert specs["clean"].attack == "none" and specs["clean"].model == "minilm" and specs["clean"].data == "sst2"
    bd = specs["backdoored"]
    assert (bd.attack, bd.poison.trigger, bd.poison.target) == ("badnets", "cf", 0)
    assert demo_specs(quick=True)["clean"].max_train and not specs["clean"].max_train
    from dataclasses import asdict

    stored = asdict(demo_specs(device="cpu")["backdoored"])
    assert _same_recipe(stored, demo_specs(device="cuda")["backdoored"])  # the device is not the recipe
    assert not _same_recipe(stored, demo_specs(quick=True)["backdoored"])


@pytest.fixture()
def runs(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "runs"
    monkeypatch.setenv("TROJANSCOPE_RUNS_DIR", str(root))
    yield root
    if (root / "jobs.sqlite").exists():
        for job in jobs.JobStore(root).select("status IN ('queued', 'running')"):
            jobs.cancel(job.id, grace=2.0)


@pytest.fixture()
def no_launch(monkeypatch) -> list[str]:
    """The scheduler "starts" jobs without starting a process (they stay queued); returns the ids it tried."""
    tried: list[str] = []
    monkeypatch.setattr(runner, "_launch", lambda store, conn, job: tried.append(job.id) or False)
    return tried


def jobs_cli(*argv: str) -> dict:
    parser = argparse.ArgumentParser()
    add_jobs_parser(parser.add_subparsers(dest="command", required=True))
    return cmd_jobs(parser.parse_args(["jobs", *argv]))


def test_no_pid_file_machinery_is_left():
    import trojanscope.demo as demo

    for name in ("launch_build", "PID_NAME", "EVENTS_NAME", "_alive"):
        assert not hasattr(demo, name), name


def test_two_build_requests_while_one_is_active_make_one_job(runs, no_launch):
    """Two tabs press Build (one of them asks for the quick pair): one demo job, reused."""
    first = submit_build()
    assert submit_build(quick=True) == first
    assert jobs_cli("submit", "--kind", "demo", "--", "--quick")["id"] == first
    (job,) = jobs.JobStore().select()
    assert (job.kind, job.status, job.out_dir) == ("demo", "queued", str((runs / "demo").resolve()))
    assert job.spec["out"] == job.out_dir and job.argv == []  # (a page or library submit has no command line)
    assert build_state()["status"] == "queued" and build_state()["job"] == first
    jobs.cancel(first)
    assert build_state()["status"] == "cancelled"
    second = submit_build(quick=True)  # nothing active any more: a new build
    assert second != first and jobs.get(second).config["quick"] is True


def test_a_demo_job_waits_for_the_device(runs):
    """The demo build is a job like any other: one running job per device, so it queues behind a training run."""
    from trojanscope.jobs.queue import _job_device

    store = jobs.JobStore()
    busy = "jtrain001"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", busy])
    try:
        with store.transaction() as conn:
            store.insert(conn, jobs.Job(id=busy, kind="train", status="running", created=time.time(), argv=[],
                                        config={}, device=_job_device("auto"), log_path=str(store.log_path(busy)),
                                        cwd=os.getcwd(), dedupe_key=busy, pid=sleeper.pid, started=time.time()))
        job_id = submit_build()
        state = build_state()
        assert state["status"] == "queued" and "another job is running on it" in state["message"]
        assert jobs.get(job_id).pid is None  # not started
        jobs.cancel(job_id)
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_demo_job_reports_its_progress_through_the_store(runs, no_launch, monkeypatch, capsys):
    """In the job process (here: in this one), ``cmd_demo`` builds both models; the store shows which one and
    how far the whole build is."""
    import trojanscope.demo as demo

    seen = []

    def fake_run_training(spec, path, *, overwrite, on_event, progress):
        for step in (1, 2):
            time.sleep(jobs.PROGRESS_INTERVAL + 0.05)  # progress writes are throttled
            on_event({"event": "step", "step": step, "total": 2})
            job = jobs.get(job_id)
            seen.append((job.message, round(job.progress, 2)))
        on_event({"event": "epoch", "epoch": 1, "step": 2, "total": 2, "cacc": 0.9})
        return {"out": str(path), "cacc": 0.9}

    monkeypatch.setattr(demo, "run_training", fake_run_training)
    job_id = submit_build(quick=True)
    final = jobs.run_job(job_id)
    assert final["status"] == "done", final["error"]
    assert seen == [("building the clean model (1/2)", 0.25), ("building the clean model (1/2)", 0.5),
                    ("building the backdoored model (2/2)", 0.75), ("building the backdoored model (2/2)", 0.99)]
    assert set(final["result"]) >= {"clean", "backdoored"} and final["progress"] == 1.0
    assert [m["model"] for m in final["metrics"]] == ["clean", "backdoored"]
    assert final["out_dir"] == str((runs / "demo").resolve()) and final["message"] is None
    state = build_state()
    assert (state["status"], state["job"], state["progress"]) == ("done", job_id, 1.0)


def test_a_failed_demo_job_shows_its_error_and_log(runs, no_launch, monkeypatch, capsys):
    import trojanscope.demo as demo

    def broken(spec, path, **kwargs):
        raise MemoryError("no room")

    monkeypatch.setattr(demo, "run_training", broken)
    job_id = submit_build()
    assert jobs.run_job(job_id)["status"] == "failed"
    state = build_state()
    assert state["status"] == "failed" and "out of memory" in state["error"]
