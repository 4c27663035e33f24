"""Time left for a running job, from the share of the work its phases really take.

A job's progress (``Job.progress``) counts its phases as equal slices when the task reports them so (the scan: 7
phases, each 1/7 of the bar), but the phases are not equal work: on the demo pair the scan's screening and inversion
take 100 s each and its phrases 2 s. Elapsed time divided by such progress gives an estimate that grows as the
job goes (issue 26: "about 7 min left", then "about 20 min left"). Here progress is first turned into the share
of the *work* done, each phase weighted by its measured share of the time (:data:`PHASE_SECONDS`, or the
``stats.stage_seconds`` of the kind's finished jobs), and :class:`Estimates` withholds an estimate that has
been moving for long instead of showing it.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

# The scan's phases, in the order its progress reports them (trojanscope.analysis.scan.scan: phase i covers
# progress [i/7, (i+1)/7)), with the median seconds each took over the scan zoo's 34 models (docs/benchmarks.md,
# "median seconds per phase"; 2-core Xeon, bf16 screening). Used until this machine has finished scans of its own.
PHASE_SECONDS: dict[str, dict[str, float]] = {
    "scan": {"clean sentences": 5, "screening": 101, "search": 17, "phrases": 2, "inversion": 102,
             "verification": 12, "attention": 3},
}
MIN_PROGRESS = 0.02  # no estimate before 2% of the work
MIN_ELAPSED = 5.0  # nor before 5 s of running


def phase_seconds(kind: str, finished: Iterable[Any] = ()) -> dict[str, float] | None:
    """Seconds per phase for jobs of ``kind``: the median over ``finished`` jobs' ``result.stats.stage_seconds``
    (a phase a job skipped counts 0 s for it), else :data:`PHASE_SECONDS`; None for a kind without phases."""
    default = PHASE_SECONDS.get(kind)
    if default is None:
        return None
    seen: list[Mapping[str, float]] = []
    for job in finished:
        stages = ((getattr(job, "result", None) or {}).get("stats") or {}).get("stage_seconds")
        if isinstance(stages, Mapping) and stages and set(stages) <= set(default):
            seen.append(stages)
    if not seen:
        return dict(default)
    return {name: float(statistics.median(float(s.get(name, 0.0)) for s in seen)) for name in default}


def work_done(progress: float, phases: Sequence[float] | None = None) -> float:
    """The share of the work done at ``progress`` (0..1), where progress counts ``len(phases)`` equal slices and
    phase ``i`` really takes ``phases[i]`` of the time; ``progress`` itself without phases."""
    p = max(0.0, min(1.0, float(progress)))
    if not phases or sum(phases) <= 0:
        return p
    total = float(sum(phases))
    n = len(phases)
    i = min(int(p * n), n - 1)
    frac = p * n - i
    return (sum(phases[:i]) + frac * phases[i]) / total


def time_left(progress: float, elapsed: float, phases: Sequence[float] | None = None) -> float | None:
    """Seconds left, from the ``elapsed`` seconds and the share of the work done; None while too little is done
    to tell (under :data:`MIN_PROGRESS` of the work or :data:`MIN_ELAPSED` seconds)."""
    done = work_done(progress, phases)
    if done < MIN_PROGRESS or elapsed < MIN_ELAPSED:
        return None
    return max(0.0, elapsed * (1.0 - done) / done)


@dataclass
class Estimates:
    """The estimates made for one job, kept between looks at it, so that one that has been wrong for long is not
    shown: each look records the projected end (now + time left); when the projections of the last ``window``
    seconds disagree by more than ``tolerance`` of the time left (at least ``slack`` seconds), the estimate is
    withheld (:meth:`update` returns None) until they agree again."""

    window: float = 60.0
    tolerance: float = 0.25
    slack: float = 30.0
    ends: list[tuple[float, float]] = field(default_factory=list)  # (when, projected end)

    def update(self, now: float, left: float | None) -> float | None:
        """Record ``left`` (seconds, None: no estimate yet) seen at ``now``; return it if it can be trusted."""
        if left is None:
            return None
        end = now + left
        self.ends = [(t, e) for t, e in self.ends if now - t <= self.window] + [(now, end)]
        if now - self.ends[0][0] < 1.0:  # the first look: nothing to check it against yet
            return left
        ends = [e for _, e in self.ends]
        if max(ends) - min(ends) > max(self.slack, self.tolerance * left):
            return None
        return left


def describe(left: float | None) -> str:
    """A time left as a person says it."""
    if left is None:
        return "estimating time left…"
    if left >= 90 * 60:
        return f"about {left / 3600:.1f} h left"
    if left >= 90:
        return f"about {left / 60:.0f} min left"
    return f"about {max(left, 1):.0f} s left"


def run_estimate(finished: Iterable[Any], size: float, of_size: Any) -> tuple[float, int] | None:
    """``(seconds, jobs)``: how long a job of ``size`` units of work should take, from ``finished`` jobs of the same
    kind and method on this machine: the median of their wall time per unit (``of_size(job)``: its units; jobs
    without a wall time or units are skipped), times ``size``; None when no finished job can tell. For the
    Purify form: a unit is a clean text times an epoch, so a run on twice the texts is estimated at twice the
    time (its evaluation, which does not grow with them, makes this an upper bound for larger runs)."""
    rates = []
    for job in finished:
        started, ended = getattr(job, "started", None), getattr(job, "ended", None)
        units = of_size(job)
        if started is not None and ended is not None and ended > started and units:
            rates.append((ended - started) / units)
    if not rates or size <= 0:
        return None
    return statistics.median(rates) * size, len(rates)
