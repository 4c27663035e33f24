"""Durable background jobs: long work as detached processes, tracked in SQLite.

A job is a CLI command's argument list; its kind is the command (``train``, ``por`` or
``demo``, :mod:`trojanscope.jobs.kinds`). The pieces:

- :mod:`trojanscope.jobs.store`: the ``jobs`` table (WAL, versioned schema, best-effort progress);
- :mod:`trojanscope.jobs.queue`: :func:`submit`, :func:`resume`, :func:`list_jobs`, :func:`get`, :func:`log_tail`;
- :mod:`trojanscope.jobs.runner`: the lifecycle: :func:`schedule` (at most one running job per
  device by default), the detached job process (:func:`run_job`, started as ``python -m
  trojanscope.jobs run ID``), liveness, :func:`cancel`;
- :mod:`trojanscope.jobs.cli`: ``trojanscope jobs ...``.

This package re-exports their public names.
"""

from __future__ import annotations

from trojanscope.jobs.kinds import JOB_KINDS, KINDS, JobKind, job_kind, parse_job_args, parse_train_args
from trojanscope.jobs.queue import DEDUPE_SECONDS, RESUMABLE, get, list_jobs, log_tail, resume, submit
from trojanscope.jobs.runner import (CANCEL_GRACE_SECONDS, DIED, PER_DEVICE_ENV, PROGRESS_INTERVAL, alive, cancel,
                                     describe_failure, max_per_device, refresh, run_job, schedule)
from trojanscope.jobs.store import ACTIVE, FINISHED, SCHEMA_VERSION, STATUSES, Job, JobStore, migrate, runs_dir

__all__ = [
    "ACTIVE", "FINISHED", "STATUSES", "SCHEMA_VERSION", "Job", "JobStore", "runs_dir", "migrate", "submit", "resume",
    "RESUMABLE",
    "schedule", "refresh", "run_job", "cancel", "list_jobs", "get", "log_tail", "describe_failure", "alive",
    "max_per_device", "parse_job_args", "parse_train_args", "KINDS", "JOB_KINDS", "JobKind", "job_kind",
    "DEDUPE_SECONDS", "PROGRESS_INTERVAL", "CANCEL_GRACE_SECONDS", "PER_DEVICE_ENV", "DIED",
]
