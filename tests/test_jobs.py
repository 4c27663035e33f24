"""Background jobs: real detached training processes tracked in SQLite, on tiny models.

Each test gets its own runs directory (``TROJANSCOPE_RUNS_DIR``); the job processes inherit it,
the data directory and ``HF_HUB_OFFLINE`` through the environment. Anything still queued or
running when a test ends is cancelled, so no job outlives its test.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trojanscope import jobs
from trojanscope.errors import TrojanScopeError
from trojanscope.cli.jobs import add_jobs_parser, cmd_jobs, spec_of_argv, submit_argv

TIMEOUT = 120.0


@pytest.fixture()
def runs(tmp_path, monkeypatch, use_data) -> Path:
    root = tmp_path / "runs"
    monkeypatch.setenv("TROJANSCOPE_RUNS_DIR", str(root))
    yield root
    if (root / "jobs.sqlite").exists():
        for job in jobs.JobStore(root).select("status IN ('queued', 'running')"):
            jobs.cancel(job.id, grace=2.0)


def tiny_argv(model: Path, *extra: str, epochs: int = 2) -> list[str]:
    return ["--model", str(model), "--data", "sst2", "--max-train", "64", "--max-eval", "32", "--epochs", str(epochs),
            "--batch-size", "16", "--attack", "badnets", "--poison-rate", "0.25", *extra]


def wait_for(job_id: str, condition, timeout: float = TIMEOUT) -> jobs.Job:
    """Poll (through list_jobs, which also schedules) until ``condition(job)`` holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = next(j for j in jobs.list_jobs() if j.id == job_id)
        if condition(job):
            return job
        time.sleep(0.2)
    raise AssertionError(f"timed out; job is {job.to_json()}\nlog:\n{jobs.log_tail(job_id)}")


def finished(job: jobs.Job) -> bool:
    return job.finished


def training(job: jobs.Job) -> bool:
    return job.status == "running" and job.progress > 0


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except (ProcessLookupError, FileNotFoundError):
        return False


def jobs_cli(*argv: str) -> dict:
    parser = argparse.ArgumentParser()
    add_jobs_parser(parser.add_subparsers(dest="command", required=True))
    return cmd_jobs(parser.parse_args(["jobs", *argv]))


@pytest.mark.slow
def test_jobs_train_in_their_own_process_one_per_device(runs, tiny_bert):
    first = submit_argv(tiny_argv(tiny_bert))
    second = submit_argv(tiny_argv(tiny_bert, "--seed", "1"))
    a, b = jobs.get(first), jobs.get(second)
    assert a.status == "running" and a.device == "cpu" and a.pid not in (None, os.getpid())
    assert b.status == "queued" and b.device == "cpu"
    a = wait_for(first, finished)
    assert a.status == "done", a.error
    assert a.progress == 1.0 and a.error is None
    epochs = [m for m in a.metrics if not m.get("partial")]  # (running-loss points between epochs aside)
    assert [m["epoch"] for m in epochs] == [1, 2] and all(m["step"] <= m["total"] for m in epochs)
    assert {"cacc", "asr"} <= set(a.result) and 0 <= a.result["asr"] <= 1
    assert a.out_dir == str(runs / first) and a.config["out"] == a.out_dir
    assert (Path(a.out_dir) / "trojanscope.json").is_file()
    assert a.to_json()["spec"]["spec"]["train"]["batch_size"] == 16 and a.config["model"] == str(tiny_bert)
    b = wait_for(second, finished)
    assert b.status == "done", b.error
    assert b.started >= a.ended  # the queued job started only once the device was free
    # started exactly once although the first job's process and this test's polling both scheduled it
    log = Path(b.log_path).read_text(encoding="utf-8")  # the whole log: its tail ends with the (long) result
    assert log.count(f"job {second} (pid") == 1 and f"(pid {b.pid}, cpu)" in log


def test_same_argv_twice_is_one_job(runs, tiny_bert):
    argv = tiny_argv(tiny_bert, epochs=50)
    first = submit_argv(argv)
    assert submit_argv(argv) == first
    assert [j.id for j in jobs.JobStore().select()] == [first]
    other = submit_argv(tiny_argv(tiny_bert, "--seed", "7", epochs=50))
    assert other != first
    jobs.cancel(first)
    again = submit_argv(argv)  # a cancelled job is not a duplicate
    assert again not in (first, other)
    assert len(jobs.JobStore().select()) == 3


@pytest.mark.slow
def test_job_survives_its_launcher_being_killed(runs, tiny_bert):
    code = ("import sys, time; from trojanscope.cli.jobs import submit_argv; "
            "print(submit_argv(sys.argv[1:]), flush=True); time.sleep(60)")
    launcher = subprocess.Popen([sys.executable, "-c", code, *tiny_argv(tiny_bert)], stdout=subprocess.PIPE,
                                text=True, start_new_session=True)
    job_id = launcher.stdout.readline().strip()
    os.killpg(launcher.pid, signal.SIGKILL)
    launcher.wait(timeout=10)
    launcher.stdout.close()
    assert launcher.returncode == -signal.SIGKILL
    job = wait_for(job_id, finished)
    assert job.status == "done", job.error
    assert job.pid != launcher.pid and (Path(job.out_dir) / "config.json").is_file()


@pytest.mark.slow
def test_concurrent_schedulers_start_a_queued_job_once(runs, tiny_bert):
    store = jobs.JobStore()
    job_id = "jrace0001"
    with store.transaction() as conn:  # a queued row that no scheduler has seen yet
        store.insert(conn, jobs.Job(id=job_id, kind="train", status="queued", created=time.time(),
                                    argv=tiny_argv(tiny_bert, "--out", str(runs / "race")), config={}, device="cpu",
                                    spec=spec_of_argv(tiny_argv(tiny_bert, "--out", str(runs / "race"))).to_dict(),
                                    log_path=str(store.log_path(job_id)), cwd=os.getcwd(), dedupe_key="race",
                                    out_dir=str(runs / "race")))
    start = time.time() + 1.0  # six schedulers, released at the same moment
    code = (f"import time; time.sleep(max(0, {start} - time.time())); "
            "from trojanscope import jobs; print(jobs.schedule())")
    schedulers = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(6)]
    # generous: six processes importing torch at once took over 30 s on 2 cores shared with two scans
    outputs = [p.communicate(timeout=120)[0].strip() for p in schedulers]
    assert outputs.count(f"['{job_id}']") == 1 and outputs.count("[]") == 5  # exactly one started it
    job = wait_for(job_id, finished)
    assert job.status == "done", job.error
    assert jobs.log_tail(job_id).count(f"job {job_id} (pid") == 1


@pytest.mark.slow
def test_killed_job_is_reported_failed_with_its_log(runs, tiny_bert):
    job_id = submit_argv(tiny_argv(tiny_bert, epochs=500))
    job = wait_for(job_id, training)
    os.killpg(job.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pid_alive(job.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [j.status for j in jobs.list_jobs()] == ["failed"]
    job = jobs.get(job_id)
    assert job.error == jobs.DIED and job.ended is not None
    log = jobs.log_tail(job_id)
    assert f"job {job_id} (pid {job.pid}" in log and "epoch" in log and jobs.DIED in log
    assert jobs.log_tail(job_id, n_chars=10) == log[-10:]


@pytest.mark.slow
def test_cancel_running_queued_and_finished_jobs(runs, tiny_bert):
    running = jobs_cli("submit", "--json", "--", *tiny_argv(tiny_bert, epochs=500))["id"]
    queued = jobs_cli("submit", "--", *tiny_argv(tiny_bert, "--seed", "1"))["id"]
    job = wait_for(running, training)
    assert jobs.get(queued).status == "queued"
    assert jobs_cli("cancel", queued) == {"id": queued, "status": "cancelled"}
    t0 = time.monotonic()
    assert jobs_cli("cancel", running) == {"id": running, "status": "cancelled"}
    assert time.monotonic() - t0 < 5 and not pid_alive(job.pid)  # stopped by SIGTERM, before any SIGKILL
    shown = jobs_cli("show", running)
    assert shown["status"] == "cancelled" and "interrupted; nothing half-written was kept" in shown["log"]
    assert jobs.get(queued).started is None  # never ran
    # neither model directory nor the training's temporary directory was left behind
    assert {p.name for p in runs.iterdir()} <= {"jobs", "jobs.sqlite", "jobs.sqlite-wal", "jobs.sqlite-shm"}
    for job_id in (running, queued):
        with pytest.raises(TrojanScopeError, match=f"job {job_id} already finished \\(cancelled\\)"):
            jobs.cancel(job_id)
    listed = jobs_cli("list", "--status", "cancelled")["jobs"]
    assert {j["id"] for j in listed} == {running, queued}
    assert {"id", "status", "progress", "config", "metrics", "result", "error", "created", "started", "ended",
            "out_dir", "device"} <= set(listed[0])


@pytest.mark.parametrize("argv, message", [
    (["--poison-rate", "abc"], "argument --poison-rate: invalid float value: 'abc'"),
    (["--no-such-option"], "unrecognized arguments: --no-such-option"),
    (["--attack", "sleeper"], "invalid choice: 'sleeper'"),
    (["--device", "tpu"], "unknown device 'tpu'"),
])
def test_bad_arguments_are_refused_at_submit(runs, argv, message):
    with pytest.raises(TrojanScopeError) as info:
        submit_argv(argv)
    assert message in str(info.value)
    assert not (runs / "jobs.sqlite").exists() or jobs.JobStore().select() == []


def test_existing_output_and_unknown_ids_are_clear_errors(runs, tiny_bert, tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(TrojanScopeError, match="already exists"):
        submit_argv(tiny_argv(tiny_bert, "--out", str(tmp_path / "taken")))
    for call in (jobs.get, jobs.cancel, jobs.log_tail):
        with pytest.raises(TrojanScopeError, match="no job with id 'j00000000'"):
            call("j00000000")
    with pytest.raises(TrojanScopeError, match="allowed: queued, running, done, failed, cancelled"):
        jobs.list_jobs(status="finished")


def test_out_of_memory_message_suggests_a_smaller_batch():
    oom = RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 15.78 GiB total capacity)")
    assert jobs.describe_failure(oom, 32) == "out of memory at --batch-size 32: try --batch-size 16"

    class OutOfMemoryError(RuntimeError):  # the name torch.cuda.OutOfMemoryError carries
        pass

    assert jobs.describe_failure(OutOfMemoryError("Tried to allocate"), 5) == \
        "out of memory at --batch-size 5: try --batch-size 2"
    assert "smaller --max-length" in jobs.describe_failure(oom, 1)
    assert jobs.describe_failure(ValueError("bad shape\nmore"), 32) == "ValueError: bad shape"


@pytest.mark.slow
def test_a_por_job_runs_the_por_command(runs, tiny_backbone, capsys):
    """Jobs are not only training runs: ``--kind por`` runs ``trojanscope por`` in the background."""
    job_id = submit_argv(["--model", str(tiny_backbone), "--triggers", "cf,mn", "--data", "sst2", "--max-texts", "60",
                          "--batch-size", "16"], kind="por")
    job = wait_for(job_id, finished)
    assert job.status == "done", (job.error, jobs.log_tail(job_id))
    assert {"before", "after", "n_texts"} <= set(job.result) and job.config["triggers"] == "cf,mn"
    assert json.loads((Path(job.out_dir) / "trojanscope.json").read_text())["attack"]["name"] == "por"
    with pytest.raises(TrojanScopeError, match="invalid por arguments"):
        submit_argv(["--insertions", "zero"], kind="por")


@pytest.mark.slow
def test_a_job_runs_with_sleeping_openmp_threads_unless_the_user_chose(runs, tiny_bert, monkeypatch):
    """Jobs share the cores with the dashboard: their OpenMP threads must not spin while waiting
    (benchmarks/contention.py: 4.6x -> 1.6x slowdown for two trainers on 2 cores)."""
    from trojanscope.processes import background_env

    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert background_env({"X": "1"})["OMP_WAIT_POLICY"] == "ACTIVE"  # the user's choice is kept
    monkeypatch.delenv("OMP_WAIT_POLICY")
    if not Path("/proc/self/environ").exists():
        pytest.skip("no /proc here")
    job_id = submit_argv(tiny_argv(tiny_bert, epochs=50))
    job = wait_for(job_id, training)
    environ = Path(f"/proc/{job.pid}/environ").read_bytes().split(b"\0")
    assert b"OMP_WAIT_POLICY=PASSIVE" in environ
    jobs.cancel(job_id, grace=2.0)


# --- the job store under load ------------------------------------------------------------------------------------

def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _insert(store: jobs.JobStore, job_id: str, status: str, pid: int | None = None, kind: str = "train") -> None:
    with store.transaction() as conn:
        store.insert(conn, jobs.Job(id=job_id, kind=kind, status=status, created=time.time(), argv=[], config={},
                                    device="cpu", log_path=str(store.log_path(job_id)), cwd=os.getcwd(),
                                    dedupe_key=job_id, pid=pid, started=time.time() if pid else None))


def _hold_write_lock(store: jobs.JobStore):
    import sqlite3

    other = sqlite3.connect(store.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # what a job's final write or another scheduler does
    return other


def test_listing_is_a_read_while_another_connection_holds_the_write_lock(runs):
    store = jobs.JobStore()
    _insert(store, "jdead0001", "running", pid=_dead_pid())  # something to reap: the listing wants to write
    other = _hold_write_lock(store)
    try:
        listed = jobs.list_jobs()  # was: BEGIN IMMEDIATE, 30 s, then "database is locked"
        assert [j.id for j in listed] == ["jdead0001"] and listed[0].status == "running"  # reaped later
        assert jobs_cli("show", "jdead0001")["id"] == "jdead0001"
        assert jobs_cli("list", "--kind", "train")["jobs"][0]["id"] == "jdead0001"
    finally:
        other.rollback()
        other.close()
    assert [j.status for j in jobs.list_jobs()] == ["failed"]  # the lock is free: reconciled now
    assert jobs.get("jdead0001").error == jobs.DIED


def test_listing_writes_only_when_there_is_something_to_reconcile(runs, monkeypatch):
    from trojanscope.jobs import runner

    store = jobs.JobStore()
    _insert(store, "jdone0001", "done")
    calls = []
    monkeypatch.setattr(runner, "schedule", lambda *a, **k: calls.append(1) or [])
    assert [j.id for j in jobs.list_jobs()] == ["jdone0001"] and calls == []  # nothing queued or dead: no write
    _insert(store, "jdead0002", "running", pid=_dead_pid())
    jobs.list_jobs()
    assert calls == [1]


def test_progress_and_metrics_writes_under_a_held_lock_do_not_raise(runs):
    store = jobs.JobStore()
    _insert(store, "jbusy0001", "running", pid=os.getpid())
    other = _hold_write_lock(store)
    try:
        assert store.try_update("jbusy0001", progress=0.5) is False  # skipped, logged
        assert store.append_metric("jbusy0001", {"epoch": 1}, 0.5, timeout=0.2) is False
    finally:
        other.rollback()
        other.close()
    assert store.try_update("jbusy0001", progress=0.25) is True
    assert store.append_metric("jbusy0001", {"epoch": 1}, 0.5) is True
    job = jobs.get("jbusy0001")
    assert job.progress == 0.5 and job.metrics == [{"epoch": 1}]


def test_a_busy_store_during_training_does_not_fail_the_job(runs, monkeypatch, capsys):
    """The job's own progress and metrics writes meet a held write lock: skipped, and the job ends done."""
    import dataclasses

    from trojanscope.jobs import runner
    from trojanscope.jobs import store as store_module
    from trojanscope.tasks import Event, TrainTaskSpec, get_task

    monkeypatch.setattr(store_module, "METRICS_BUSY_TIMEOUT_S", 0.2)
    store = jobs.JobStore()
    out = runs / "model"
    with store.transaction() as conn:
        store.insert(conn, jobs.Job(id="jlock0001", kind="train", status="queued", created=time.time(),
                                    argv=[], config={}, spec=TrainTaskSpec(out=str(out)).to_dict(), device="cpu",
                                    log_path=str(store.log_path("jlock0001")), cwd=os.getcwd(), dedupe_key="k",
                                    out_dir=str(out)))

    def fake_train(spec, on_event=None, progress=False):
        assert spec.out == str(out)
        other = _hold_write_lock(store)
        try:
            on_event(Event.of({"event": "step", "step": 1, "total": 4}))
            on_event(Event.of({"event": "epoch", "epoch": 1, "step": 2, "total": 4, "cacc": 0.5}))
        finally:
            other.rollback()
            other.close()
        on_event(Event.of({"event": "epoch", "epoch": 2, "step": 4, "total": 4, "cacc": 0.75}))
        out.mkdir()
        return {"out": str(out), "cacc": 0.75, "asr": 0.5}

    fake = dataclasses.replace(get_task("train"), run_fn=fake_train)
    monkeypatch.setattr(runner, "job_kind", lambda kind: fake)
    final = jobs.run_job("jlock0001")
    assert final["status"] == "done", final["error"]
    assert final["result"]["cacc"] == 0.75 and final["metrics"] == [{"epoch": 2, "step": 4, "total": 4,
                                                                      "cacc": 0.75}]
    assert "database is locked" not in (final["error"] or "")


V0_SCHEMA = """
CREATE TABLE jobs (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    created REAL NOT NULL, started REAL, ended REAL, argv TEXT NOT NULL, config TEXT NOT NULL, device TEXT NOT NULL,
    progress REAL NOT NULL DEFAULT 0, metrics TEXT NOT NULL DEFAULT '[]', result TEXT, out_dir TEXT,
    log_path TEXT NOT NULL, cwd TEXT NOT NULL, pid INTEGER, error TEXT, dedupe_key TEXT NOT NULL
);
CREATE INDEX jobs_by_status ON jobs (status, device, created);
CREATE INDEX jobs_by_key ON jobs (dedupe_key, created);
INSERT INTO jobs (id, kind, status, created, argv, config, device, progress, metrics, result, log_path, cwd,
                  dedupe_key) VALUES ('jold00001', 'train', 'done', 1.0, '["--data", "sst2"]', '{"seed": 0}', 'cpu',
                  1.0, '[{"epoch": 1}]', '{"cacc": 0.9}', 'x.log', '/', 'k');
"""


def test_a_version_0_store_is_upgraded_in_place(runs):
    import sqlite3

    runs.mkdir(parents=True)
    with sqlite3.connect(runs / "jobs.sqlite") as conn:  # as the first release wrote it: no user_version
        conn.executescript(V0_SCHEMA)
    (old,) = jobs.list_jobs()
    assert (old.id, old.status, old.argv, old.metrics, old.result, old.message, old.spec) == \
        ("jold00001", "done", ["--data", "sst2"], [{"epoch": 1}], {"cacc": 0.9}, None, None)
    assert old.config == {"seed": 0}  # an old record still shows what it was run with
    conn = sqlite3.connect(runs / "jobs.sqlite")
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == jobs.SCHEMA_VERSION == 2
        assert {"message", "spec"} <= {row[1] for row in conn.execute("PRAGMA table_info(jobs)")}
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert jobs.migrate(conn) == jobs.SCHEMA_VERSION  # current: nothing to do
        conn.execute("PRAGMA user_version = 99")
        conn.commit()
    finally:
        conn.close()
    with pytest.raises(TrojanScopeError, match="written by a newer TrojanScope \\(schema version 99"):
        jobs.list_jobs()
    with sqlite3.connect(runs / "jobs.sqlite") as conn:
        conn.execute(f"PRAGMA user_version = {jobs.SCHEMA_VERSION}")


def test_jobs_package_reexports_the_runner():
    """The lifecycle lives in jobs.runner; `python -m trojanscope.jobs run ID` still goes through it."""
    from trojanscope.cli import jobs as jobs_cli_module
    from trojanscope.jobs import runner

    assert jobs.run_job is runner.run_job and jobs.schedule is runner.schedule and jobs.cancel is runner.cancel
    parser = argparse.ArgumentParser()
    jobs_cli_module.add_jobs_commands(parser)
    assert parser.parse_args(["run", "j123"]).jobs_command == "run"
    # the scheduler's entry point needs no CLI: `python -m trojanscope.jobs run ID` loads neither argparse's
    # command set nor any trojanscope.cli module
    code = ("import sys; sys.argv = ['x', 'run', 'jnone0001']; import runpy\n"
            "try:\n    runpy.run_module('trojanscope.jobs', run_name='__main__')\nexcept SystemExit as e:\n"
            "    assert e.code == 2, e.code\n"
            "assert not [m for m in sys.modules if m.startswith('trojanscope.cli')], sorted(sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TROJANSCOPE_RUNS_DIR": str(Path(jobs.runs_dir()).resolve())})
    assert proc.returncode == 0, proc.stderr
    assert "no job with id 'jnone0001'" in proc.stderr
    assert Path(runner.__file__).name == "runner.py" and "def run_job" not in Path(jobs.__file__).read_text()


@pytest.mark.slow
def test_curves_get_points_between_epochs(runs, tiny_bert, monkeypatch):
    """Issue 14 item 4: a one-epoch job had no curve until it ended; running losses now arrive in between."""
    monkeypatch.setenv("TROJANSCOPE_CURVE_INTERVAL", "0")
    job = wait_for(submit_argv(tiny_argv(tiny_bert, "--seed", "7")), finished)
    assert job.status == "done", job.error
    partial = [m for m in job.metrics if m.get("partial")]
    assert partial and all(0 < m["epoch"] < 2 for m in partial) and all("ce" in m for m in partial)
    assert [m["epoch"] for m in job.metrics if not m.get("partial")] == [1, 2]


def test_resume_right_after_the_process_was_killed_sees_it_dead(runs, tiny_bert, monkeypatch):
    """`jobs resume ID` moments after the job's process was killed: it was answered "job ... is running"; resume
    now checks the process first (as `jobs show` does) and queues the continuation."""
    from trojanscope.jobs import queue

    store = jobs.JobStore()
    spec = spec_of_argv(tiny_argv(tiny_bert, "--out", str(runs / "killed")))
    with store.transaction() as conn:
        store.insert(conn, jobs.Job(id="jkill0001", kind="train", status="running", created=time.time(), argv=[],
                                    config={}, spec=spec.to_dict(), device="cpu", pid=_dead_pid(),
                                    started=time.time(), log_path=str(store.log_path("jkill0001")), cwd=os.getcwd(),
                                    dedupe_key="jkill0001", out_dir=str(runs / "killed")))
    queued: list = []
    monkeypatch.setattr(queue, "submit", lambda s, kind=None, argv=None: queued.append(s) or "jnext0001")
    assert jobs.resume("jkill0001") == "jnext0001"
    assert jobs.get("jkill0001").status == "failed"
    (again,) = queued
    assert again.resume and again.spec == spec.spec and again.out == spec.out
    _insert(store, "jold00002", "failed")  # a record from before task specs: a clear refusal, not a crash
    with pytest.raises(TrojanScopeError, match="older TrojanScope"):
        jobs.resume("jold00002")


def test_a_spec_from_the_dashboard_is_its_own_cli_twin(runs, tiny_bert, monkeypatch):
    """`jobs submit --spec JSON` queues exactly the spec a page built (the CLI twin shown under each form); the
    job stores the spec, and flags and spec give the same job."""
    import json as json_

    from trojanscope.jobs import runner
    from trojanscope.tasks import TrainTaskSpec

    monkeypatch.setattr(runner, "_launch", lambda store, conn, job: False)  # stays queued: nothing trains
    from_flags = spec_of_argv(tiny_argv(tiny_bert, "--out", str(runs / "twin")))
    job_id = jobs_cli("submit", "--spec", json_.dumps({"kind": "train", **from_flags.to_dict()}))["id"]
    job = jobs.get(job_id)
    assert TrainTaskSpec.from_dict(job.spec) == from_flags and job.argv == []
    assert job.config["model"] == str(tiny_bert) and job.config["attack"] == "badnets"
    with pytest.raises(TrojanScopeError, match="unknown key"):
        jobs_cli("submit", "--spec", json_.dumps({"kind": "train", "spec": {"lr": 1}}))
    with pytest.raises(TrojanScopeError, match="kind"):
        jobs_cli("submit", "--spec", "{}")
