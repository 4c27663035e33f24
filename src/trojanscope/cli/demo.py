"""``trojanscope demo``: flags become a :class:`~trojanscope.tasks.DemoTaskSpec`."""

from __future__ import annotations

import argparse
from typing import Any

from trojanscope.cli.common import add_common as _add_common
from trojanscope.cli.common import run_task


HELP = {  # each command's one line in `trojanscope --help` (read without building the parser)
    "demo": "build the demo pair (clean and backdoored) under runs/demo",
}


def add_parsers(sub: Any) -> None:
    d = sub.add_parser("demo", help=HELP["demo"])
    d.add_argument("--quick", action="store_true", help="a small, fast pair for smoke tests")
    d.add_argument("--out", default=None, help="default: <runs dir>/demo (TROJANSCOPE_RUNS_DIR moves the runs dir)")
    d.add_argument("--force", action="store_true", help="rebuild even if the models exist")
    d.add_argument("--seed", type=int, default=0)
    _add_common(d)


def demo_task_of_args(args: argparse.Namespace):
    from trojanscope.tasks import DemoTaskSpec

    return DemoTaskSpec(out=args.out, quick=args.quick, device=args.device, seed=args.seed, force=args.force)


def cmd_demo(args: argparse.Namespace) -> dict[str, Any]:
    """``trojanscope demo``, in the foreground; as a background job: ``trojanscope jobs submit --kind demo``."""
    return run_task(demo_task_of_args(args), args)


SPECS = {"demo": demo_task_of_args}
COMMANDS = {"demo": cmd_demo}
