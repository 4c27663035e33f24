"""The environment of the processes TrojanScope starts (jobs, the demo build). Imports no torch."""

from __future__ import annotations

import os
from typing import MutableMapping

OPENMP_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}


def background_env(extra: dict[str, str] | None = None) -> MutableMapping[str, str]:
    """The environment for a process that runs beside others (a job, the demo build, the dashboard).

    On a small CPU, PyTorch's OpenMP threads spin while they wait, so two busy processes keep
    preempting each other: two MiniLM trainers on 2 cores ran 4.6x slower each than one alone, and
    1.6x with ``OMP_WAIT_POLICY=PASSIVE`` (no measurable cost alone; benchmarks/contention.py).
    A value the user set is kept.
    """
    return with_openmp_defaults({**os.environ, "PYTHONUNBUFFERED": "1", **(extra or {})})


def with_openmp_defaults(env: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """Add :data:`OPENMP_ENV` to ``env`` where it is not set (in place; also ``os.environ``, before
    torch is imported, as app.py does); return ``env``."""
    for key, value in OPENMP_ENV.items():
        env.setdefault(key, value)
    return env
