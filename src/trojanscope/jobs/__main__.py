"""``python -m trojanscope.jobs run ID``: how the scheduler starts a job (in its own process). It needs no CLI:
the job's stored task spec says everything. The other ``jobs`` commands are ``trojanscope jobs ...``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run job ID in this process; its final JSON goes to stdout (the job's log). Exit 0, or 2 with one line on
    stderr for a TrojanScopeError."""
    from trojanscope.errors import TrojanScopeError
    from trojanscope.jobs.runner import run_job

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = argparse.ArgumentParser(prog="python -m trojanscope.jobs",
                                     description="Internal: run job ID in this process (the scheduler starts it).")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run").add_argument("id")
    args = parser.parse_args(argv)
    try:
        result = run_job(args.id)
    except TrojanScopeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
