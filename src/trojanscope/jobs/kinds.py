"""What a job can run: each kind is a CLI command (``cmd_<kind>(args, on_event)`` in :mod:`trojanscope.cli`).

``train``, ``por`` and ``purify`` write one new model directory (``scan`` a directory with ``scan.json``) (``<runs dir>/<job id>`` unless ``--out``
says otherwise); ``demo`` builds the demo pair under ``<runs dir>/demo``, keeping a model that
already matches its recipe, and is exclusive: while one demo job is queued or running, submitting
another returns it (two tabs pressing Build make one build).
"""

from __future__ import annotations

import argparse
import contextlib
import io
from dataclasses import dataclass
from typing import Sequence

from trojanscope.errors import TrojanScopeError


@dataclass(frozen=True)
class JobKind:
    """How the job machinery treats one kind of job."""

    name: str
    default_out: str | None = None  # without --out: <runs dir>/<this> (None: <runs dir>/<job id>)
    exclusive: bool = False  # at most one queued or running job of this kind; a second submit returns it
    keeps_output: bool = False  # --out may exist (the command keeps or rebuilds what is there); never removed


JOB_KINDS: dict[str, JobKind] = {
    "train": JobKind("train"),
    "por": JobKind("por"),
    "demo": JobKind("demo", default_out="demo", exclusive=True, keeps_output=True),
    "purify": JobKind("purify"),  # reads --model, writes a new --out (never the source: run_purify refuses it)
    "scan": JobKind("scan"),  # reads --model, writes <out>/scan.json (the full result and its config)
}
KINDS = tuple(JOB_KINDS)


def job_kind(kind: str) -> JobKind:
    if kind not in JOB_KINDS:
        raise TrojanScopeError(f"unknown job kind {kind!r}; allowed: {', '.join(KINDS)}")
    return JOB_KINDS[kind]


def parse_job_args(argv: Sequence[str], kind: str = "train") -> argparse.Namespace:
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


parse_train_args = parse_job_args  # the name it had when every job was a training run
