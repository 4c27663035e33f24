"""Durable background jobs: training runs as detached processes, tracked in SQLite.

A job is a ``trojanscope train`` argument list. :func:`submit` validates it and stores a queued
row; :func:`schedule` starts queued jobs as detached subprocesses (``python -m trojanscope.jobs
run ID``, in their own session, so they outlive the Streamlit server or CLI call that launched
them), at most one running job per device by default. There is no daemon: :func:`schedule` runs
after every submit, when a job ends, after a cancel and whenever jobs are listed, and it first
reconciles (a "running" job whose process is gone becomes failed).

A job's kind is the CLI command it runs: ``train`` (``cmd_train``) or ``por`` (``cmd_por``).
Inside the job process :func:`run_job` runs that command and writes
progress, per-epoch metrics and the final result back to the store. :func:`cancel` stops a job
with SIGTERM, which the job turns into ``KeyboardInterrupt`` so the training's temporary output
directory is removed as for Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
import uuid
from pathlib import Path
from typing import Any, Sequence

from trojanscope.errors import TrojanScopeError
from trojanscope.jobs.store import ACTIVE, FINISHED, STATUSES, Job, JobStore, runs_dir
from trojanscope.processes import background_env

__all__ = [
    "ACTIVE", "FINISHED", "STATUSES", "Job", "JobStore", "runs_dir", "submit", "schedule", "run_job", "cancel",
    "list_jobs", "get", "log_tail", "describe_failure", "parse_train_args", "KINDS",
]

KINDS = ("train", "por")  # CLI commands a job can run; each has a cmd_<kind>(args, on_event) in trojanscope.cli
DEDUPE_SECONDS = 2.0  # a second identical submit within this window is the same job (double clicks)
PROGRESS_INTERVAL = 0.5  # seconds between progress writes from a running job
CANCEL_GRACE_SECONDS = 5.0  # SIGTERM, then SIGKILL if the job is still alive after this long
PER_DEVICE_ENV = "TROJANSCOPE_JOBS_PER_DEVICE"
DIED = "the job's process died"
_NO_OUT = "\0no --out given"  # placeholder default that a user's --out overrides
_launched: list[subprocess.Popen] = []  # our own children, polled so that none stays a zombie
_launched_lock = threading.Lock()  # a Streamlit server schedules from several threads


def parse_train_args(argv: Sequence[str], kind: str = "train") -> argparse.Namespace:
    """Parse ``argv`` as ``trojanscope <kind>`` arguments; argparse's complaint becomes a TrojanScopeError."""
    from trojanscope.cli import build_parser

    argv = [str(a) for a in argv]
    if "-h" in argv or "--help" in argv:
        raise TrojanScopeError(f"a job's arguments cannot ask for --help; see `trojanscope {kind} --help`")
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return build_parser().parse_args([kind, *argv])
    except SystemExit:
        lines = err.getvalue().strip().splitlines()
        message = lines[-1].split(" error: ", 1)[-1] if lines else "invalid arguments"
        raise TrojanScopeError(f"invalid {kind} arguments: {message}; see `trojanscope {kind} --help` for what is "
                               "allowed") from None


def _job_device(device: str) -> str:
    """The device a job will run on (the scheduling key): ``auto`` resolved, ``cuda:0`` spelled ``cuda``."""
    from trojanscope.utils import resolve_device  # imports torch: only when submitting

    name = str(resolve_device(device))
    return "cuda" if name == "cuda:0" else name


def submit(argv: Sequence[str], kind: str = "train") -> str:
    """Queue a job running ``trojanscope train <argv>`` and return its id; starts it if its device is free.

    The arguments are checked up front (a bad option fails here, not minutes later). Without
    ``--out`` the model goes to ``<runs dir>/<job id>``. The same ``argv`` submitted again within
    :data:`DEDUPE_SECONDS`, while the first is not failed or cancelled, returns the first job's id.
    """
    if kind not in KINDS:
        raise TrojanScopeError(f"unknown job kind {kind!r}; allowed: {', '.join(KINDS)}")
    argv = [str(a) for a in argv]
    args = parse_train_args(["--out", _NO_OUT, *argv], kind)
    device = _job_device(args.device)
    key = hashlib.sha256(json.dumps([kind, argv]).encode()).hexdigest()
    store = JobStore()
    now = time.time()
    with store.transaction() as conn:
        recent = store.select("dedupe_key = ? AND created >= ? AND status NOT IN ('failed', 'cancelled')",
                              (key, now - DEDUPE_SECONDS), limit=1, conn=conn)
        if recent:
            return recent[0].id
        job_id = _new_id(store, conn)
        if args.out == _NO_OUT:
            args.out = os.path.abspath(store.root / job_id)
            argv += ["--out", args.out]
        out_dir = os.path.abspath(args.out)
        if os.path.exists(out_dir) and not args.overwrite:
            raise TrojanScopeError(f"output directory {args.out} already exists; choose another --out or pass "
                                   "--overwrite")
        clash = [j for j in store.select("status IN ('queued', 'running')", conn=conn) if j.out_dir == out_dir]
        if clash:
            raise TrojanScopeError(f"job {clash[0].id} ({clash[0].status}) already writes to {args.out}; choose "
                                   "another --out")
        config = {k: v for k, v in vars(args).items() if k != "command"}
        store.insert(conn, Job(id=job_id, kind=kind, status="queued", created=now, argv=argv, config=config,
                               device=device, log_path=str(store.log_path(job_id)), cwd=os.getcwd(),
                               dedupe_key=key, out_dir=out_dir))
    schedule()
    return job_id


def _new_id(store: JobStore, conn: Any) -> str:
    while True:
        job_id = "j" + uuid.uuid4().hex[:8]
        if store.find(job_id, conn) is None:
            return job_id


def _max_per_device() -> int:
    """Running jobs allowed per device: ``$TROJANSCOPE_JOBS_PER_DEVICE``, default 1."""
    text = os.environ.get(PER_DEVICE_ENV, "1")
    with contextlib.suppress(ValueError):
        if int(text) >= 1:
            return int(text)
    raise TrojanScopeError(f"{PER_DEVICE_ENV}={text!r} is not allowed; give a whole number of at least 1 (running "
                           "jobs per device)")


def _alive(pid: int, job_id: str) -> bool:
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


def schedule() -> list[str]:
    """Reconcile dead jobs, then start the oldest queued job of each device that has room; return the started ids.

    All of it happens under one write lock, so two schedulers (the dashboard and a CLI call, say)
    never start the same job or two jobs for one free device.
    """
    _reap()
    limit = _max_per_device()
    store = JobStore()
    started = []
    with store.transaction() as conn:
        running: dict[str, int] = {}
        for job in store.select("status = 'running'", conn=conn):
            if job.pid is not None and _alive(job.pid, job.id):
                running[job.device] = running.get(job.device, 0) + 1
            else:
                store.update(job.id, conn, status="failed", ended=time.time(), error=DIED)
                _append_log(job.log_path, f"{DIED}; marked failed")
        for job in store.select("status = 'queued'", order="created, rowid", conn=conn):
            if running.get(job.device, 0) >= limit:
                continue
            if _launch(store, conn, job):
                running[job.device] = running.get(job.device, 0) + 1
                started.append(job.id)
    return started


def _launch(store: JobStore, conn: Any, job: Job) -> bool:
    """Start ``job`` as a detached process and mark it running with that process's pid (False: it failed to start)."""
    log = Path(job.log_path)
    log.parent.mkdir(parents=True, exist_ok=True)
    env = background_env({"TROJANSCOPE_RUNS_DIR": str(store.root.resolve())})
    try:
        with open(log, "ab") as out:
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


def _finish(store: JobStore, job_id: str, status: str, **values: Any) -> bool:
    """Move a running job to its final ``status``; False when it is no longer running (cancelled meanwhile)."""
    with store.transaction() as conn:
        if store.get(job_id, conn).status != "running":
            return False
        store.update(job_id, conn, status=status, ended=time.time(), **values)
        return True


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

    Claims the job (queued, or running under this pid when the scheduler launched it), trains,
    records the outcome, and finally calls :func:`schedule` so the next queued job starts. The
    process's command line must contain the job id (as ``... run ID`` does): that is how other
    schedulers tell the live job from a recycled pid.
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
        print(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] job {job_id} (pid {os.getpid()}, {job.device}): "
              f"trojanscope train {shlex.join(job.argv)}", flush=True)
        try:
            _train(store, job, interrupts)
        finally:
            interrupts.disarm()
            schedule()
    return store.get(job_id).to_json()


def _train(store: JobStore, job: Job, interrupts: _SigtermInterrupts) -> None:
    """Run ``job`` through its command (``cmd_train``, ``cmd_por``) and record the outcome (done, failed or
    cancelled)."""
    from trojanscope import cli
    from trojanscope.utils import to_jsonable

    last_write = 0.0

    def on_event(event: dict[str, Any]) -> None:
        nonlocal last_write
        progress = min(event["step"] / event["total"], 0.99) if event.get("total") else 0.0
        if event.get("event") == "epoch":
            record = to_jsonable({k: v for k, v in event.items() if k != "event"})
            store.append_metric(job.id, record, progress)
            last_write = time.monotonic()
            print("epoch " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                       for k, v in record.items()), flush=True)
        elif event.get("event") == "step" and time.monotonic() - last_write >= PROGRESS_INTERVAL:
            store.update(job.id, progress=progress)
            last_write = time.monotonic()

    args = None
    try:
        args = parse_train_args(job.argv, job.kind)
        args.json = True  # no progress bars in the log; the epoch lines say enough
        result = getattr(cli, f"cmd_{job.kind}")(args, on_event=on_event)
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
        _finish(store, job.id, "failed", error=describe_failure(e, args.batch_size if args else None))
        return
    result = to_jsonable(result)
    if _finish(store, job.id, "done", progress=1.0, result=result, out_dir=os.path.abspath(result["out"])):
        print(f"done: cacc={result.get('cacc')}, asr={result.get('asr')}, saved to {result['out']}", flush=True)
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
        if not _alive(pid, job_id):
            return True
        time.sleep(0.05)
    return not _alive(pid, job_id)


def cancel(job_id: str, grace: float = CANCEL_GRACE_SECONDS) -> Job:
    """Cancel a queued or running job; a running one gets SIGTERM, then SIGKILL after ``grace`` seconds."""
    store = JobStore()
    with store.transaction() as conn:
        job = store.get(job_id, conn)
        if job.finished:
            raise TrojanScopeError(f"job {job_id} already finished ({job.status}); only queued or running jobs can "
                                   "be cancelled")
        store.update(job_id, conn, status="cancelled", ended=time.time())
    if job.status == "running" and job.pid is not None and _alive(job.pid, job_id):
        _append_log(job.log_path, "cancel requested: SIGTERM")
        _signal(job.pid, signal.SIGTERM)
        if not _wait_dead(job.pid, job_id, grace):
            _append_log(job.log_path, f"still running after {grace:g} s: SIGKILL")
            _signal(job.pid, signal.SIGKILL)
            _wait_dead(job.pid, job_id, 5.0)
    schedule()
    return store.get(job_id)


def list_jobs(limit: int | None = None, status: str | None = None) -> list[Job]:
    """Jobs, newest first (after a :func:`schedule`, so dead ones show as failed and free devices fill)."""
    if status is not None and status not in STATUSES:
        raise TrojanScopeError(f"unknown job status {status!r}; allowed: {', '.join(STATUSES)}")
    if limit is not None and limit < 1:
        raise TrojanScopeError(f"limit must be at least 1, got {limit}")
    schedule()
    if status is None:
        return JobStore().select(limit=limit)
    return JobStore().select("status = ?", (status,), limit=limit)


def get(job_id: str) -> Job:
    """One job by id (a TrojanScopeError naming the id if there is none)."""
    return JobStore().get(job_id)


def log_tail(job_id: str, n_chars: int = 4000) -> str:
    """The last ``n_chars`` characters of the job's log ("" before it has written anything)."""
    path = Path(get(job_id).log_path)
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 4 * n_chars))  # UTF-8: at most 4 bytes a character
            text = f.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return text[-n_chars:]
