"""``trojanscope jobs ...``: submit, list, show, cancel and resume background jobs (every task kind).

:func:`add_jobs_parser` plugs the ``jobs`` command into the main CLI's sub-parsers and :func:`cmd_jobs` runs
it. ``jobs submit --kind K -- ARGS`` parses ARGS as ``trojanscope K ARGS`` would and queues the task spec they
describe (:func:`spec_of_argv`); the job stores the spec, not the arguments. The scheduler starts a job with
``python -m trojanscope.jobs run ID`` (:mod:`trojanscope.jobs.__main__`, which needs no CLI).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Sequence

from trojanscope.errors import TrojanScopeError
from trojanscope.specs import positive_int


def _jobs():
    """The jobs package, imported when a jobs command runs (not for ``trojanscope --help``)."""
    from trojanscope import jobs

    return jobs


def add_jobs_commands(parser: argparse.ArgumentParser) -> None:
    """Add the ``list``, ``show``, ``cancel``, ``submit`` and (internal) ``run`` sub-commands to ``parser``."""
    sub = parser.add_subparsers(dest="jobs_command", required=True, metavar="{list,show,cancel,resume,submit}")
    ls = sub.add_parser("list", help="jobs, newest first")
    ls.add_argument("--status", choices=_jobs().STATUSES, default=None)
    ls.add_argument("--kind", choices=_jobs().KINDS, default=None)
    ls.add_argument("--limit", type=positive_int, default=None)
    show = sub.add_parser("show", help="one job with the tail of its log")
    show.add_argument("id")
    cancel = sub.add_parser("cancel", help="cancel (pause) a queued or running job")
    cancel.add_argument("id")
    resume = sub.add_parser("resume", help="run a failed or cancelled train/por job again from its last checkpoint")
    resume.add_argument("id")
    submit = sub.add_parser("submit", help="queue `trojanscope train` (or por, purify, scan, demo) with the arguments after --",
                            usage=f"%(prog)s [--json] [--kind {'|'.join(_jobs().KINDS)}] -- ARGUMENTS...")
    submit.add_argument("--kind", default="train", choices=_jobs().KINDS,
                        help="the command the job runs (demo: one at a time; a second submit returns the first)")
    submit.add_argument("--spec", default=None, metavar="JSON|@FILE",
                        help="the task spec itself (what the dashboard shows as a form's CLI twin): a JSON object "
                             "with its \"kind\", or @file.json; instead of arguments after --")
    submit.add_argument("train_args", nargs=argparse.REMAINDER,
                        help="arguments of `trojanscope train` (or of the --kind command), after a `--`")
    run = sub.add_parser("run", description="Internal: run job ID in this process (the scheduler starts it).")
    run.add_argument("id")
    for p in (ls, show, cancel, resume, submit, run):
        p.add_argument("--json", action="store_true", help="print one JSON object on stdout")


HELP = {"jobs": "background jobs (train, por, purify, scan, demo): submit, list, show, cancel, resume"}


def add_jobs_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``jobs`` command to the main CLI's ``subparsers``; return its parser."""
    parser = subparsers.add_parser("jobs", help=HELP["jobs"])
    add_jobs_commands(parser)
    return parser


def spec_of_argv(argv: Sequence[str], kind: str = "train"):
    """The task spec ``trojanscope <kind> <argv>`` describes; argparse's complaint becomes a TrojanScopeError."""
    import contextlib
    import io

    from trojanscope.cli import SPECS, build_parser

    argv = [str(a) for a in argv]
    if kind not in SPECS:
        raise TrojanScopeError(f"unknown job kind {kind!r}; allowed: {', '.join(SPECS)}")
    if "-h" in argv or "--help" in argv:
        raise TrojanScopeError(f"a job's arguments cannot ask for --help; see `trojanscope {kind} --help`")
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = build_parser().parse_args([kind, *argv])
    except SystemExit:
        lines = err.getvalue().strip().splitlines()
        message = lines[-1].split(" error: ", 1)[-1] if lines else "invalid arguments"
        raise TrojanScopeError(f"invalid {kind} arguments: {message}; see `trojanscope {kind} --help` for what is "
                               "allowed") from None
    return SPECS[kind](args)


def submit_argv(argv: Sequence[str], kind: str = "train") -> str:
    """Queue ``trojanscope <kind> <argv>`` as a job (its task spec, with the command line kept for the record)."""
    argv = [str(a) for a in argv]
    return _jobs().submit(spec_of_argv(argv, kind), argv=argv)


def spec_of_json(text: str):
    """The task spec in ``text`` (a JSON object with ``kind``, or ``@path`` to a file holding one)."""
    from pathlib import Path

    from trojanscope.tasks import get_task

    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text(encoding="utf-8")
        except OSError as e:
            raise TrojanScopeError(f"cannot read the spec file {text[1:]}: {e.strerror or e}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise TrojanScopeError(f"--spec is not valid JSON ({e.msg} at character {e.pos})") from None
    if not isinstance(data, dict) or "kind" not in data:
        raise TrojanScopeError('--spec must be a JSON object with its "kind" (train, por, purify, scan, demo)')
    data = dict(data)
    return get_task(str(data.pop("kind"))).spec(data)


def _submit(args: argparse.Namespace) -> dict[str, Any]:
    train_args = list(args.train_args)
    if train_args[:1] == ["--"]:
        train_args = train_args[1:]
    if args.spec is not None:
        if train_args:
            raise TrojanScopeError("give either --spec or arguments after --, not both")
        return {"id": _jobs().submit(spec_of_json(args.spec))}
    return {"id": submit_argv(train_args, kind=args.kind)}


def _list(args: argparse.Namespace) -> dict[str, Any]:
    return {"jobs": [j.to_json() for j in _jobs().list_jobs(limit=args.limit, status=args.status, kind=args.kind)]}


def _show(args: argparse.Namespace) -> dict[str, Any]:
    _jobs().refresh()  # so that a job whose process died shows as failed
    return {**_jobs().get(args.id).to_json(), "log": _jobs().log_tail(args.id)}


def _cancel(args: argparse.Namespace) -> dict[str, Any]:
    job = _jobs().cancel(args.id)
    return {"id": job.id, "status": job.status}


def _resume(args: argparse.Namespace) -> dict[str, Any]:
    return {"id": _jobs().resume(args.id), "resumes": args.id}


def _run(args: argparse.Namespace) -> dict[str, Any]:
    return _jobs().run_job(args.id)


_COMMANDS = {"submit": _submit, "list": _list, "show": _show, "cancel": _cancel, "resume": _resume, "run": _run}


def cmd_jobs(args: argparse.Namespace) -> dict[str, Any]:
    """Run ``trojanscope jobs <sub-command>``: submit -> ``{"id"}``, list -> ``{"jobs": [...]}``, show -> the
    job with its ``log`` tail, cancel -> ``{"id", "status"}``, run -> the job's final JSON."""
    return _COMMANDS[args.jobs_command](args)


def add_parsers(sub: Any) -> None:
    add_jobs_parser(sub)


COMMANDS = {"jobs": cmd_jobs}
