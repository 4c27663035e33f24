"""The dashboard's demo build as a background job: :func:`submit_build` and :func:`build_state`
(the builder itself is :mod:`trojanscope.demo`, the task ``demo``)."""

from __future__ import annotations

from typing import Any


def submit_build(*, quick: bool = False, device: str = "auto") -> str:
    """Queue the demo build as a background job (``trojanscope jobs submit --kind demo``) writing to
    ``<runs dir>/demo``; return its id. While a demo job is queued or running, that job's id is
    returned instead of a second build (two tabs pressing Build make one job)."""
    from trojanscope.jobs.queue import submit
    from trojanscope.tasks import DemoTaskSpec

    return submit(DemoTaskSpec(quick=quick, device=device))


def build_state() -> dict[str, Any]:
    """The latest demo job, as the Home page shows it.

    ``{"status": idle|queued|running|done|failed|cancelled, "progress": 0..1, "message", "job": id or None,
    "error", "log"}`` (``log``: the tail of a failed job's log). A read of the job store (see
    :func:`trojanscope.jobs.list_jobs`).
    """
    from trojanscope import jobs

    found = jobs.list_jobs(limit=1, kind="demo")
    if not found:
        return {"status": "idle", "progress": 0.0, "message": "", "job": None, "error": None, "log": ""}
    job = found[0]
    message = {"queued": f"waiting for the {job.device} device (another job is running on it)",
               "running": job.message or "starting", "done": "built", "cancelled": "cancelled",
               "failed": "the build stopped before finishing"}[job.status]
    log = jobs.log_tail(job.id, 4000) if job.status == "failed" else ""
    return {"status": job.status, "progress": float(job.progress or 0.0), "message": message, "job": job.id,
            "error": job.error, "log": log}
