"""Submitting and reading jobs: what the dashboard and ``trojanscope jobs`` call.

:func:`submit` validates a job's arguments and stores a queued row, then schedules; listing
(:func:`list_jobs`) is a read, which reconciles and schedules through
:func:`trojanscope.jobs.runner.refresh` only when there is something to do.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any, Sequence

from trojanscope.errors import TrojanScopeError
from trojanscope.jobs.kinds import KINDS, job_kind
from trojanscope.jobs.runner import refresh, schedule
from trojanscope.jobs.store import STATUSES, Job, JobStore

DEDUPE_SECONDS = 2.0  # a second identical submit within this window is the same job (double clicks)


def _job_device(device: str) -> str:
    """The device a job will run on (the scheduling key): ``auto`` resolved, ``cuda:0`` spelled ``cuda``."""
    from trojanscope.utils import resolve_device  # imports torch: only when submitting

    name = str(resolve_device(device))
    return "cuda" if name == "cuda:0" else name


def _nested(a: str, b: str) -> bool:
    """Whether directory ``a`` is ``b`` or one holds the other."""
    return os.path.commonpath([a, b]) in (a, b)


def _as_spec(spec: Any, kind: str | None):
    """``(task, spec)`` for a TaskSpec or the dict ``to_dict`` made (with ``kind`` given)."""
    from trojanscope.tasks import TaskSpec, get_task

    if isinstance(spec, (list, tuple)):
        raise TrojanScopeError("a job is a task spec, not a command line: build one (trojanscope.tasks), or turn "
                               "CLI arguments into one with trojanscope.cli.jobs.submit_argv")
    if isinstance(spec, TaskSpec):
        if kind is not None and kind != spec.kind:
            raise TrojanScopeError(f"a {spec.kind} spec was submitted as a {kind} job")
        kind = spec.kind
    if kind is None:
        raise TrojanScopeError("say which kind of job a spec dict is (kind=...)")
    task = get_task(kind)
    return task, task.spec(spec)


def submit(spec: Any, kind: str | None = None, *, argv: Sequence[str] | None = None) -> str:
    """Queue a job running task spec ``spec`` (a :class:`~trojanscope.tasks.TaskSpec`, or its ``to_dict()`` with
    ``kind``) and return its id; starts it if its device is free. ``argv``: the command line it came from, kept
    for the record (the CLI's ``jobs submit``).

    The spec is checked up front (the task's preflight: a bad option fails here, not minutes later). Without an
    ``out`` the output goes to ``<runs dir>/<job id>`` (the demo: ``<runs dir>/demo``). The same spec submitted
    again within :data:`DEDUPE_SECONDS`, while the first is not failed or cancelled, returns the first job's id;
    for an exclusive kind (the demo) any queued or running job of that kind is returned instead of a second one.
    """
    task, spec = _as_spec(spec, kind)
    kind = task.kind
    task.preflight(spec)
    device = _job_device(task.device(spec))
    key = hashlib.sha256(json.dumps([kind, spec.to_dict()], sort_keys=True).encode()).hexdigest()
    store = JobStore()
    now = time.time()
    with store.transaction() as conn:
        if task.exclusive:
            active = store.select("kind = ? AND status IN ('queued', 'running')", (kind,), limit=1, conn=conn)
            if active:
                return active[0].id
        recent = store.select("dedupe_key = ? AND created >= ? AND status NOT IN ('failed', 'cancelled')",
                              (key, now - DEDUPE_SECONDS), limit=1, conn=conn)
        if recent:
            return recent[0].id
        job_id = _new_id(store, conn)
        if not spec.out:
            spec = spec.replace(out=os.path.abspath(store.root / (task.default_out or job_id)))
        out_dir = os.path.abspath(spec.out)
        if os.path.exists(out_dir) and not task.keeps_output and not getattr(spec, "overwrite", False):
            raise TrojanScopeError(f"output directory {spec.out} already exists; choose another output directory "
                                   "or allow overwriting it")
        clash = [j for j in store.select("status IN ('queued', 'running')", conn=conn)
                 if j.out_dir and _nested(j.out_dir, out_dir)]
        if clash:
            raise TrojanScopeError(f"job {clash[0].id} ({clash[0].status}) already writes to {clash[0].out_dir}; "
                                   "choose another output directory")
        store.insert(conn, Job(id=job_id, kind=kind, status="queued", created=now, argv=[str(a) for a in argv or []],
                               config=task.summary(spec), spec=spec.to_dict(), device=device,
                               log_path=str(store.log_path(job_id)), cwd=os.getcwd(), dedupe_key=key,
                               out_dir=out_dir))
    schedule()
    return job_id


def resume(job_id: str) -> str:
    """Queue a failed or cancelled (paused) resumable job (``train``, ``por``) again with ``resume=True``: it
    continues from the last checkpoint its run left beside its output (every ``checkpoint_minutes``, 10 by
    default) and ends with the model an uninterrupted run would have made. Returns the new job's id. A job whose
    process died is seen as failed first (as ``jobs show`` does), so it resumes at once."""
    from trojanscope.tasks import get_task

    refresh()  # a job whose process was killed a moment ago is failed, not "running"
    job = get(job_id)
    task = get_task(job.kind)
    if not task.resumable:
        resumable = [k for k in KINDS if get_task(k).resumable]
        raise TrojanScopeError(f"job {job_id} is a {job.kind} job; only {' and '.join(resumable)} jobs resume")
    if job.status not in ("failed", "cancelled"):
        raise TrojanScopeError(f"job {job_id} is {job.status}; only a failed or cancelled job resumes")
    if job.spec is None:
        raise TrojanScopeError(f"job {job_id} was recorded by an older TrojanScope (as a command line: "
                               f"{' '.join(job.argv)}); submit that command again with --resume")
    spec = task.spec(job.spec).replace(resume=True)
    argv = [a for a in job.argv if a != "--resume"] + ["--resume"] if job.argv else None
    return submit(spec, argv=argv)


def _new_id(store: JobStore, conn: Any) -> str:
    while True:
        job_id = "j" + uuid.uuid4().hex[:8]
        if store.find(job_id, conn) is None:
            return job_id


def list_jobs(limit: int | None = None, status: str | None = None, kind: str | None = None) -> list[Job]:
    """Jobs, newest first. A read: dead jobs are marked failed and free devices filled first only when there
    are such (:func:`~trojanscope.jobs.runner.refresh`, which gives way to a busy store); a read of the finished
    ones only (``status="done"``) needs neither and skips it."""
    if status is not None and status not in STATUSES:
        raise TrojanScopeError(f"unknown job status {status!r}; allowed: {', '.join(STATUSES)}")
    if limit is not None and limit < 1:
        raise TrojanScopeError(f"limit must be at least 1, got {limit}")
    if kind is not None:
        job_kind(kind)
    if status != "done":
        refresh()
    where, params = [], []
    if status is not None:
        where.append("status = ?")
        params.append(status)
    if kind is not None:
        where.append("kind = ?")
        params.append(kind)
    return JobStore().select(" AND ".join(where) or "1", params, limit=limit)


def get(job_id: str) -> Job:
    """One job by id (a TrojanScopeError naming the id if there is none). A plain read: commands that act on what
    they read (``jobs show``, :func:`resume`) call :func:`~trojanscope.jobs.runner.refresh` first, so that a job
    whose process died is seen as failed."""
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
