"""``trojanscope detect``: STRIP / RAP from the ``DEFENSES`` registry."""

from __future__ import annotations

from typing import Any

from trojanscope.cli.common import add_common


HELP = {"detect": "detect poisoned inputs (STRIP, RAP): fit on clean dev data, report FRR, FAR and AUROC on clean "
                    "and triggered test inputs"}


def add_parsers(sub: Any) -> None:
    from trojanscope.defenses.detection import add_detect_parser

    add_detect_parser(sub, add_common)


def cmd_detect(args: Any) -> dict[str, Any]:
    from trojanscope.defenses.detection import cmd_detect as run

    return run(args)


COMMANDS = {"detect": cmd_detect}
