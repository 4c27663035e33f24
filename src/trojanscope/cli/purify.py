"""``trojanscope purify`` and ``trojanscope augment``: their parsers and commands. ``purify``'s flags become a
:class:`~trojanscope.tasks.PurifyTaskSpec`.

``purify``'s method choices are the purifiers of the ``DEFENSES`` registry, and its knob options
(``--epochs``, ``--lr``, ``--k``, ``--beta`` ...) are generated from their config dataclasses: one
option per field name across all purifiers, applied only to the chosen method (an option the method
lacks is refused, naming its own). ``--set key=value`` (repeatable) reaches any field.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

from trojanscope.errors import TrojanScopeError
from trojanscope.specs import positive_int

# purify's own options: a config field of the same name is reachable through --set only
FIXED = {"model", "data", "method", "clean_fraction", "seed", "trigger", "target", "out", "overwrite", "max_eval",
         "eval_split", "set", "json", "device", "allow_pickle", "from_card", "help"}
PREFIX = "knob_"  # argparse dest of a generated knob option


def _type_name(kind: Any) -> str:
    import typing

    args = [a for a in typing.get_args(kind) if a is not type(None)]
    if len(args) == 1:  # ``str | None`` reads as str
        kind = args[0]
    return getattr(kind, "__name__", None) or str(kind).replace("typing.", "")


def knob_options() -> dict[str, dict[str, Any]]:
    """``{field: {method: (type, default)}}`` over every purifier's config dataclass."""
    import dataclasses

    from trojanscope.defenses import get_defense, purifiers
    from trojanscope.defenses.pipeline import config_fields

    knobs: dict[str, dict[str, Any]] = {}
    for name in purifiers():
        cls = get_defense(name).config
        defaults = {f.name: (f.default if f.default is not dataclasses.MISSING else
                             f.default_factory() if f.default_factory is not dataclasses.MISSING else "required")
                    for f in dataclasses.fields(cls)}
        for field_name, kind in config_fields(cls).items():
            if field_name not in FIXED:
                knobs.setdefault(field_name, {})[name] = (kind, defaults[field_name])
    return knobs


HELP = {  # each command's one line in `trojanscope --help` (read without building the parser)
    "purify": "remove a backdoor: MBTSAD or a baseline on a small clean subset; CACC/ASR before and after",
    "augment": "augmented variants of texts (token splitting), or of a data set into a file",
}


def add_purify_parser(sub: Any, add_common: Callable[[argparse.ArgumentParser], None]) -> argparse.ArgumentParser:
    from trojanscope.defenses import get_defense, purifiers
    from trojanscope.defenses.pipeline import MIN_CLEAN, PurifySpec

    names = purifiers()
    S = PurifySpec(model="")
    p = sub.add_parser("purify", help=HELP["purify"],
                       description="Purify a backdoored classifier and save the result with its card. Methods: "
                                   + "; ".join(f"{n}: {get_defense(n).description}" for n in names))
    p.add_argument("--model", default=None, help="the backdoored classifier (a directory; required unless --from-card)")
    p.add_argument("--data", default=S.data, help="the task's data: the clean subset comes from its train split")
    p.add_argument("--method", default=S.method if S.method in names else (names[0] if names else None),
                   choices=names, help="the purifier")
    p.add_argument("--clean-fraction", type=float, default=S.clean_fraction,
                   help=f"seeded share of the train split the defender has, in (0, 1]; at least {MIN_CLEAN} texts")
    p.add_argument("--trigger", default=None, help="the backdoor's trigger for ASR (default: the model card's)")
    p.add_argument("--target", type=int, default=None, help="the backdoor's target label (default: the card's)")
    p.add_argument("--out", default=None, help="directory for the purified model (must not exist; not the source)")
    p.add_argument("--from-card", default=None, metavar="DIR",
                   help="repeat the purification recorded in DIR's card; only --out, --device, --overwrite, "
                        "--json apply")
    p.add_argument("--seed", type=int, default=S.seed, help="clean subset, token splits, training order")
    p.add_argument("--max-eval", type=positive_int, default=None, help="evaluate CACC/ASR on a seeded subset")
    p.add_argument("--eval-split", default=S.eval_split)
    p.add_argument("--overwrite", action="store_true",
                   help="replace --out if it is empty or holds a model (a directory with a model card)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any field of the method's config (repeatable), e.g. --set teacher_lr=3e-5")
    knobs = p.add_argument_group("method options (default: the method's own; each applies to the methods listed)")
    for field_name, per_method in sorted(knob_options().items()):
        kinds = {_type_name(k) for k, _ in per_method.values()}
        is_bool = kinds == {"bool"}
        helptext = ", ".join(f"{m}: {d}" for m, (_, d) in per_method.items())
        knobs.add_argument(f"--{field_name.replace('_', '-')}", dest=PREFIX + field_name, default=None,
                           metavar="BOOL" if is_bool else (kinds.pop().upper() if len(kinds) == 1 else "VALUE"),
                           nargs="?" if is_bool else None, const="true" if is_bool else None,
                           help=f"defaults: {helptext}")
    add_common(p)
    return p


def add_augment_parser(sub: Any, add_common: Callable[[argparse.ArgumentParser], None]) -> argparse.ArgumentParser:
    from trojanscope.defenses.splitting import AUGMENTATIONS, SplitConfig

    C = SplitConfig()
    p = sub.add_parser("augment", help=HELP["augment"])
    p.add_argument("--method", default="split", choices=AUGMENTATIONS.names(),
                   help="; ".join(f"{n}: {a.description}" for n, a in AUGMENTATIONS.items()))
    p.add_argument("--text", action="append", default=[], help="a text to augment (repeatable)")
    p.add_argument("--data", default=None, help="augment a data set (sst2, a file, ...) into --out")
    p.add_argument("--split", default="train")
    p.add_argument("--max", type=positive_int, default=None, help="a seeded subset of this many texts of --data")
    p.add_argument("--out", default=None, help="file for the augmented data set (.tsv, .csv or .jsonl)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--k", type=positive_int, default=C.k, help="variants per text")
    p.add_argument("--seed", type=int, default=C.seed)
    p.add_argument("--ratio", type=float, default=C.ratio, help="SplitAug's aug_p: ceil(ratio x tokens) words split per variant")
    p.add_argument("--min-len", type=int, default=C.min_len, help="characters a word needs to be split")
    p.add_argument("--max-words", type=positive_int, default=C.max_words, help="most splits per text")
    add_common(p)
    return p


def _parse_set(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise TrojanScopeError(f"--set takes KEY=VALUE, got {item!r}")
        out[key] = value.strip()
    return out


def method_config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The chosen method's config values given on the command line (knob options, then ``--set``)."""
    from trojanscope.defenses import get_defense
    from trojanscope.defenses.pipeline import config_fields

    fields = config_fields(get_defense(args.method).config)
    values: dict[str, Any] = {}
    for key, value in vars(args).items():
        if key.startswith(PREFIX) and value is not None:
            name = key[len(PREFIX):]
            if name not in fields:
                own = ", ".join(f"--{f.replace('_', '-')}" for f in fields if f not in FIXED) or "none"
                raise TrojanScopeError(f"--{name.replace('_', '-')} does not apply to {args.method}; "
                                       f"its options: {own}")
            values[name] = value
    values.update(_parse_set(args.set))  # unknown keys: refused by the spec, naming what is allowed
    return values


def purify_task_of_args(args: argparse.Namespace):
    """The :class:`~trojanscope.tasks.PurifyTaskSpec` a ``trojanscope purify`` command line describes (with
    ``--from-card DIR``: the card's purification on this command's device, into ``--out`` or ``DIR-repeat``)."""
    from trojanscope.defenses.pipeline import PurifySpec
    from trojanscope.tasks import PurifyTaskSpec

    if args.from_card:
        from trojanscope.models.loading import read_card

        card = read_card(args.from_card) if Path(args.from_card).is_dir() else None
        stored = ((card.training or {}).get("spec") if card else None)
        if not card or not (card.extra or {}).get("purification") or not isinstance(stored, dict):
            raise TrojanScopeError(f"{args.from_card} records no purification to repeat (no model card with a "
                                   "purification spec)")
        spec = PurifySpec.from_dict(stored)
        spec.device = args.device
        return PurifyTaskSpec(spec=spec, out=args.out or f"{str(args.from_card).rstrip('/')}-repeat",
                              overwrite=args.overwrite, from_card=args.from_card)
    if not args.model:
        raise TrojanScopeError("--model is required (the backdoored classifier), unless --from-card DIR")
    if not args.method:
        raise TrojanScopeError("no purification method is registered")
    spec = PurifySpec(model=args.model, data=args.data, method=args.method, config=method_config_from_args(args),
                      clean_fraction=args.clean_fraction, seed=args.seed, trigger=args.trigger, target=args.target,
                      device=args.device, max_eval=args.max_eval, eval_split=args.eval_split,
                      allow_pickle=args.allow_pickle)
    return PurifyTaskSpec(spec=spec, out=args.out, overwrite=args.overwrite)


def cmd_purify(args: argparse.Namespace) -> dict[str, Any]:
    """``trojanscope purify``: the purify task in the foreground."""
    from trojanscope.cli.common import run_task

    spec = purify_task_of_args(args)
    if not spec.out:
        raise TrojanScopeError("--out is required (the directory to write the purified model to)")
    return run_task(spec, args)


def _write_table(path: Path, texts: list[str], labels: list[int]) -> None:
    suffix = path.suffix.lower()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("w", encoding="utf-8", newline="") as f:
            if suffix == ".jsonl":
                for t, lab in zip(texts, labels):
                    f.write(json.dumps({"text": t, "label": lab}, ensure_ascii=False) + "\n")
            elif suffix == ".csv":
                w = csv.writer(f)
                w.writerow(["text", "label"])
                w.writerows(zip(texts, labels))
            else:  # TSV is read without quoting: tabs and line breaks inside a text become spaces
                f.write("text\tlabel\n")
                for t, lab in zip(texts, labels):
                    f.write(" ".join(t.split()) + f"\t{lab}\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def cmd_augment(args: argparse.Namespace) -> dict[str, Any]:
    """``trojanscope augment``: variants of ``--text``s and/or an augmented copy of ``--data`` in ``--out``."""
    from trojanscope.defenses.splitting import AUGMENTATIONS, SplitConfig

    aug = AUGMENTATIONS.get(args.method)
    cfg = SplitConfig(k=args.k, ratio=args.ratio, min_len=args.min_len, max_words=args.max_words,
                      seed=args.seed).validate()
    knobs = {"ratio": cfg.ratio, "min_len": cfg.min_len, "max_words": cfg.max_words}
    if not args.text and not args.data:
        raise TrojanScopeError("nothing to augment: pass --text \"...\" (repeatable) or --data NAME --out FILE")
    result: dict[str, Any] = {"method": args.method, "k": cfg.k, "seed": cfg.seed, **knobs}
    if args.text:
        texts = [str(t) for t in args.text]
        variants, _ = aug.run(texts, [0] * len(texts), cfg.k, cfg.seed, **knobs)
        result["texts"] = [{"text": t, "variants": variants[i * cfg.k:(i + 1) * cfg.k]} for i, t in enumerate(texts)]
    if args.data:
        from trojanscope.data.datasets import load_dataset

        if not args.out:
            raise TrojanScopeError("--data needs --out FILE (.tsv, .csv or .jsonl) for the augmented data set")
        out = Path(args.out)
        if out.suffix.lower() not in (".tsv", ".csv", ".jsonl"):
            raise TrojanScopeError(f"--out {out} must end in .tsv, .csv or .jsonl")
        if out.exists() and not args.overwrite:
            raise TrojanScopeError(f"{out} already exists; choose another --out or pass --overwrite")
        if out.is_dir():
            raise TrojanScopeError(f"{out} is a directory; --out names a file")
        ds = load_dataset(args.data, args.split).head(args.max, args.seed)
        texts, labels = aug.run(ds.texts, ds.labels, cfg.k, cfg.seed, **knobs)
        out.parent.mkdir(parents=True, exist_ok=True)
        _write_table(out, texts, labels)
        result.update(data=args.data, split=args.split, n_source=len(ds), n_written=len(texts), out=str(out))
    elif args.out:
        raise TrojanScopeError("--out writes an augmented data set: pass --data NAME too")
    return result


def add_parsers(sub: Any) -> None:
    from trojanscope.cli.common import add_common

    add_purify_parser(sub, add_common)  # purify: choices and knob options from the DEFENSES registry
    add_augment_parser(sub, add_common)


SPECS = {"purify": purify_task_of_args}
COMMANDS = {"purify": cmd_purify, "augment": cmd_augment}
