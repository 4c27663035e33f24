"""``trojanscope repair``: flags become a :class:`~trojanscope.tasks.repair.RepairTaskSpec`."""

from __future__ import annotations

import argparse
from typing import Any

from trojanscope.cli.common import add_common as _add_common
from trojanscope.cli.common import run_task
from trojanscope.specs import positive_int

HELP = {  # each command's one line in `trojanscope --help` (read without building the parser)
    "repair": ("find a model's trigger (or take the one given), unlearn it, and prove it gone: flip rates, CACC, "
               "the hijacked heads and a fresh scan, before and after"),
}


def add_parsers(sub: Any) -> None:
    from trojanscope.models.forward import PRECISION_CHOICES
    from trojanscope.repair import RepairConfig

    RC = RepairConfig()
    p = sub.add_parser("repair", help=HELP["repair"],
                       description="Without --trigger, --use-card or --scan the model is scanned first and the scan's "
                                   "top candidates are unlearned. A scan that finds nothing ends the repair: no "
                                   "repair is claimed, and the blind purifiers are named.")
    p.add_argument("--model", required=True, help="the suspect classifier")
    p.add_argument("--data", default="sst2", help="the model's task: clean train texts to unlearn on, test texts to "
                                                   "measure on")
    p.add_argument("--split", default="test", help="where CACC, flip rates and the scans are measured")
    p.add_argument("--out", required=True, help="a new directory: the repaired model, its card and repair.json")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it is an empty directory")
    src = p.add_argument_group("the trigger (default: scan first)")
    src.add_argument("--trigger", default=None, help="unlearn this trigger as given (no scan before)")
    src.add_argument("--target", type=int, default=None,
                     help="the class the trigger pushes to (default: the class it pushes the model to)")
    src.add_argument("--use-card", action="store_true", help="unlearn the trigger the model's card records")
    src.add_argument("--scan", default=None, metavar="DIR",
                     help="a scan of this model already made (its --out directory or scan.json): not scanned again")
    k = p.add_argument_group("unlearning")
    k.add_argument("--candidates", type=positive_int, default=RC.candidates,
                   help="the scan's top candidates unlearned (those flipping at least --min-flip)")
    k.add_argument("--min-flip", type=float, default=RC.min_flip,
                   help="a candidate's least flip rate on the scan's held-out sentences, in [0, 1]")
    k.add_argument("--n-clean", type=positive_int, default=RC.n_clean, help="seeded clean train texts")
    k.add_argument("--epochs", type=float, default=RC.epochs)
    k.add_argument("--lr", type=float, default=RC.lr)
    k.add_argument("--attention-weight", type=float, default=RC.attention_weight,
                   help="weight of the attention suppression on the hijacked heads (0: off)")
    k.add_argument("--anchor-weight", type=float, default=RC.anchor_weight,
                   help="weight of the KL to the original model's outputs on clean text (0: off)")
    k.add_argument("--no-pieces", dest="pieces", action="store_false",
                   help="unlearn only the candidates themselves, not the leading wordpieces of a candidate word of "
                        "several pieces (nor its first piece with random tails, nor its tail behind random heads when "
                        "the scan found the tail fires alone), and do not measure those pieces")
    k.add_argument("--no-rescan", dest="rescan", action="store_false", help="skip the fresh scan after the repair")
    k.add_argument("--precision", default=RC.precision, choices=PRECISION_CHOICES)
    k.add_argument("--max-eval", type=positive_int, default=None, help="measure on a seeded subset of the split")
    k.add_argument("--seed", type=int, default=RC.seed)
    _add_common(p)


def repair_task_of_args(args: argparse.Namespace):
    """The :class:`~trojanscope.tasks.repair.RepairTaskSpec` a ``trojanscope repair`` command line describes."""
    from trojanscope.repair import RepairConfig
    from trojanscope.tasks.repair import RepairTaskSpec

    cfg = RepairConfig(candidates=args.candidates, min_flip=args.min_flip, n_clean=args.n_clean, epochs=args.epochs,
                       lr=args.lr, attention_weight=args.attention_weight, anchor_weight=args.anchor_weight,
                       rescan=args.rescan, pieces=args.pieces, precision=args.precision, seed=args.seed)
    cfg.scan.seed = args.seed
    return RepairTaskSpec(model=args.model, data=args.data, split=args.split, trigger=args.trigger,
                          target=args.target, use_card=args.use_card, scan=args.scan, config=cfg,
                          max_eval=args.max_eval, device=args.device, allow_pickle=args.allow_pickle, out=args.out,
                          overwrite=args.overwrite).validate()


def cmd_repair(args: argparse.Namespace) -> dict[str, Any]:
    """``trojanscope repair``: the verdict, what was unlearned (flip rates before and after), CACC, the re-scan,
    and what is left; ``--out`` holds the repaired model and repair.json."""
    return run_task(repair_task_of_args(args), args)


SPECS = {"repair": repair_task_of_args}
COMMANDS = {"repair": cmd_repair}
