"""Where pages watch their jobs: a progress bar (percentage, time left) per running job, polled only while one
runs, and the whole page rerun the moment one ends, with a notice, so the page's results (read in the full run)
show the new result without a reload.

An idle tab costs nothing here: with no job queued or running, the fragment has no ``run_every`` and never
polls. A job launched from another tab or the CLI shows on the next rerun of the page (any click).
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any, Callable, Sequence

import streamlit as st

from trojanscope import jobs
from trojanscope.jobs.eta import Estimates, describe, phase_seconds, time_left

POLL_SECONDS = 2.0
_ENDED = "_jobwatch_ended_"  # session-state prefix: the jobs that ended since the page's last full run
_ETA = "_jobwatch_eta_"  # session-state prefix: one job's Estimates

NOUN = {"scan": "scan", "purify": "purification", "train": "training", "por": "POR job", "demo": "demo build",
        "repair": "repair", "swap": "embedding swap", "anatomy": "trigger anatomy", "effectiveness": "E and S",
        "detect": "detection", "embed-map": "representation map"}


def _label(job) -> str:
    return f"`{job.id}` {NOUN.get(job.kind, job.kind)}"


def phases_of(kind: str) -> list[float] | None:
    """The measured seconds of each phase of ``kind``'s jobs (this machine's finished ones, else the recorded
    medians), in progress order; None for kinds whose progress is already proportional to the work."""
    finished = []
    try:
        if kind in ("scan",):
            finished = jobs.list_jobs(limit=10, status="done", kind=kind)
    except Exception:  # noqa: BLE001 - an unreadable store: the recorded medians
        finished = []
    seconds = phase_seconds(kind, finished)
    return list(seconds.values()) if seconds else None


def time_left_text(job, phases: Sequence[float] | None, now: float | None = None) -> str:
    """``about N min left`` for a running job, from the phases' measured share of the work; withheld (and said
    so) while the estimate has been moving (:class:`trojanscope.jobs.eta.Estimates`)."""
    if job.status != "running":
        return "waiting for a free device"
    now = time.time() if now is None else now
    left = time_left(job.progress, now - (job.started or now), phases)
    if left is None:
        return describe(None)
    est = st.session_state.setdefault(_ETA + job.id, Estimates())
    shown = est.update(now, left)
    return describe(shown) if shown is not None else "time left: re-estimating (the pace changed)"


def progress_text(job, phases: Sequence[float] | None, label: Callable = _label) -> str:
    pct = 100 * min(max(job.progress or 0.0, 0.0), 1.0)
    parts = [f"{label(job)}: {job.status}", f"{pct:.0f}%", time_left_text(job, phases)]
    if job.message:
        parts.insert(1, str(job.message))
    return " · ".join(parts)


def follow(key: str, active: Sequence, *, label: Callable = _label, done_note: str = "its result is below",
           live: Callable[[list], None] | None = None, cancel: bool = False) -> list:
    """Show ``active`` jobs (the page's queued or running ones) with a live progress bar each; when one ends, rerun
    the whole page. ``live``, if given, draws more inside the polled part (e.g. live curves), given the jobs as
    just read. ``cancel``: a Cancel button under each bar (it goes with the bar). Returns the jobs that ended
    since the page's last full run (each also gets a notice here: a toast and a line, "finished: <done_note>",
    or why it failed), so the page can say what changed."""
    ended_ids = st.session_state.pop(_ENDED + key, [])
    ended = []
    for job_id in ended_ids:
        try:
            ended.append(jobs.get(job_id))
        except Exception:  # noqa: BLE001 - a job removed meanwhile
            continue
    for job in ended:
        st.session_state.pop(_ETA + job.id, None)
        if job.status == "done":
            st.toast(f"{label(job)} finished.", icon=":material/check_circle:")
            st.success(f"{label(job)} finished ({time.strftime('%H:%M:%S', time.localtime(job.ended or time.time()))}): "
                       f"{done_note}.")
        elif job.status == "cancelled":
            st.info(f"{label(job)} was cancelled.")
        else:
            st.error(f"{label(job)} failed: {job.error or job.status}.")

    ids = [j.id for j in active if not j.finished]
    phases = {kind: phases_of(kind) for kind in {j.kind for j in active}}

    @st.fragment(run_every=POLL_SECONDS if ids else None)
    def _live() -> None:
        if not ids:
            return
        try:  # the listing reconciles first: a job whose process died is failed, a free device gets the next one
            by_id = {j.id: j for j in jobs.list_jobs()}
            now = [by_id[i] for i in ids if i in by_id]
        except Exception as e:  # noqa: BLE001 - never a traceback: the next poll retries
            st.caption(f"Could not read the job store ({type(e).__name__}); retrying.")
            return
        finished = [j.id for j in now if j.finished]
        if finished:
            st.session_state[_ENDED + key] = finished
            st.rerun()  # the whole page: its result sections read the store anew
        for j in now:
            st.progress(min(max(j.progress or 0.0, 0.0), 1.0), text=progress_text(j, phases.get(j.kind), label))
            if cancel and st.button("Cancel", key=f"{key}_cancel_{j.id}", help="stop this job; nothing it computed "
                                    "is kept"):
                try:
                    jobs.cancel(j.id)
                except Exception as e:  # noqa: BLE001 - it ended meanwhile: the rerun shows how
                    st.caption(f"Could not cancel `{j.id}`: {e}")
                st.session_state[_ENDED + key] = [j.id]
                st.rerun()
        if live is not None:
            live(now)

    _live()
    return ended


# --- analyses as jobs ------------------------------------------------------------------------------------------
_IGNORED = ("out", "overwrite")  # where a run writes is not one of its inputs


def inputs_of(spec: Any) -> dict:
    """What an analysis computes from (its spec without where it writes): two runs with the same inputs give the
    same result, so the newer one's result stands for both."""
    d = spec if isinstance(spec, dict) else spec.to_dict()
    return {k: v for k, v in d.items() if k not in _IGNORED}


def matching_jobs(spec: Any, listed: Sequence | None = None) -> list:
    """The jobs of ``spec``'s kind run with the same inputs on the same model files, newest first (``listed``:
    the kind's jobs as already read). The job store is the analyses' cache: coming back to the same inputs, from
    this tab or another, shows the result without recomputing; a model rebuilt in place since makes its old
    results stale (:func:`trojanscope.tasks.analyses.weights_of`)."""
    from trojanscope.tasks.analyses import weights_of

    want, weights = inputs_of(spec), weights_of(spec)
    listed = jobs.list_jobs(limit=200, kind=spec.kind) if listed is None else listed
    return [j for j in listed if j.spec and inputs_of(j.spec) == want
            and (j.status != "done" or (j.result or {}).get("weights") == weights)]


def analysis_out(spec: Any) -> str:
    """Where an analysis launched from a page writes: ``<runs dir>/analyses/<kind>-<time>-<inputs hash>``."""
    from ui.common import runs_dir

    digest = hashlib.sha256(json.dumps(inputs_of(spec), sort_keys=True).encode()).hexdigest()[:8]
    return str(runs_dir() / "analyses" / f"{spec.kind}-{time.strftime('%Y%m%d-%H%M%S')}-{digest}")


def analysis_jobs(key: str, specs: Sequence[Any], go: bool, *, noun: str,
                  out_dir: Callable[[Any], str] = analysis_out) -> list[tuple[Any, dict] | None]:
    """Analyses ``specs`` (:mod:`trojanscope.tasks.analyses`) as jobs on a page: launched when ``go``; a live bar
    with the time left and a Cancel button for each running one (gone when it ends, with the page rerun and a
    notice); for each spec, ``(job, full result)`` of the newest finished run with the same inputs, or None.
    A failed newest run says why. ``out_dir(spec)``: where a launched run writes (under the runs directory)."""
    from trojanscope.tasks.analyses import read_result
    from ui.common import guard, ui_job_spec

    found: list[list] = [[] for _ in specs]
    with guard("Reading the job store"):
        listed = {kind: jobs.list_jobs(limit=200, kind=kind) for kind in {spec.kind for spec in specs}}
        found = [matching_jobs(spec, listed[spec.kind]) for spec in specs]
    if go:
        with guard(f"Launching the {noun}"):
            for spec, mine in zip(specs, found):
                if any(not j.finished for j in mine):
                    continue  # the same inputs are already queued or running: their bar is below
                job = jobs.get(jobs.submit(ui_job_spec(spec.replace(out=out_dir(spec)))))
                mine.insert(0, job)
    active = [j for mine in found for j in mine if not j.finished]
    ended = {j.id for j in follow(key, active, label=lambda j: f"`{j.id}` {noun}", cancel=True,
                                  done_note="its result is below")}
    results: list[tuple[Any, dict] | None] = []
    for mine in found:
        done = next((j for j in mine if j.status == "done"), None)
        failed = next((j for j in mine if j.status == "failed"), None)
        if failed is not None and failed.id not in ended and (done is None or failed.created > done.created):
            st.error(f"The latest {noun} (`{failed.id}`) failed: {failed.error}")
        result = None
        if done is not None:
            with guard(f"Reading the {noun}'s result"):
                result = (done, read_result(done.out_dir or (done.result or {}).get("out", "")))
        results.append(result)
    return results


def computed_note(job) -> str:
    """``computed by job X at HH:MM (N s)``: which run a shown result comes from."""
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(job.ended or job.created))
    took = f", {job.ended - job.started:.0f} s" if job.ended and job.started else ""
    return f"Computed by job `{job.id}` ({when}{took}); the same inputs show it again without recomputing."
