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
from trojanscope.jobs.kinds import job_kind, parse_job_args
from trojanscope.jobs.runner import refresh, schedule
from trojanscope.jobs.store import STATUSES, Job, JobStore

DEDUPE_SECONDS = 2.0  # a second identical submit within this window is the same job (double clicks)
_NO_OUT = "\0no --out given"  # placeholder default that a user's --out overrides


def _job_device(device: str) -> str:
    """The device a job will run on (the scheduling key): ``auto`` resolved, ``cuda:0`` spelled ``cuda``."""
    from trojanscope.utils import resolve_device  # imports torch: only when submitting

    name = str(resolve_device(device))
    return "cuda" if name == "cuda:0" else name


def _nested(a: str, b: str) -> bool:
    """Whether directory ``a`` is ``b`` or one holds the other."""
    return os.path.commonpath([a, b]) in (a, b)


def submit(argv: Sequence[str], kind: str = "train") -> str:
    """Queue a job running ``trojanscope <kind> <argv>`` and return its id; starts it if its device is free.

    The arguments are checked up front (a bad option fails here, not minutes later). Without
    ``--out`` the output goes to ``<runs dir>/<job id>`` (the demo: ``<runs dir>/demo``). The same
    ``argv`` submitted again within :data:`DEDUPE_SECONDS`, while the first is not failed or
    cancelled, returns the first job's id; for an exclusive kind (the demo) any queued or running
    job of that kind is returned instead of a second one.
    """
    info = job_kind(kind)
    argv = [str(a) for a in argv]
    args = parse_job_args(["--out", _NO_OUT, *argv], kind)
    preflight(kind, args)
    device = _job_device(args.device)
    key = hashlib.sha256(json.dumps([kind, argv]).encode()).hexdigest()
    store = JobStore()
    now = time.time()
    with store.transaction() as conn:
        if info.exclusive:
            active = store.select("kind = ? AND status IN ('queued', 'running')", (kind,), limit=1, conn=conn)
            if active:
                return active[0].id
        recent = store.select("dedupe_key = ? AND created >= ? AND status NOT IN ('failed', 'cancelled')",
                              (key, now - DEDUPE_SECONDS), limit=1, conn=conn)
        if recent:
            return recent[0].id
        job_id = _new_id(store, conn)
        if args.out == _NO_OUT:
            args.out = os.path.abspath(store.root / (info.default_out or job_id))
            argv += ["--out", args.out]
        out_dir = os.path.abspath(args.out)
        if os.path.exists(out_dir) and not info.keeps_output and not getattr(args, "overwrite", False):
            raise TrojanScopeError(f"output directory {args.out} already exists; choose another --out or pass "
                                   "--overwrite")
        clash = [j for j in store.select("status IN ('queued', 'running')", conn=conn)
                 if j.out_dir and _nested(j.out_dir, out_dir)]
        if clash:
            raise TrojanScopeError(f"job {clash[0].id} ({clash[0].status}) already writes to {clash[0].out_dir}; "
                                   "choose another --out")
        config = {k: v for k, v in vars(args).items() if k != "command"}
        store.insert(conn, Job(id=job_id, kind=kind, status="queued", created=now, argv=argv, config=config,
                               device=device, log_path=str(store.log_path(job_id)), cwd=os.getcwd(),
                               dedupe_key=key, out_dir=out_dir))
    schedule()
    return job_id


RESUMABLE = ("train", "por")


def resume(job_id: str) -> str:
    """Queue a failed or cancelled (paused) ``train``/``por`` job again with ``--resume``: it continues from the
    last checkpoint its run left beside its output (every ``--checkpoint-minutes``, 10 by default) and ends with
    the model an uninterrupted run would have made. Returns the new job's id."""
    job = get(job_id)
    if job.kind not in RESUMABLE:
        raise TrojanScopeError(f"job {job_id} is a {job.kind} job; only {' and '.join(RESUMABLE)} jobs resume")
    if job.status not in ("failed", "cancelled"):
        raise TrojanScopeError(f"job {job_id} is {job.status}; only a failed or cancelled job resumes")
    argv = [a for a in job.argv if a != "--resume"] + ["--resume"]
    return submit(argv, kind=job.kind)


def preflight(kind: str, args: Any) -> None:
    """Refuse at once a recipe the job would refuse seconds later: the kind's ``preflight_<kind>(args)`` in
    :mod:`trojanscope.cli` (the same checks the command makes before its work, without loading weights)."""
    from trojanscope import cli

    check = getattr(cli, f"preflight_{kind}", None)
    if check is not None:
        check(args)


def _new_id(store: JobStore, conn: Any) -> str:
    while True:
        job_id = "j" + uuid.uuid4().hex[:8]
        if store.find(job_id, conn) is None:
            return job_id


def list_jobs(limit: int | None = None, status: str | None = None, kind: str | None = None) -> list[Job]:
    """Jobs, newest first. A read: dead jobs are marked failed and free devices filled first only when there
    are such (:func:`~trojanscope.jobs.runner.refresh`, which gives way to a busy store)."""
    if status is not None and status not in STATUSES:
        raise TrojanScopeError(f"unknown job status {status!r}; allowed: {', '.join(STATUSES)}")
    if limit is not None and limit < 1:
        raise TrojanScopeError(f"limit must be at least 1, got {limit}")
    if kind is not None:
        job_kind(kind)
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
