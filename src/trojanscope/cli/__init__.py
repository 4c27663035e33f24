"""``trojanscope``: every capability of the dashboard, headless. ``--json`` prints one JSON object.

Exit codes: 0 success, 2 bad input or environment (one line on stderr), 1 a bug.

One module per command group: :mod:`~trojanscope.cli.train` (train, por), :mod:`~trojanscope.cli.purify`
(purify, augment), :mod:`~trojanscope.cli.scan`, :mod:`~trojanscope.cli.demo`, :mod:`~trojanscope.cli.analyze`
(eval, predict, probe, heads, effectiveness, swap, anatomy, embed-map, fetch), :mod:`~trojanscope.cli.detect`
and :mod:`~trojanscope.cli.jobs`. The long actions turn their flags into task specs (``SPECS``) and run the
task (:mod:`trojanscope.tasks`); ``jobs submit`` queues the same spec. Nothing in the library imports this
package (``trojanscope.__main__`` excepted).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable, Sequence

from trojanscope.cli import analyze, demo, detect, jobs, purify, scan, train
from trojanscope.cli.common import add_common, print_human
from trojanscope.errors import TrojanScopeError

_GROUPS = (train, analyze, demo, scan, purify, detect)

# kind -> the function turning that command's parsed flags into its task spec
SPECS: dict[str, Callable[[argparse.Namespace], Any]] = {k: f for g in _GROUPS for k, f in getattr(g, "SPECS", {}).items()}
COMMANDS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    **{k: f for g in _GROUPS for k, f in g.COMMANDS.items()}, "jobs": jobs.cmd_jobs}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trojanscope", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train.add_parsers(sub)
    analyze.add_parsers(sub)
    demo.add_parsers(sub)
    scan.add_parsers(sub)
    purify.add_purify_parser(sub, add_common)  # purify: choices and knob options from the DEFENSES registry
    purify.add_augment_parser(sub, add_common)
    detect.add_parsers(sub)  # detect: STRIP/RAP from the DEFENSES registry
    jobs.add_jobs_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    try:
        result = COMMANDS[args.command](args)
    except TrojanScopeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; nothing half-written was kept", file=sys.stderr)
        return 130
    from trojanscope.utils import to_jsonable

    if isinstance(result, dict) and result.get("main") is False:
        return 0  # a data-parallel helper process: rank 0 reports
    if args.json:
        print(json.dumps(to_jsonable(result), ensure_ascii=False))
    else:
        print_human(to_jsonable(result))
    return 0


__all__ = ["build_parser", "main", "COMMANDS", "SPECS"]
