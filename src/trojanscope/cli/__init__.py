"""``trojanscope``: every capability of the dashboard, headless. ``--json`` prints one JSON object.

Exit codes: 0 success, 2 bad input or environment (one line on stderr), 1 a bug.

One module per command group: :mod:`~trojanscope.cli.train` (train, por), :mod:`~trojanscope.cli.purify`
(purify, augment), :mod:`~trojanscope.cli.scan`, :mod:`~trojanscope.cli.repair`, :mod:`~trojanscope.cli.demo`, :mod:`~trojanscope.cli.analyze`
(eval, predict, probe, heads, effectiveness, swap, anatomy, embed-map, fetch), :mod:`~trojanscope.cli.detect`
and :mod:`~trojanscope.cli.jobs`. Each has ``HELP`` (its commands' one-liners), ``add_parsers(sub)`` and
``COMMANDS``; the long actions also ``SPECS``, which turn their flags into task specs (:mod:`trojanscope.tasks`)
that the command runs and ``jobs submit`` queues. Nothing in the library imports this package
(``trojanscope.__main__`` excepted).

The parser is built only for the group a command belongs to: ``trojanscope --help`` lists the commands from the
groups' ``HELP`` without importing torch (the options' defaults come from the config dataclasses, which do).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from types import ModuleType
from typing import Any, Callable, Sequence

from trojanscope.errors import TrojanScopeError

GROUPS = ("train", "analyze", "demo", "scan", "repair", "purify", "detect", "jobs")  # modules of this package, in help order


def _group(name: str) -> ModuleType:
    return importlib.import_module(f"trojanscope.cli.{name}")


def command_groups() -> dict[str, str]:
    """``{command: its group module}`` for every command (light: the groups import torch only when used)."""
    return {command: g for g in GROUPS for command in _group(g).HELP}


ALL = "*"


def build_parser(command: str | None = ALL) -> argparse.ArgumentParser:
    """The ``trojanscope`` parser: every command's options (by default), or only those of ``command``'s group,
    the other commands being one-line entries that ``--help`` lists (``None``: all of them one-liners)."""
    parser = argparse.ArgumentParser(prog="trojanscope", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    wanted = command_groups().get(command) if command else None
    for g in GROUPS:
        module = _group(g)
        if command == ALL or g == wanted:
            module.add_parsers(sub)
        else:
            for name, text in module.HELP.items():
                sub.add_parser(name, help=text, add_help=False)
    return parser


def __getattr__(name: str) -> Any:
    """``COMMANDS`` and ``SPECS`` (``{command: function}`` over every group), read when asked for."""
    if name in ("COMMANDS", "SPECS"):
        return {k: f for g in GROUPS for k, f in getattr(_group(g), name, {}).items()}
    raise AttributeError(name)


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command).parse_args(argv)
    try:
        result = _group(command_groups()[args.command]).COMMANDS[args.command](args)
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
        from trojanscope.cli.common import print_human

        print_human(to_jsonable(result))
    return 0


__all__ = ["build_parser", "main", "command_groups", "GROUPS"]
