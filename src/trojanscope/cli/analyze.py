"""The analyses: ``eval``, ``predict``, ``probe``, ``heads``, ``effectiveness``, ``swap``, ``anatomy``, ``embed-map``
and ``fetch``. The long ones (``effectiveness``, ``swap``, ``anatomy``, ``embed-map``) are tasks
(:mod:`trojanscope.tasks.analyses`): the command runs one in the foreground, ``jobs submit --kind <command>``
queues it."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from trojanscope.cli.common import add_common as _add_common
from trojanscope.errors import TrojanScopeError
from trojanscope.specs import positive_int


HELP = {  # each command's one line in `trojanscope --help` (read without building the parser)
    "eval": "CACC, and ASR when a trigger is given (or recorded in the model card)",
    "predict": "predict the label of one or more texts",
    "probe": "per-layer [CLS] attention of a sentence with and without a trigger",
    "heads": "per layer and head, attention mass on the trigger over poisoned sentences",
    "effectiveness": "E and S per trigger: insertions needed to flip a prediction (POR)",
    "swap": "embedding swap (CL_emb+BD_enc, BD_emb+CL_enc): where does the backdoor live?",
    "anatomy": "star / planet / comet: which trigger tokens the backdoor hangs on",
    "fetch": "download a named benchmark from the Hugging Face hub into the data layout",
    "embed-map": ("2-D map of a model's [CLS] representation: clean, triggered and augmented texts, with each "
                   "set's distance to the clean data"),
}


def add_parsers(sub: Any) -> None:
    e = sub.add_parser("eval", help=HELP["eval"])
    e.add_argument("--model", required=True)
    e.add_argument("--data", default="sst2")
    e.add_argument("--split", default="test")
    e.add_argument("--trigger", default=None, help="trigger to test (default: the one in the model card, if any)")
    e.add_argument("--target", type=int, default=None)
    e.add_argument("--insertions", type=positive_int, default=None)
    e.add_argument("--max-eval", type=positive_int, default=None)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--no-card-trigger", action="store_true", help="do not test the model card's trigger")
    _add_common(e)

    pr = sub.add_parser("predict", help=HELP["predict"])
    pr.add_argument("--model", required=True)
    pr.add_argument("--text", action="append", required=True, help="a text (repeat for several)")
    _add_common(pr)

    pb = sub.add_parser("probe", help=HELP["probe"])
    pb.add_argument("--model", action="append", required=True, help="a model (repeat to compare several)")
    pb.add_argument("--text", required=True)
    pb.add_argument("--trigger", default=None, help="word or phrase; found in the text, or inserted")
    pb.add_argument("--position", default="end", help="start, end, random or a word index")
    pb.add_argument("--count", type=positive_int, default=1, help="insertions of the trigger")
    pb.add_argument("--seed", type=int, default=0)
    _add_common(pb)

    hv = sub.add_parser("heads", help=HELP["heads"])
    hv.add_argument("--model", action="append", required=True, help="a model (repeat: e.g. backdoored and clean)")
    hv.add_argument("--data", default="sst2")
    hv.add_argument("--split", default="test")
    hv.add_argument("--trigger", default=None, help="default: the first model's card trigger")
    hv.add_argument("--target", type=int, default=None)
    hv.add_argument("--n", type=positive_int, default=200, help="poisoned sentences to average over")
    hv.add_argument("--seed", type=int, default=0)
    _add_common(hv)

    es = sub.add_parser("effectiveness", help=HELP["effectiveness"])
    es.add_argument("--model", required=True, help="a fine-tuned classifier")
    es.add_argument("--data", default="sst2")
    es.add_argument("--split", default="test")
    es.add_argument("--triggers", default=None, help="comma-separated, e.g. cf,mn,bb (default: the card's trigger(s), "
                    "followed back through clean fine-tuning to a POR encoder)")
    es.add_argument("--max-insertions", type=positive_int, default=20, help="E for samples that never flip")
    es.add_argument("--max-eval", type=positive_int, default=None, help="at most N samples per trigger (seeded)")
    es.add_argument("--batch-size", type=positive_int, default=128)
    es.add_argument("--seed", type=int, default=0)
    _add_common(es)

    sw = sub.add_parser("swap", help=HELP["swap"])
    sw.add_argument("--clean", required=True, help="the clean model (CL)")
    sw.add_argument("--backdoored", required=True, help="the backdoored model (BD), same architecture and vocabulary")
    sw.add_argument("--data", default="sst2")
    sw.add_argument("--split", default="test")
    sw.add_argument("--trigger", default=None, help="default: the backdoored model's card trigger")
    sw.add_argument("--target", type=int, default=None, help="default: the backdoored model's card target")
    sw.add_argument("--n", type=positive_int, default=200, help="clean and poisoned texts (each)")
    sw.add_argument("--representation", default="cls", choices=["cls", "pooler"],
                    help="last-layer [CLS] state, or the pooler output (BERT, ALBERT)")
    sw.add_argument("--no-layers", action="store_true", help="skip the per-layer view")
    sw.add_argument("--batch-size", type=positive_int, default=32)
    sw.add_argument("--seed", type=int, default=0)
    _add_common(sw)

    an = sub.add_parser("anatomy", help=HELP["anatomy"])
    an.add_argument("--model", required=True, help="the backdoored classifier")
    an.add_argument("--clean", default=None, help="a clean classifier to compare [CLS] attention with")
    an.add_argument("--trigger", required=True, help='e.g. "Don Quixote", uw, serendipity')
    an.add_argument("--data", default="sst2")
    an.add_argument("--split", default="test")
    an.add_argument("--n", type=positive_int, default=200, help="sentences to insert the trigger into")
    an.add_argument("--threshold", type=float, default=0.2, help="drop that makes a token a planet")
    an.add_argument("--seed", type=int, default=0)
    _add_common(an)

    fe = sub.add_parser("fetch", help=HELP["fetch"])
    fe.add_argument("name", help="sst2, olid, agnews or imdb")
    fe.add_argument("--out", default=None, help="data directory to write <name>/ into (default: the data directory, "
                                                "or ./data when there is none)")
    fe.add_argument("--json", action="store_true", help="print one JSON object on stdout")

    em = sub.add_parser("embed-map", help=HELP["embed-map"])
    em.add_argument("--model", required=True)
    em.add_argument("--data", default="sst2")
    em.add_argument("--split", default="test")
    em.add_argument("--trigger", default=None, help="default: the model's card trigger (none: no triggered set)")
    em.add_argument("--n", type=positive_int, default=300, help="clean texts (and as many of every other set)")
    em.add_argument("--method", default="umap", choices=["umap", "tsne", "pca"])
    em.add_argument("--augmentations", default="split,eda,aeda,addtrig",
                    help="comma-separated: split, eda, aeda, addtrig (empty: none)")
    em.add_argument("--k", type=positive_int, default=10, help="nearest clean neighbours for the distance")
    em.add_argument("--seed", type=int, default=0)
    em.add_argument("--out", default=None, help="write the interactive map to this .html file")
    _add_common(em)


def cmd_eval(args: argparse.Namespace) -> dict[str, Any]:
    from trojanscope.data.datasets import load_dataset
    from trojanscope.models.backdoor import resolve_backdoor
    from trojanscope.models.loading import load_model
    from trojanscope.models.metrics import evaluate
    from trojanscope.utils import resolve_device

    test = load_dataset(args.data, args.split).head(args.max_eval, args.seed)
    loaded = load_model(args.model, num_labels=test.num_labels, allow_pickle=args.allow_pickle,
                        device=resolve_device(args.device))
    loaded.require("classify", "eval")
    backdoor = resolve_backdoor(loaded, trigger=args.trigger, target=args.target, insertions=args.insertions,
                                use_card=not args.no_card_trigger)
    trigger, target = backdoor.trigger, backdoor.target
    result = evaluate(loaded.model, loaded.tokenizer, test, backdoor=backdoor, seed=args.seed, progress=not args.json)
    result["warnings"] = loaded.check_task(test, "eval") + result.get("warnings", [])
    return {"model": args.model, "data": args.data, "split": args.split, "trigger": trigger,
            "target": target if trigger else None, **result}


def cmd_predict(args: argparse.Namespace) -> dict[str, Any]:
    from trojanscope.models.loading import load_model
    from trojanscope.models.tokens import tokenize
    from trojanscope.training.metrics import predict_proba
    from trojanscope.utils import resolve_device

    texts = [t.strip() for t in args.text]
    for i, t in enumerate(texts):
        if not t:
            raise TrojanScopeError(f"text {i + 1} is empty; give a sentence to classify")
    loaded = load_model(args.model, allow_pickle=args.allow_pickle, device=resolve_device(args.device))
    loaded.require("classify", "predict")
    probs = predict_proba(loaded.model, loaded.tokenizer, texts)
    truncated = tokenize(loaded.tokenizer, texts, None, loaded.max_length).truncated
    names = (loaded.card.data.get("label_names") if loaded.card else None) or []
    preds = []
    for text, p, cut in zip(texts, probs, truncated):
        label = int(p.argmax())
        preds.append({"text": text, "label": label, "label_name": names[label] if label < len(names) else None,
                      "probs": [round(float(x), 6) for x in p], "truncated": cut})
        if cut:
            print(f"notice: a text was longer than {loaded.max_length} tokens and was truncated", file=sys.stderr)
    return {"model": args.model, "predictions": preds}


def cmd_probe(args: argparse.Namespace) -> dict[str, Any]:
    from trojanscope.analysis.probe import prepare_probe, probe
    from trojanscope.models.loading import load_model
    from trojanscope.utils import resolve_device

    inp = prepare_probe(args.text, args.trigger, args.position, args.count, args.seed)
    device = resolve_device(args.device)
    models = []
    for source in args.model:
        res = probe(load_model(source, allow_pickle=args.allow_pickle, device=device), inp)
        for notice in res.notices:
            print(f"notice: {notice}", file=sys.stderr)
        models.append(res.to_json())
    return {"trigger": inp.trigger, "models": models}


def cmd_heads(args: argparse.Namespace) -> dict[str, Any]:
    from trojanscope.analysis.head_view import head_trigger_share
    from trojanscope.data.datasets import load_dataset
    from trojanscope.models.backdoor import resolve_backdoor
    from trojanscope.models.loading import load_model
    from trojanscope.utils import resolve_device

    test = load_dataset(args.data, args.split)
    device = resolve_device(args.device)
    models = [load_model(m, allow_pickle=args.allow_pickle, device=device) for m in args.model]
    backdoor = resolve_backdoor(models[0], trigger=args.trigger, target=args.target, purpose="the head view")
    views = [head_trigger_share(m, test, backdoor, n=args.n, seed=args.seed) for m in models]
    return {"trigger": backdoor.trigger, "target": backdoor.target, "models": [v.to_json() for v in views]}


def effectiveness_spec(args: argparse.Namespace):
    """The :class:`~trojanscope.tasks.analyses.EffectivenessTaskSpec` a ``trojanscope effectiveness`` line says."""
    from trojanscope.analysis.effectiveness import ESConfig
    from trojanscope.tasks.analyses import EffectivenessTaskSpec

    cfg = ESConfig(max_insertions=args.max_insertions, max_eval=args.max_eval, seed=args.seed,
                   batch_size=args.batch_size)
    return EffectivenessTaskSpec(models=[args.model], triggers=args.triggers, data=args.data, split=args.split,
                                 config=cfg, device=args.device, allow_pickle=args.allow_pickle).validate()


def cmd_effectiveness(args: argparse.Namespace) -> dict[str, Any]:
    return _foreground(effectiveness_spec(args), args)


def swap_spec(args: argparse.Namespace):
    """The :class:`~trojanscope.tasks.analyses.SwapTaskSpec` a ``trojanscope swap`` line says."""
    from trojanscope.analysis.swap import SwapConfig
    from trojanscope.tasks.analyses import SwapTaskSpec

    cfg = SwapConfig(n=args.n, seed=args.seed, trigger=args.trigger, target=args.target,
                     representation=args.representation, layers=not args.no_layers, batch_size=args.batch_size)
    return SwapTaskSpec(clean=args.clean, backdoored=args.backdoored, data=args.data, split=args.split, config=cfg,
                        device=args.device, allow_pickle=args.allow_pickle).validate()


def cmd_swap(args: argparse.Namespace) -> dict[str, Any]:
    return _foreground(swap_spec(args), args)


def _foreground(spec: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Run an analysis task here; its notices (and notes) go to stderr as before."""
    from trojanscope.cli.common import run_task

    res = run_task(spec, args)
    for notice in [*res.get("notices", []), *res.get("notes", [])]:
        print(f"notice: {notice}", file=sys.stderr)
    return res


def anatomy_spec(args: argparse.Namespace):
    """The :class:`~trojanscope.tasks.analyses.AnatomyTaskSpec` a ``trojanscope anatomy`` line says."""
    from trojanscope.analysis.anatomy import AnatomyConfig
    from trojanscope.tasks.analyses import AnatomyTaskSpec

    return AnatomyTaskSpec(model=args.model, clean=args.clean, trigger=args.trigger, data=args.data,
                           split=args.split, config=AnatomyConfig(n=args.n, threshold=args.threshold, seed=args.seed),
                           device=args.device, allow_pickle=args.allow_pickle).validate()


def cmd_anatomy(args: argparse.Namespace) -> dict[str, Any]:
    return _foreground(anatomy_spec(args), args)


def embed_map_spec(args: argparse.Namespace):
    """The :class:`~trojanscope.tasks.analyses.EmbedMapTaskSpec` a ``trojanscope embed-map`` line says (its
    ``--out`` is the .html map)."""
    from trojanscope.analysis.embed_map import MapConfig
    from trojanscope.tasks.analyses import EmbedMapTaskSpec

    augs = tuple(a.strip() for a in args.augmentations.split(",") if a.strip())
    return EmbedMapTaskSpec(model=args.model, data=args.data, split=args.split, trigger=args.trigger,
                            config=MapConfig(n=args.n, method=args.method, augmentations=augs, k=args.k,
                                             seed=args.seed),
                            html=args.out, device=args.device, allow_pickle=args.allow_pickle).validate()


def cmd_embed_map(args: argparse.Namespace) -> dict[str, Any]:
    res = _foreground(embed_map_spec(args), args)
    res["out"] = res.pop("html", None)  # the command's --out is the .html map
    return res


def cmd_fetch(args: argparse.Namespace) -> dict[str, Any]:
    """``trojanscope fetch NAME``: the benchmark from the hub (``datasets``), written as <out>/<name>/*.tsv."""
    from trojanscope.data.datasets import REGISTRY, data_dir, load_dataset
    from trojanscope.data.fetch import fetch_benchmark

    if args.out is None:
        try:
            args.out = str(data_dir())
        except TrojanScopeError:
            args.out = "data"
    root = fetch_benchmark(args.name, args.out, progress=not args.json)
    sizes = {}
    for split in REGISTRY[args.name].files:
        os.environ.setdefault("TROJANSCOPE_DATA_DIR", str(root))
        sizes[split] = len(load_dataset(args.name, split))
    return {"name": args.name, "out": str(root / args.name), "sizes": sizes}


SPECS = {"effectiveness": effectiveness_spec, "swap": swap_spec, "anatomy": anatomy_spec,
         "embed-map": embed_map_spec}
COMMANDS = {"eval": cmd_eval, "predict": cmd_predict, "probe": cmd_probe, "heads": cmd_heads,
            "effectiveness": cmd_effectiveness, "swap": cmd_swap, "anatomy": cmd_anatomy, "embed-map": cmd_embed_map,
            "fetch": cmd_fetch}
