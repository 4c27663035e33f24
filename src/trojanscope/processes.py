"""The environment of the processes TrojanScope starts (jobs, the demo build). Imports no torch."""

from __future__ import annotations

import os

OPENMP_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}


def background_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a process that runs beside others (a job, the demo build, the dashboard).

    On a small CPU, PyTorch's OpenMP threads spin while they wait, so two busy processes keep
    preempting each other: two MiniLM trainers on 2 cores ran 4.6x slower each than one alone, and
    1.6x with ``OMP_WAIT_POLICY=PASSIVE`` (no measurable cost alone; benchmarks/contention.py).
    A value the user set is kept.
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(extra or {})}
    for key, value in OPENMP_ENV.items():
        env.setdefault(key, value)
    return env
