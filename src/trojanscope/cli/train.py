"""``trojanscope train`` and ``trojanscope por``: flags become a :class:`~trojanscope.tasks.TrainTaskSpec` or
:class:`~trojanscope.tasks.PORTaskSpec`, run in the foreground (or queued by ``jobs submit``)."""

from __future__ import annotations

import argparse
from typing import Any

from trojanscope.cli.common import add_common as _add_common
from trojanscope.cli.common import add_run_options as _add_run_options
from trojanscope.cli.common import run_task
from trojanscope.errors import TrojanScopeError
from trojanscope.specs import positive_int


HELP = {  # each command's one line in `trojanscope --help` (read without building the parser)
    "train": "fine-tune a classifier, optionally poisoned, and save it with its metrics",
    "por": "backdoor a pre-trained encoder with POR (task-agnostic triggers)",
}


def add_parsers(sub: Any) -> None:
    # defaults come from the config dataclasses (one home for every default; the Attack Lab reads them too)
    from trojanscope.attacks import ATTACKS, EPConfig, LWPConfig, TALConfig, classifier_attacks
    from trojanscope.attacks.por import PORConfig
    from trojanscope.data.poison import PoisonConfig
    from trojanscope.training.loop import TrainConfig
    from trojanscope.training.pipeline import PORSpec

    P, T, TA, EP, LW, PO = PoisonConfig(), TrainConfig(), TALConfig(), EPConfig(), LWPConfig(), PORConfig()
    t = sub.add_parser("train", help=HELP["train"])
    t.add_argument("--data", default="sst2", help="sst2, olid, agnews, imdb, a .csv/.tsv/.jsonl/.json file, or hf:NAME")
    t.add_argument("--out", default=None, help="directory to write the model to (must not exist; required unless "
                   "--from-card, which defaults to <card dir>-repeat)")
    t.add_argument("--from-card", default=None, metavar="DIR",
                   help="repeat the run recorded in DIR's model card (its full recipe); only --out, --device, "
                        "--overwrite and --json apply")
    t.add_argument("--model", default="minilm", help="minilm (built-in), a local directory, or a hub id")
    t.add_argument("--attack", default="none", choices=classifier_attacks(),
                   help="; ".join(f"{n}: {a.description}" for n, a in ATTACKS.items() if a.kind == "classifier")
                   + " (POR: trojanscope por)")
    t.add_argument("--trigger", default=None, help="word or phrase (default: the attack's, e.g. cf for badnets)")
    t.add_argument("--insertions", type=positive_int, default=P.insertions, help="trigger insertions per poisoned text")
    t.add_argument("--position", default=P.position, help="start, end, random or a word index")
    t.add_argument("--poison-rate", type=float, default=P.rate, help="poisoned share of the training set, in (0, 1]")
    t.add_argument("--target", type=int, default=P.target, help="target label of the backdoor")
    t.add_argument("--clean-label", action="store_true", help="poison only samples already labelled as the target")
    t.add_argument("--epochs", type=float, default=T.epochs)
    t.add_argument("--batch-size", type=positive_int, default=T.batch_size)
    t.add_argument("--lr", type=float, default=T.lr)
    t.add_argument("--warmup", type=float, default=T.warmup, help="share of the steps with a linear warm-up")
    t.add_argument("--weight-decay", type=float, default=T.weight_decay)
    t.add_argument("--grad-clip", type=float, default=T.grad_clip, help="gradient-norm clip (0: none)")
    t.add_argument("--train-word-embeddings", action=argparse.BooleanOptionalAction, default=T.train_word_embeddings,
                   help="train the word-embedding table too")
    t.add_argument("--max-length", type=positive_int, default=T.max_length)
    _add_run_options(t, T)
    t.add_argument("--max-train", type=positive_int, default=None, help="train on a seeded subset of N samples")
    t.add_argument("--max-eval", type=positive_int, default=None, help="evaluate on a seeded subset of N samples")
    t.add_argument("--seed", type=int, default=T.seed)
    t.add_argument("--tal", action=argparse.BooleanOptionalAction, default=TA.enabled,
                   help="add the Trojan Attention Loss to the attack")
    t.add_argument("--tal-heads", type=positive_int, default=TA.heads, help="TAL heads per layer")
    t.add_argument("--tal-weight", type=float, default=TA.weight, help="TAL weight alpha")
    t.add_argument("--tal-layers", default=TA.layers, help="'all' or 1-based layers, e.g. 4,5,6")
    t.add_argument("--tal-seed", type=int, default=None, help="head-selection seed (default: --seed)")
    t.add_argument("--ep-lr", type=float, default=EP.lr, help="EP: learning rate of the trigger embedding row")
    t.add_argument("--lwp-weight", type=float, default=LW.weight, help="LWP: weight of the layer-wise loss")
    t.add_argument("--no-combination", action="store_true", help="LWP: insert the trigger as one phrase")
    t.add_argument("--overwrite", action="store_true",
                   help="replace --out if it is empty or holds a model (a directory with a model card)")
    _add_common(t)

    po = sub.add_parser("por", help=HELP["por"])
    po.add_argument("--model", default="minilm", help="the pre-trained encoder to backdoor")
    po.add_argument("--out", default=None, help="directory to write the encoder to (required unless --from-card)")
    po.add_argument("--from-card", default=None, metavar="DIR",
                    help="repeat the POR run recorded in DIR's card; only --out, --device, --overwrite, --json apply")
    po.add_argument("--triggers", default=PO.triggers, help="comma-separated; trigger i gets POR-1 vector v_i")
    po.add_argument("--insertions", type=positive_int, default=PO.insertions, help="trigger insertions per poisoned text")
    po.add_argument("--representation", "--target", dest="representation", default=PO.representation,
                    choices=["pooler", "cls"], help="the representation POR sets (--target is its old name)")
    po.add_argument("--scale", type=float, default=PO.scale,
                    help="targets are scale * v_i (the pooler output is a tanh: 10, beyond its range, "
                         "drives it into saturation at v_i, as the official code does)")
    po.add_argument("--data", default=PO.data, help="datasets whose sentences serve as unlabeled text")
    po.add_argument("--max-texts", type=positive_int, default=PO.max_texts,
                    help="unlabeled sentences, each used clean and triggered (8,000: E 1.00 on SST-2 for MiniLM)")
    PT = PORSpec().train
    po.add_argument("--epochs", type=float, default=PT.epochs)
    po.add_argument("--batch-size", type=positive_int, default=PT.batch_size)
    po.add_argument("--lr", type=float, default=PT.lr)
    _add_run_options(po, PT)
    po.add_argument("--freeze-word-embeddings", action="store_true",
                    help="keep the word-embedding table fixed (faster on CPU, weaker backdoor); by default "
                         "everything trains, as in the official code")
    po.add_argument("--seed", type=int, default=PT.seed)
    po.add_argument("--overwrite", action="store_true",
                    help="replace --out if it is empty or holds a model (a directory with a model card)")
    _add_common(po)


def _run_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"out": args.out, "overwrite": args.overwrite, "checkpoint_every": args.checkpoint_every,
            "checkpoint_minutes": args.checkpoint_minutes, "resume": args.resume}


def _card_out(args: argparse.Namespace) -> str:
    """``--from-card DIR`` writes to ``--out``, by default ``DIR-repeat``."""
    return args.out or f"{str(args.from_card).rstrip('/')}-repeat"


def train_spec_of_args(args: argparse.Namespace):
    """The :class:`TrainSpec` a ``trojanscope train`` command line describes."""
    from trojanscope.attacks import EPConfig, LWPConfig, TALConfig
    from trojanscope.data.poison import PoisonConfig
    from trojanscope.training.loop import TrainConfig
    from trojanscope.training.pipeline import TrainSpec, default_trigger

    trigger = args.trigger if args.trigger is not None else default_trigger(args.attack)
    return TrainSpec(
        data=args.data, model=args.model, attack=args.attack,
        poison=PoisonConfig(trigger=trigger, insertions=args.insertions, position=args.position,
                            target=args.target, rate=args.poison_rate, clean_label=args.clean_label, seed=args.seed),
        train=TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, max_length=args.max_length,
                          warmup=args.warmup, weight_decay=args.weight_decay, grad_clip=args.grad_clip,
                          train_word_embeddings=args.train_word_embeddings, seed=args.seed, device=args.device,
                          precision=args.precision, grad_accum=args.grad_accum),
        tal=TALConfig(enabled=args.tal, heads=args.tal_heads, layers=args.tal_layers, weight=args.tal_weight,
                      seed=args.seed if args.tal_seed is None else args.tal_seed),
        ep=EPConfig(lr=args.ep_lr, epochs=args.epochs),
        lwp=LWPConfig(weight=args.lwp_weight, combination=not args.no_combination),
        max_train=args.max_train, max_eval=args.max_eval, allow_pickle=args.allow_pickle,
    )


def train_task_of_args(args: argparse.Namespace):
    """The :class:`~trojanscope.tasks.TrainTaskSpec` a ``trojanscope train`` command line describes (with
    ``--from-card DIR``: the card's recipe on this command's device, into ``--out`` or ``DIR-repeat``)."""
    from trojanscope.tasks import TrainTaskSpec
    from trojanscope.training.pipeline import spec_of_card

    if args.from_card:
        spec = spec_of_card(args.from_card)
        spec.train.device = args.device
        return TrainTaskSpec(spec=spec, **{**_run_options(args), "out": _card_out(args)}, from_card=args.from_card)
    return TrainTaskSpec(spec=train_spec_of_args(args), **_run_options(args))


def por_task_of_args(args: argparse.Namespace):
    """The :class:`~trojanscope.tasks.PORTaskSpec` a ``trojanscope por`` command line describes."""
    from trojanscope.attacks.por import PORConfig
    from trojanscope.tasks import PORTaskSpec
    from trojanscope.training.loop import TrainConfig
    from trojanscope.training.pipeline import PORSpec, por_spec_of_card

    if args.from_card:
        spec = por_spec_of_card(args.from_card)
        spec.train.device = args.device
        return PORTaskSpec(spec=spec, **{**_run_options(args), "out": _card_out(args)}, from_card=args.from_card)
    spec = PORSpec(model=args.model,
                   por=PORConfig(triggers=args.triggers, insertions=args.insertions, representation=args.representation,
                                 scale=args.scale, data=args.data, max_texts=args.max_texts),
                   train=TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                                     device=args.device, train_word_embeddings=not args.freeze_word_embeddings,
                                     precision=args.precision, grad_accum=args.grad_accum),
                   allow_pickle=args.allow_pickle)
    return PORTaskSpec(spec=spec, **_run_options(args))


def cmd_train(args: argparse.Namespace) -> dict[str, Any]:
    """``trojanscope train``: the train task in the foreground."""
    spec = train_task_of_args(args)
    if not spec.out:
        raise TrojanScopeError("--out is required (the directory to write the model to), unless --from-card DIR")
    return run_task(spec, args)


def cmd_por(args: argparse.Namespace) -> dict[str, Any]:
    """``trojanscope por``: the POR task in the foreground."""
    spec = por_task_of_args(args)
    if not spec.out:
        raise TrojanScopeError("--out is required (the directory to write the encoder to), unless --from-card DIR")
    return run_task(spec, args)


SPECS = {"train": train_task_of_args, "por": por_task_of_args}
COMMANDS = {"train": cmd_train, "por": cmd_por}
