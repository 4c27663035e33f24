"""The job lifecycle: scheduling, the detached job process, liveness, the final status, cancelling.

:func:`schedule` starts queued jobs as detached subprocesses (``python -m trojanscope.jobs run ID``,
in their own session, so they outlive the Streamlit server or CLI call that launched them), at
most ``$TROJANSCOPE_JOBS_PER_DEVICE`` (default 1) running jobs per device. There is no daemon:
:func:`schedule` runs after every submit, when a job ends and after a cancel, and it first
reconciles (a "running" job whose process is gone becomes failed). Listings call :func:`refresh`,
which only reads unless there is something to reconcile or start, and then writes in one short
transaction that gives way to a busy lock.

Inside the job process :func:`run_job` runs the job's command (its kind: ``cmd_train``,
``cmd_por``, ``cmd_demo``) and writes progress (best-effort), per-epoch metrics (best-effort) and
the final result (retried) back to the store. :func:`cancel` stops a job with SIGTERM, which the
job turns into ``KeyboardInterrupt`` so the training's temporary output directory is removed as
for Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable, TypeVar

from trojanscope.errors import TrojanScopeError
from trojanscope.jobs.kinds import job_kind
from trojanscope.jobs.store import ACTIVE, Job, JobStore, is_busy
from trojanscope.processes import background_env

log = logging.getLogger(__name__)

PROGRESS_INTERVAL = 0.5  # seconds between progress writes from a running job
CURVE_INTERVAL = 20.0  # seconds between the running-loss points a job adds to its curves between epochs
CURVE_ENV = "TROJANSCOPE_CURVE_INTERVAL"  # overrides it (tests)
CANCEL_GRACE_SECONDS = 5.0  # SIGTERM, then SIGKILL if the job is still alive after this long
REFRESH_BUSY_TIMEOUT_S = 0.5  # a listing's reconcile waits this long for the write lock, then skips
FINAL_WRITE_ATTEMPTS = 4  # a job's final status is retried this often (each waits BUSY_TIMEOUT_MS)
PER_DEVICE_ENV = "TROJANSCOPE_JOBS_PER_DEVICE"
DIED = "the job's process died"
_launched: list[subprocess.Popen] = []  # our own children, polled so that none stays a zombie
_launched_lock = threading.Lock()  # a Streamlit server schedules from several threads
T = TypeVar("T")


def max_per_device() -> int:
    """Running jobs allowed per device: ``$TROJANSCOPE_JOBS_PER_DEVICE``, default 1."""
    text = os.environ.get(PER_DEVICE_ENV, "1")
    with contextlib.suppress(ValueError):
        if int(text) >= 1:
            return int(text)
    raise TrojanScopeError(f"{PER_DEVICE_ENV}={text!r} is not allowed; give a whole number of at least 1 (running "
                           "jobs per device)")


def lane_of(kind: str) -> str:
    """The scheduling lane of a job of ``kind`` (:attr:`trojanscope.tasks.base.Task.lane`); a kind this version
    does not know runs in the main lane."""
    try:
        return job_kind(kind).lane
    except TrojanScopeError:
        return "main"


def _slot(job: Job) -> tuple[str, str]:
    """What a job occupies while it runs: its device, in its kind's lane (each lane allows
    :func:`max_per_device` running jobs per device)."""
    return job.device, lane_of(job.kind)


def alive(pid: int, job_id: str) -> bool:
    """Whether ``pid`` is a live (not zombie) process that is running ``job_id``.

    The command-line check guards against a recycled pid being taken for the job.
    """
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[-1].split()[0] == "Z":
                return False
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return job_id.encode() in f.read().split(b"\0")
    except OSError:  # no /proc (not Linux): trust kill(pid, 0)
        return True


def _reap() -> None:
    """Collect the exit status of finished children this process launched."""
    with _launched_lock:
        _launched[:] = [p for p in _launched if p.poll() is None]


def schedule(busy_timeout: float | None = None) -> list[str]:
    """Reconcile dead jobs, then start the oldest queued job of each device (and lane) that has room; return the
    started ids. The lanes: trainings, purifications, scans and repairs share the main one; the analyses
    (:mod:`trojanscope.tasks.analyses`) have their own, so a 20-second anatomy never waits for a long training.

    All of it happens under one write lock, so two schedulers (the dashboard and a CLI call, say)
    never start the same job or two jobs for one free device. ``busy_timeout``: seconds to wait
    for that lock (default: the store's); past it ``sqlite3.OperationalError`` is raised.
    """
    _reap()
    limit = max_per_device()
    store = JobStore()
    started = []
    with store.transaction(busy_timeout) as conn:
        running: dict[tuple[str, str], int] = {}
        for job in store.select("status = 'running'", conn=conn):
            if job.pid is not None and alive(job.pid, job.id):
                running[_slot(job)] = running.get(_slot(job), 0) + 1
            else:
                store.update(job.id, conn, status="failed", ended=time.time(), error=DIED)
                _append_log(job.log_path, f"{DIED}; marked failed")
        for job in store.select("status = 'queued'", order="created, rowid", conn=conn):
            if running.get(_slot(job), 0) >= limit:
                continue
            if _launch(store, conn, job):
                running[_slot(job)] = running.get(_slot(job), 0) + 1
                started.append(job.id)
    return started


def needs_schedule(active: list[Job]) -> bool:
    """Whether :func:`schedule` has work among ``active`` (the queued and running jobs, as read): a running
    job whose process is gone, or a queued job whose device (and lane) has room."""
    running: dict[tuple[str, str], int] = {}
    for job in active:
        if job.status == "running":
            if job.pid is None or not alive(job.pid, job.id):
                return True
            running[_slot(job)] = running.get(_slot(job), 0) + 1
    limit = max_per_device()
    return any(job.status == "queued" and running.get(_slot(job), 0) < limit for job in active)


def refresh(busy_timeout: float = REFRESH_BUSY_TIMEOUT_S) -> bool:
    """What a listing does before it reads: only reads, and calls :func:`schedule` (one short write) only when
    :func:`needs_schedule`; a busy lock skips it (the next listing retries). True when it wrote."""
    _reap()
    store = JobStore()
    if not store.path.exists():
        return False
    if not needs_schedule(store.select("status IN ('queued', 'running')")):
        return False
    try:
        schedule(busy_timeout)
    except sqlite3.OperationalError as e:
        if not is_busy(e):
            raise
        log.info("job store busy: reconciling jobs skipped until the next listing (%s)", e)
        return False
    return True


def _launch(store: JobStore, conn: Any, job: Job) -> bool:
    """Start ``job`` as a detached process and mark it running with that process's pid (False: it failed to start)."""
    log_file = Path(job.log_path)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    env = background_env({"TROJANSCOPE_RUNS_DIR": str(store.root.resolve())})
    try:
        with open(log_file, "ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", "trojanscope.jobs", "run", job.id], cwd=job.cwd, env=env,
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
    except OSError as e:
        store.update(job.id, conn, status="failed", ended=time.time(), error=f"could not start the job's process: {e}")
        return False
    with _launched_lock:
        _launched.append(proc)
    store.update(job.id, conn, status="running", started=time.time(), pid=proc.pid)
    return True


def _append_log(path: str, line: str) -> None:
    with contextlib.suppress(OSError), open(path, "a") as f:
        f.write(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {line}\n")


def describe_failure(exc: BaseException, batch_size: int | None = None) -> str:
    """The error message stored for a job that raised ``exc``; out-of-memory errors suggest a smaller batch."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    oom = (type(exc).__name__ == "OutOfMemoryError" or isinstance(exc, MemoryError)
           or (isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()))
    if not oom:
        return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    if batch_size is None:
        return f"out of memory: try a smaller --batch-size or --max-length ({text})"
    from trojanscope.training.loop import out_of_memory_message

    return out_of_memory_message(batch_size)


def _retry_busy(write: Callable[[], T], attempts: int = FINAL_WRITE_ATTEMPTS) -> T:
    """Run ``write``; while it fails on a busy lock, try again (up to ``attempts`` times in all)."""
    for attempt in range(1, attempts + 1):
        try:
            return write()
        except sqlite3.OperationalError as e:
            if not is_busy(e) or attempt == attempts:
                raise
            log.warning("job store busy (%s); retrying a status change (%d/%d)", e, attempt, attempts)
            time.sleep(0.1 * attempt)
    raise AssertionError("unreachable")  # pragma: no cover


def _finish(store: JobStore, job_id: str, status: str, **values: Any) -> bool:
    """Move a running job to its final ``status``; False when it is no longer running (cancelled meanwhile).

    A status change is not best-effort: a busy lock is waited for and retried."""
    def write() -> bool:
        with store.transaction() as conn:
            if store.get(job_id, conn).status != "running":
                return False
            store.update(job_id, conn, status=status, ended=time.time(), **values)
            return True

    return _retry_busy(write)


class _SigtermInterrupts:
    """While entered, SIGTERM raises KeyboardInterrupt (as Ctrl-C would) until :meth:`disarm`.

    After ``disarm`` a SIGTERM is ignored until exit, so a late cancel cannot cut the job's final
    bookkeeping short (the store, not the signal, then decides the outcome). Signal handlers can
    only be set in the main thread; elsewhere this does nothing.
    """

    def __init__(self) -> None:
        self.armed = True
        self._previous: Any = None
        self._active = threading.current_thread() is threading.main_thread()

    def _handle(self, signum: int, frame: Any) -> None:
        if self.armed:
            raise KeyboardInterrupt

    def disarm(self) -> None:
        self.armed = False

    def __enter__(self) -> "_SigtermInterrupts":
        if self._active:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._active:
            signal.signal(signal.SIGTERM, self._previous)


def run_job(job_id: str) -> dict[str, Any]:
    """Run a job in this process (what ``python -m trojanscope.jobs run ID`` does); return its final JSON.

    Claims the job (queued, or running under this pid when the scheduler launched it), runs its
    command, records the outcome, and finally calls :func:`schedule` so the next queued job
    starts. The process's command line must contain the job id (as ``... run ID`` does): that is
    how other schedulers tell the live job from a recycled pid.
    """
    store = JobStore()
    with _SigtermInterrupts() as interrupts:
        with store.transaction() as conn:
            job = store.get(job_id, conn)
            if job.status == "running" and job.pid != os.getpid():
                raise TrojanScopeError(f"job {job_id} is already running (pid {job.pid})")
            if job.status not in ACTIVE:
                return job.to_json()  # cancelled before it started: nothing to do
            store.update(job_id, conn, status="running", pid=os.getpid(), started=job.started or time.time())
        what = (f"trojanscope {job.kind} {shlex.join(job.argv)}" if job.argv else
                f"{job.kind} task {json.dumps(job.spec, ensure_ascii=False)}")
        print(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] job {job_id} (pid {os.getpid()}, {job.device}): {what}",
              flush=True)
        try:
            _run(store, job, interrupts)
        finally:
            interrupts.disarm()
            with contextlib.suppress(sqlite3.OperationalError):  # a busy store: the next listing schedules
                _retry_busy(schedule)
    return store.get(job_id).to_json()


def _run(store: JobStore, job: Job, interrupts: _SigtermInterrupts) -> None:
    """Run ``job``'s task on its stored spec and record the outcome (done, failed or cancelled). Progress and
    metrics writes are best-effort: a busy store never fails the job."""
    from trojanscope.tasks import Event
    from trojanscope.utils import to_jsonable

    last_write = 0.0
    last_curve = time.monotonic()
    curve_interval = float(os.environ.get(CURVE_ENV, CURVE_INTERVAL))

    def on_event(typed: Event) -> None:
        nonlocal last_write, last_curve
        event = typed.to_dict()
        progress = min(typed.progress, 0.99) if typed.progress is not None else 0.0
        if event.get("event") == "epoch":
            record = to_jsonable({k: v for k, v in event.items() if k != "event"})
            store.append_metric(job.id, record, progress)
            last_write = time.monotonic()
            print("epoch " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                       for k, v in record.items()), flush=True)
        elif event.get("event") == "step" and event.get("running") and \
                time.monotonic() - last_curve >= curve_interval and "epoch_progress" in event and \
                float(event["epoch_progress"]) % 1:  # (an epoch's end has its own record)
            # curves between epochs: the running losses, at a fractional epoch (a one-epoch job is not blind)
            record = to_jsonable({"epoch": round(float(event["epoch_progress"]), 3), "partial": True,
                                  **event["running"]})
            store.append_metric(job.id, record, progress)
            last_curve = last_write = time.monotonic()
        elif event.get("event") == "step" and time.monotonic() - last_write >= PROGRESS_INTERVAL:
            store.try_update(job.id, progress=progress)
            last_write = time.monotonic()
        elif event.get("event") == "stage":  # a new phase of the job (the demo: which model it builds)
            store.try_update(job.id, message=str(event.get("message", "")), **({"progress": progress}
                                                                                if event.get("total") else {}))
            print(event.get("message", ""), flush=True)

    spec = None
    try:
        if job.spec is None:
            raise TrojanScopeError(f"job {job.id} was recorded by an older TrojanScope (as the command line "
                                   f"`trojanscope {job.kind} {shlex.join(job.argv)}`); submit it again")
        task = job_kind(job.kind)
        spec = task.spec(job.spec)
        result = task.run(spec, on_event=on_event, progress=False)  # no progress bars in the log: epoch lines
        interrupts.disarm()
    except KeyboardInterrupt:
        interrupts.disarm()
        _finish(store, job.id, "cancelled", error="interrupted (SIGTERM or Ctrl-C) before finishing")
        print("interrupted; nothing half-written was kept", flush=True)
        return
    except TrojanScopeError as e:
        interrupts.disarm()
        _finish(store, job.id, "failed", error=str(e))
        print(f"error: {e}", flush=True)
        return
    except Exception as e:
        interrupts.disarm()
        traceback.print_exc()
        recipe = getattr(spec, "spec", spec)
        batch_size = getattr(getattr(recipe, "train", None), "batch_size", None) or getattr(
            getattr(recipe, "config", None), "batch_size", None)
        _finish(store, job.id, "failed", error=describe_failure(e, batch_size))
        return
    result = to_jsonable(result)
    out = result.get("out") or job.out_dir
    if _finish(store, job.id, "done", progress=1.0, result=result, message=None,
               out_dir=os.path.abspath(out) if out else None):
        scores = (f"cacc={result.get('cacc')}, asr={result.get('asr')}, " if "cacc" in result or "asr" in result
                  else "")
        print(f"done: {scores}saved to {out}", flush=True)
    elif job_kind(job.kind).keeps_output:  # cancelled as it finished; what it built replaced models in place
        print("cancelled after finishing; what it built was kept", flush=True)
    else:  # cancelled just as training finished: a cancelled job leaves no model behind
        shutil.rmtree(result["out"], ignore_errors=True)
        print("cancelled after training finished; the saved model was removed", flush=True)


def _signal(pid: int, sig: int) -> None:
    """Send ``sig`` to the job's process group (its own session), or to the process if it has none."""
    with contextlib.suppress(ProcessLookupError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def _wait_dead(pid: int, job_id: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        _reap()
        if not alive(pid, job_id):
            return True
        time.sleep(0.05)
    return not alive(pid, job_id)


def cancel(job_id: str, grace: float = CANCEL_GRACE_SECONDS) -> Job:
    """Cancel a queued or running job; a running one gets SIGTERM, then SIGKILL after ``grace`` seconds."""
    store = JobStore()
    with store.transaction() as conn:
        job = store.get(job_id, conn)
        if job.finished:
            raise TrojanScopeError(f"job {job_id} already finished ({job.status}); only queued or running jobs can "
                                   "be cancelled")
        store.update(job_id, conn, status="cancelled", ended=time.time())
    if job.status == "running" and job.pid is not None and alive(job.pid, job_id):
        _append_log(job.log_path, "cancel requested: SIGTERM")
        _signal(job.pid, signal.SIGTERM)
        if not _wait_dead(job.pid, job_id, grace):
            _append_log(job.log_path, f"still running after {grace:g} s: SIGKILL")
            _signal(job.pid, signal.SIGKILL)
            _wait_dead(job.pid, job_id, 5.0)
    schedule()
    return store.get(job_id)
