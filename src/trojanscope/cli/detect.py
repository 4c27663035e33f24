"""``trojanscope detect``: STRIP / RAP from the ``DEFENSES`` registry, as the ``detect`` task."""

from __future__ import annotations

from typing import Any

from trojanscope.cli.common import add_common


HELP = {"detect": "detect poisoned inputs (STRIP, RAP): fit on clean dev data, report FRR, FAR and AUROC on clean "
                    "and triggered test inputs"}


def add_parsers(sub: Any) -> None:
    from trojanscope.defenses.detection import add_detect_parser

    add_detect_parser(sub, add_common)


def detect_spec(args: Any):
    """The :class:`~trojanscope.tasks.analyses.DetectTaskSpec` a ``trojanscope detect`` line says."""
    from trojanscope.tasks.analyses import DetectTaskSpec

    knobs = {k: v for k, v in dict(frr=args.frr, n_copies=args.copies, replace_ratio=args.replace_ratio,
                                   word=args.rap_word).items() if v is not None}
    return DetectTaskSpec(model=args.model, method=args.method, data=args.data, dev_split=args.dev_split,
                          split=args.split, trigger=args.trigger, target=args.target, n=args.n, max_dev=args.max_dev,
                          knobs=knobs, seed=args.seed, device=args.device, allow_pickle=args.allow_pickle).validate()


def cmd_detect(args: Any) -> dict[str, Any]:
    from trojanscope.cli.common import run_task

    return run_task(detect_spec(args), args)


SPECS = {"detect": detect_spec}
COMMANDS = {"detect": cmd_detect}
