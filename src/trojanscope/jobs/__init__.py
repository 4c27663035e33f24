"""Durable background jobs: long work as detached processes, tracked in SQLite.

A job runs a task (:mod:`trojanscope.tasks`: ``train``, ``por``, ``purify``, ``scan``, ``demo``) on its stored
spec (``spec.to_dict()``); :mod:`trojanscope.jobs.kinds` maps a job's kind to its task. The pieces:

- :mod:`trojanscope.jobs.store`: the ``jobs`` table (WAL, versioned schema, best-effort progress);
- :mod:`trojanscope.jobs.queue`: :func:`submit`, :func:`resume`, :func:`list_jobs`, :func:`get`, :func:`log_tail`;
- :mod:`trojanscope.jobs.runner`: the lifecycle: :func:`schedule` (at most one running job per
  device by default), the detached job process (:func:`run_job`, started as ``python -m
  trojanscope.jobs run ID``), liveness, :func:`cancel`;
- ``trojanscope jobs ...`` is the CLI's (:mod:`trojanscope.cli.jobs`); this package never imports the CLI.

This package re-exports their public names.
"""

from __future__ import annotations

from trojanscope.jobs.kinds import JOB_KINDS, KINDS, JobKind, job_kind
from trojanscope.jobs.queue import DEDUPE_SECONDS, get, list_jobs, log_tail, resume, submit
from trojanscope.jobs.runner import (CANCEL_GRACE_SECONDS, DIED, PER_DEVICE_ENV, PROGRESS_INTERVAL, alive, cancel,
                                     describe_failure, max_per_device, refresh, run_job, schedule)
from trojanscope.jobs.store import ACTIVE, FINISHED, SCHEMA_VERSION, STATUSES, Job, JobStore, migrate, runs_dir

RESUMABLE = tuple(k for k, task in JOB_KINDS.items() if task.resumable)  # ("train", "por")

__all__ = [
    "ACTIVE", "FINISHED", "STATUSES", "SCHEMA_VERSION", "Job", "JobStore", "runs_dir", "migrate", "submit", "resume",
    "RESUMABLE",
    "schedule", "refresh", "run_job", "cancel", "list_jobs", "get", "log_tail", "describe_failure", "alive",
    "max_per_device", "KINDS", "JOB_KINDS", "JobKind", "job_kind",
    "DEDUPE_SECONDS", "PROGRESS_INTERVAL", "CANCEL_GRACE_SECONDS", "PER_DEVICE_ENV", "DIED",
]
