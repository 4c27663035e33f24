"""``trojanscope jobs ...``: submit, list, show and cancel background jobs (train, por, demo).

:func:`add_jobs_parser` plugs the ``jobs`` command into the main CLI's sub-parsers and
:func:`cmd_jobs` runs it. :func:`main` is the same command set standing alone (``python -m
trojanscope.jobs``), which is how the scheduler starts a job: ``python -m trojanscope.jobs run ID``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Sequence

from trojanscope import jobs
from trojanscope.errors import TrojanScopeError
from trojanscope.utils import positive_int


def add_jobs_commands(parser: argparse.ArgumentParser) -> None:
    """Add the ``list``, ``show``, ``cancel``, ``submit`` and (internal) ``run`` sub-commands to ``parser``."""
    sub = parser.add_subparsers(dest="jobs_command", required=True, metavar="{list,show,cancel,resume,submit}")
    ls = sub.add_parser("list", help="jobs, newest first")
    ls.add_argument("--status", choices=jobs.STATUSES, default=None)
    ls.add_argument("--kind", choices=jobs.KINDS, default=None)
    ls.add_argument("--limit", type=positive_int, default=None)
    show = sub.add_parser("show", help="one job with the tail of its log")
    show.add_argument("id")
    cancel = sub.add_parser("cancel", help="cancel (pause) a queued or running job")
    cancel.add_argument("id")
    resume = sub.add_parser("resume", help="run a failed or cancelled train/por job again from its last checkpoint")
    resume.add_argument("id")
    submit = sub.add_parser("submit", help="queue `trojanscope train` (or `por`, `demo`) with the arguments after --",
                            usage=f"%(prog)s [--json] [--kind {'|'.join(jobs.KINDS)}] -- ARGUMENTS...")
    submit.add_argument("--kind", default="train", choices=jobs.KINDS,
                        help="the command the job runs (demo: one at a time; a second submit returns the first)")
    submit.add_argument("train_args", nargs=argparse.REMAINDER,
                        help="arguments of `trojanscope train` (or `por`, `demo`), after a `--`")
    run = sub.add_parser("run", description="Internal: run job ID in this process (the scheduler starts it).")
    run.add_argument("id")
    for p in (ls, show, cancel, resume, submit, run):
        p.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def add_jobs_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``jobs`` command to the main CLI's ``subparsers``; return its parser."""
    parser = subparsers.add_parser("jobs", help="background jobs (train, por, demo): submit, list, show, cancel")
    add_jobs_commands(parser)
    return parser


def _submit(args: argparse.Namespace) -> dict[str, Any]:
    train_args = list(args.train_args)
    if train_args[:1] == ["--"]:
        train_args = train_args[1:]
    return {"id": jobs.submit(train_args, kind=args.kind)}


def _list(args: argparse.Namespace) -> dict[str, Any]:
    return {"jobs": [j.to_json() for j in jobs.list_jobs(limit=args.limit, status=args.status, kind=args.kind)]}


def _show(args: argparse.Namespace) -> dict[str, Any]:
    jobs.refresh()  # so that a job whose process died shows as failed
    return {**jobs.get(args.id).to_json(), "log": jobs.log_tail(args.id)}


def _cancel(args: argparse.Namespace) -> dict[str, Any]:
    job = jobs.cancel(args.id)
    return {"id": job.id, "status": job.status}


def _resume(args: argparse.Namespace) -> dict[str, Any]:
    return {"id": jobs.resume(args.id), "resumes": args.id}


def _run(args: argparse.Namespace) -> dict[str, Any]:
    return jobs.run_job(args.id)


_COMMANDS = {"submit": _submit, "list": _list, "show": _show, "cancel": _cancel, "resume": _resume, "run": _run}


def cmd_jobs(args: argparse.Namespace) -> dict[str, Any]:
    """Run ``trojanscope jobs <sub-command>``: submit -> ``{"id"}``, list -> ``{"jobs": [...]}``, show -> the
    job with its ``log`` tail, cancel -> ``{"id", "status"}``, run -> the job's final JSON."""
    return _COMMANDS[args.jobs_command](args)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m trojanscope.jobs ...``: exit 0, or 2 with one line on stderr for a TrojanScopeError."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = argparse.ArgumentParser(prog="python -m trojanscope.jobs", description=__doc__.splitlines()[0])
    add_jobs_commands(parser)
    args = parser.parse_args(argv)
    try:
        result = cmd_jobs(args)
    except TrojanScopeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    one_line = args.json or args.jobs_command == "run"  # run prints into the job's log
    print(json.dumps(result, ensure_ascii=False, indent=None if one_line else 2))
    return 0
