"""``trojanscope``: every capability of the dashboard, headless. ``--json`` prints one JSON object.

Exit codes: 0 success, 2 bad input or environment (one line on stderr), 1 a bug.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable, Sequence

from trojanscope.errors import TrojanScopeError
from trojanscope.utils import positive_int
from trojanscope.models.forward import PRECISION_CHOICES
from trojanscope.jobs.cli import add_jobs_parser, cmd_jobs
from trojanscope.defenses.cli import (add_augment_parser, add_purify_parser, cmd_augment, cmd_purify,  # noqa: F401
                                     preflight_purify)  # noqa: F401 - jobs.queue.preflight finds it here
from trojanscope.defenses.detection import add_detect_parser, cmd_detect  # noqa: F401


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    p.add_argument("--allow-pickle", action="store_true",
                   help="allow loading pickle weights (pytorch_model.bin); only for files you trust")


def _add_run_options(p: argparse.ArgumentParser, cfg: Any) -> None:
    """What ``train`` and ``por`` share about running the loop: precision, accumulation, checkpoints and resume
    (``cfg``: the command's default TrainConfig; :func:`checkpoint_options` reads the checkpoint ones back)."""
    p.add_argument("--precision", default=cfg.precision, choices=PRECISION_CHOICES,
                   help="autocast precision (auto: bf16 on a GPU with bf16 and on a CPU with native bf16, else fp32; "
                        "fp16: CUDA only); the card records it")
    p.add_argument("--grad-accum", type=positive_int, default=cfg.grad_accum,
                   help="micro-batches per optimiser step (effective batch: batch size x this x processes)")
    p.add_argument("--checkpoint-every", type=int, default=0, metavar="STEPS",
                   help="save the training state every STEPS steps (0: off), beside --out, for --resume")
    p.add_argument("--checkpoint-minutes", type=float, default=10.0, metavar="M",
                   help="and every M minutes (0: off); a run shorter than that never writes one")
    p.add_argument("--resume", action="store_true",
                   help="continue from the checkpoint a killed or paused run of the same recipe left")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trojanscope", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    # defaults come from the config dataclasses (one home for every default; the Attack Lab reads them too)
    from trojanscope.attacks import ATTACKS, EPConfig, LWPConfig, TALConfig, classifier_attacks
    from trojanscope.attacks.por import PORConfig
    from trojanscope.data.poison import PoisonConfig
    from trojanscope.training.loop import TrainConfig
    from trojanscope.training.pipeline import PORSpec

    P, T, TA, EP, LW, PO = PoisonConfig(), TrainConfig(), TALConfig(), EPConfig(), LWPConfig(), PORConfig()
    t = sub.add_parser("train", help="fine-tune a classifier, optionally poisoned, and save it with its metrics")
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

    e = sub.add_parser("eval", help="CACC, and ASR when a trigger is given (or recorded in the model card)")
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

    pr = sub.add_parser("predict", help="predict the label of one or more texts")
    pr.add_argument("--model", required=True)
    pr.add_argument("--text", action="append", required=True, help="a text (repeat for several)")
    _add_common(pr)

    pb = sub.add_parser("probe", help="per-layer [CLS] attention of a sentence with and without a trigger")
    pb.add_argument("--model", action="append", required=True, help="a model (repeat to compare several)")
    pb.add_argument("--text", required=True)
    pb.add_argument("--trigger", default=None, help="word or phrase; found in the text, or inserted")
    pb.add_argument("--position", default="end", help="start, end, random or a word index")
    pb.add_argument("--count", type=positive_int, default=1, help="insertions of the trigger")
    pb.add_argument("--seed", type=int, default=0)
    _add_common(pb)

    hv = sub.add_parser("heads", help="per layer and head, attention mass on the trigger over poisoned sentences")
    hv.add_argument("--model", action="append", required=True, help="a model (repeat: e.g. backdoored and clean)")
    hv.add_argument("--data", default="sst2")
    hv.add_argument("--split", default="test")
    hv.add_argument("--trigger", default=None, help="default: the first model's card trigger")
    hv.add_argument("--target", type=int, default=None)
    hv.add_argument("--n", type=positive_int, default=200, help="poisoned sentences to average over")
    hv.add_argument("--seed", type=int, default=0)
    _add_common(hv)

    es = sub.add_parser("effectiveness", help="E and S per trigger: insertions needed to flip a prediction (POR)")
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

    sw = sub.add_parser("swap", help="embedding swap (CL_emb+BD_enc, BD_emb+CL_enc): where does the backdoor live?")
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

    po = sub.add_parser("por", help="backdoor a pre-trained encoder with POR (task-agnostic triggers)")
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

    an = sub.add_parser("anatomy", help="star / planet / comet: which trigger tokens the backdoor hangs on")
    an.add_argument("--model", required=True, help="the backdoored classifier")
    an.add_argument("--clean", default=None, help="a clean classifier to compare [CLS] attention with")
    an.add_argument("--trigger", required=True, help='e.g. "Don Quixote", uw, serendipity')
    an.add_argument("--data", default="sst2")
    an.add_argument("--split", default="test")
    an.add_argument("--n", type=positive_int, default=200, help="sentences to insert the trigger into")
    an.add_argument("--threshold", type=float, default=0.2, help="drop that makes a token a planet")
    an.add_argument("--seed", type=int, default=0)
    _add_common(an)

    d = sub.add_parser("demo", help="build the demo pair (clean and backdoored) under runs/demo")
    d.add_argument("--quick", action="store_true", help="a small, fast pair for smoke tests")
    d.add_argument("--out", default=None, help="default: <runs dir>/demo (TROJANSCOPE_RUNS_DIR moves the runs dir)")
    d.add_argument("--force", action="store_true", help="rebuild even if the models exist")
    d.add_argument("--seed", type=int, default=0)
    _add_common(d)

    from trojanscope.analysis.scan import ScanConfig

    SC = ScanConfig()
    sc = sub.add_parser("scan", help="find an unknown trigger and judge whether a model is backdoored (a verdict, "
                        "ranked candidate triggers, hijacked heads)")
    sc.add_argument("--model", required=True, help="the suspect classifier")
    sc.add_argument("--data", default="sst2", help="clean sentences of the model's task")
    sc.add_argument("--split", default="test")
    sc.add_argument("--budget", type=int, default=SC.budget, help="candidate words the vocabulary search tries")
    sc.add_argument("--n-search", type=positive_int, default=SC.n_search, help="clean sentences per class to search")
    sc.add_argument("--n-verify", type=positive_int, default=SC.n_verify,
                    help="held-out clean sentences per class for the reported flip rates")
    sc.add_argument("--top-k", type=positive_int, default=SC.top_k, help="candidates reported")
    sc.add_argument("--inversion", action=argparse.BooleanOptionalAction, default=SC.inversion,
                    help="also invert triggers by gradient (finds triggers outside the word list)")
    sc.add_argument("--always-invert", action="store_true",
                    help="invert even when a word of the search already surely flips everything (by default the "
                         "costliest phase is skipped then)")
    sc.add_argument("--inversion-tokens", type=positive_int, default=SC.inversion_tokens)
    sc.add_argument("--inversion-steps", type=positive_int, default=SC.inversion_steps)
    sc.add_argument("--precision", default=SC.precision, choices=PRECISION_CHOICES,
                    help="for the search (auto: bf16 where the device has it natively); flip rates are fp32")
    sc.add_argument("--seed", type=int, default=SC.seed)
    sc.add_argument("--out", default=None, help="a new directory for scan.json (the full result and its config)")
    sc.add_argument("--overwrite", action="store_true", help="replace --out if it is an empty directory")
    _add_common(sc)

    fe = sub.add_parser("fetch", help="download a named benchmark from the Hugging Face hub into the data layout")
    fe.add_argument("name", help="sst2, olid, agnews or imdb")
    fe.add_argument("--out", default=None, help="data directory to write <name>/ into (default: the data directory, "
                                                "or ./data when there is none)")
    fe.add_argument("--json", action="store_true", help="print one JSON object on stdout")

    add_purify_parser(sub, _add_common)  # purify: choices and knob options from the DEFENSES registry
    add_augment_parser(sub, _add_common)
    add_detect_parser(sub, _add_common)  # detect: STRIP/RAP from the DEFENSES registry

    em = sub.add_parser("embed-map", help="2-D map of a model's [CLS] representation: clean, triggered and "
                        "augmented texts, with each set's distance to the clean data")
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
    add_jobs_parser(sub)
    return parser


def checkpoint_options(args: argparse.Namespace) -> dict[str, Any]:
    """``train``/``por``'s checkpoint and resume options, as run_training/run_por keywords."""
    return {"checkpoint_every": args.checkpoint_every, "checkpoint_minutes": args.checkpoint_minutes,
            "resume": args.resume}


def _repeat_from_card(args: argparse.Namespace, spec: Any, run: Callable[..., dict[str, Any]],
                      on_event: Callable[[dict[str, Any]], None] | None, progress: bool) -> dict[str, Any]:
    """``train/por --from-card DIR``: the card's spec on this machine's device, into ``--out``
    (default ``DIR-repeat``)."""
    spec.train.device = args.device
    out = args.out or f"{str(args.from_card).rstrip('/')}-repeat"
    return {"from_card": args.from_card, **run(spec, out, overwrite=args.overwrite, on_event=on_event,
                                               progress=progress, **checkpoint_options(args))}


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


def preflight_train(args: argparse.Namespace) -> None:
    """What ``trojanscope train`` would refuse, checked without training (jobs: at submission)."""
    from trojanscope.training.pipeline import preflight_training, spec_of_card

    spec = spec_of_card(args.from_card) if args.from_card else train_spec_of_args(args)
    preflight_training(spec)


def preflight_scan(args: argparse.Namespace) -> None:
    """What ``trojanscope scan`` would refuse before scanning: the config, the data, a model with a classifier."""
    from trojanscope.data.datasets import load_dataset
    from trojanscope.models.loading import require_classifier_source

    scan_config_of_args(args)
    load_dataset(args.data, args.split).require_classes(2, "the scan's clean data")
    require_classifier_source(args.model, "the scan")


def scan_config_of_args(args: argparse.Namespace):
    """The validated :class:`ScanConfig` a ``trojanscope scan`` command line describes."""
    from trojanscope.analysis.scan import ScanConfig

    return ScanConfig(budget=args.budget, n_search=args.n_search, n_verify=args.n_verify, top_k=args.top_k,
                      inversion=args.inversion, always_invert=args.always_invert,
                      inversion_tokens=args.inversion_tokens,
                      inversion_steps=args.inversion_steps, precision=args.precision, seed=args.seed).validate()


def cmd_train(args: argparse.Namespace, on_event: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """``trojanscope train``; ``on_event`` receives the training loop's step/epoch events (jobs)."""
    from trojanscope.training.pipeline import run_training, spec_of_card

    progress = not args.json or sys.stderr.isatty()
    if args.from_card:
        return _repeat_from_card(args, spec_of_card(args.from_card), run_training, on_event, progress)
    if not args.out:
        raise TrojanScopeError("--out is required (the directory to write the model to), unless --from-card DIR")
    spec = train_spec_of_args(args)
    return run_training(spec, args.out, overwrite=args.overwrite, on_event=on_event, progress=progress,
                        **checkpoint_options(args))


def cmd_eval(args: argparse.Namespace) -> dict[str, Any]:
    from trojanscope.data.datasets import load_dataset
    from trojanscope.data.poison import check_trigger
    from trojanscope.models.loading import load_model
    from trojanscope.models.planted import NONE, attack_of, resolve_target
    from trojanscope.training.metrics import evaluate
    from trojanscope.utils import resolve_device

    test = load_dataset(args.data, args.split).head(args.max_eval, args.seed)
    loaded = load_model(args.model, num_labels=test.num_labels, allow_pickle=args.allow_pickle,
                        device=resolve_device(args.device))
    loaded.require("classify", "eval")
    recorded = NONE if args.no_card_trigger else attack_of(loaded)
    attack = recorded.with_overrides(trigger=args.trigger, target=args.target, insertions=args.insertions)
    trigger = attack.trigger
    target = None
    if trigger:
        check_trigger(loaded.tokenizer, trigger)
        target = resolve_target(attack, loaded, trigger)
    combination = attack.combination and trigger == recorded.trigger
    result = evaluate(loaded.model, loaded.tokenizer, test, trigger=trigger, target=target,
                      insertions=attack.insertions, seed=args.seed, combination=combination, progress=not args.json)
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
    from trojanscope.models.loading import load_model
    from trojanscope.models.planted import attack_of, resolve_target
    from trojanscope.utils import resolve_device

    test = load_dataset(args.data, args.split)
    device = resolve_device(args.device)
    models = [load_model(m, allow_pickle=args.allow_pickle, device=device) for m in args.model]
    attack = attack_of(models[0]).with_overrides(trigger=args.trigger, target=args.target)
    trigger = attack.require_trigger("the head view")
    target = resolve_target(attack, models[0], trigger)
    views = [head_trigger_share(m, test, trigger, target, n=args.n, seed=args.seed) for m in models]
    return {"trigger": trigger, "target": target, "models": [v.to_json() for v in views]}


def cmd_effectiveness(args: argparse.Namespace) -> dict[str, Any]:
    from trojanscope.analysis.effectiveness import ESConfig, model_effectiveness, parse_triggers
    from trojanscope.data.datasets import load_dataset
    from trojanscope.models.loading import load_model
    from trojanscope.models.planted import attack_of
    from trojanscope.utils import resolve_device

    test = load_dataset(args.data, args.split)
    loaded = load_model(args.model, num_labels=test.num_labels, allow_pickle=args.allow_pickle,
                        device=resolve_device(args.device))
    loaded.require("classify", "E and S (insertions needed to flip a prediction)")
    planted = attack_of(loaded)  # through clean fine-tuning, e.g. a POR encoder's triggers
    triggers = args.triggers or list(planted.triggers)
    if not triggers:
        raise TrojanScopeError("no trigger given and the model's card (or its base model's) records none; "
                               "pass --triggers cf,mn,...")
    cfg = ESConfig(max_insertions=args.max_insertions, max_eval=args.max_eval, seed=args.seed,
                   batch_size=args.batch_size)
    res = model_effectiveness(loaded, test, parse_triggers(triggers), cfg)
    for notice in res.notices:
        print(f"notice: {notice}", file=sys.stderr)
    return {"model": args.model, "data": args.data, "split": args.split,
            "max_insertions": args.max_insertions, **res.to_json()}


def cmd_swap(args: argparse.Namespace) -> dict[str, Any]:
    from trojanscope.analysis.swap import SwapConfig, embedding_swap
    from trojanscope.data.datasets import load_dataset
    from trojanscope.models.loading import load_model
    from trojanscope.utils import resolve_device

    test = load_dataset(args.data, args.split)
    device = resolve_device(args.device)
    clean, bd = (load_model(m, num_labels=test.num_labels, allow_pickle=args.allow_pickle, device=device)
                 for m in (args.clean, args.backdoored))
    cfg = SwapConfig(n=args.n, seed=args.seed, trigger=args.trigger, target=args.target,
                     representation=args.representation, layers=not args.no_layers, batch_size=args.batch_size)
    res = embedding_swap(clean, bd, test, cfg)
    for notice in res.notices:
        print(f"notice: {notice}", file=sys.stderr)
    return {"data": args.data, "split": args.split, **res.to_json()}


def cmd_por(args: argparse.Namespace, on_event: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    from trojanscope.attacks.por import PORConfig
    from trojanscope.training.loop import TrainConfig
    from trojanscope.training.pipeline import PORSpec, por_spec_of_card, run_por

    progress = not args.json or sys.stderr.isatty()
    if args.from_card:
        return _repeat_from_card(args, por_spec_of_card(args.from_card), run_por, on_event, progress)
    if not args.out:
        raise TrojanScopeError("--out is required (the directory to write the encoder to), unless --from-card DIR")
    spec = PORSpec(model=args.model,
                   por=PORConfig(triggers=args.triggers, insertions=args.insertions, representation=args.representation,
                                 scale=args.scale, data=args.data, max_texts=args.max_texts),
                   train=TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                                     device=args.device, train_word_embeddings=not args.freeze_word_embeddings,
                                     precision=args.precision, grad_accum=args.grad_accum),
                   allow_pickle=args.allow_pickle)
    return run_por(spec, args.out, overwrite=args.overwrite, on_event=on_event,
                   progress=not args.json or sys.stderr.isatty(), **checkpoint_options(args))


def cmd_anatomy(args: argparse.Namespace) -> dict[str, Any]:
    from trojanscope.analysis.anatomy import AnatomyConfig, trigger_anatomy
    from trojanscope.data.datasets import load_dataset
    from trojanscope.models.loading import load_model
    from trojanscope.utils import resolve_device

    test = load_dataset(args.data, args.split)
    device = resolve_device(args.device)
    bd = load_model(args.model, allow_pickle=args.allow_pickle, device=device)
    clean = load_model(args.clean, allow_pickle=args.allow_pickle, device=device) if args.clean else None
    res = trigger_anatomy(bd, test, args.trigger, AnatomyConfig(n=args.n, threshold=args.threshold, seed=args.seed),
                          clean=clean)
    for note in res.notes:
        print(f"notice: {note}", file=sys.stderr)
    return {"model": args.model, "clean": args.clean, **res.to_json()}


def cmd_embed_map(args: argparse.Namespace) -> dict[str, Any]:
    from trojanscope.analysis.embed_map import MapConfig, representation_map
    from trojanscope.data.datasets import load_dataset
    from trojanscope.models.loading import load_model
    from trojanscope.utils import resolve_device
    from trojanscope.viz.figures import embed_map_figure

    if args.out and not args.out.lower().endswith((".html", ".htm")):
        raise TrojanScopeError(f"--out {args.out} must be an .html file (the interactive map)")
    test = load_dataset(args.data, args.split)
    loaded = load_model(args.model, num_labels=test.num_labels, allow_pickle=args.allow_pickle,
                        device=resolve_device(args.device))
    augs = tuple(a.strip() for a in args.augmentations.split(",") if a.strip())
    res = representation_map(loaded, test, MapConfig(n=args.n, method=args.method, augmentations=augs, k=args.k,
                                                     seed=args.seed), trigger=args.trigger)
    data = res.to_json()
    if args.out:
        from pathlib import Path

        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        embed_map_figure(data).write_html(args.out, include_plotlyjs=True)  # self-contained: no CDN
    data.pop("points")
    return {**data, "out": args.out}


def cmd_scan(args: argparse.Namespace, on_event: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """``trojanscope scan``: the verdict, the candidates (best first, flip rates on held-out sentences), the
    drifting heads ``[layer (1-based), head]`` and the time taken; ``--out`` keeps the full result."""
    from dataclasses import asdict

    from trojanscope.analysis.scan import scan
    from trojanscope.data.datasets import load_dataset
    from trojanscope.models.loading import load_model
    from trojanscope.utils import atomic_directory, check_output_dir, resolve_device

    cfg = scan_config_of_args(args)
    if args.out:
        check_output_dir(args.out, args.overwrite)
    data = load_dataset(args.data, args.split)
    loaded = load_model(args.model, allow_pickle=args.allow_pickle, device=resolve_device(args.device))
    more = []
    if args.split != "train":  # the task's own words are learnt from its train split too, where there is one
        try:
            more.append(load_dataset(args.data, "train"))
        except TrojanScopeError:
            pass
    res = scan(loaded, data, cfg, on_event=on_event, vocabulary_data=more)
    out = res.to_json()
    if args.out:
        full = {**res.to_json(full=True), "model": args.model, "data": data.describe(),
                "spec": {"model": args.model, "data": args.data, "split": args.split, "config": asdict(cfg)}}
        with atomic_directory(args.out, overwrite=args.overwrite) as tmp:
            (tmp / "scan.json").write_text(json.dumps(full, indent=1), encoding="utf-8")
        out["out"] = args.out
    return out


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


def cmd_demo(args: argparse.Namespace, on_event: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """``trojanscope demo``, in the foreground; as a background job: ``trojanscope jobs submit --kind demo``."""
    from trojanscope.demo import build_demo

    return build_demo(args.out, quick=args.quick, device=args.device, seed=args.seed, force=args.force,
                      on_event=on_event, progress=not args.json or sys.stderr.isatty())


COMMANDS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "train": cmd_train, "eval": cmd_eval, "predict": cmd_predict, "probe": cmd_probe,
    "heads": cmd_heads, "demo": cmd_demo, "jobs": cmd_jobs,
    "effectiveness": cmd_effectiveness, "swap": cmd_swap, "por": cmd_por, "anatomy": cmd_anatomy,
    "purify": cmd_purify, "augment": cmd_augment, "detect": cmd_detect, "embed-map": cmd_embed_map,
    "scan": cmd_scan, "fetch": cmd_fetch,
}


def _print_human(result: dict[str, Any]) -> None:
    for key, value in result.items():
        if isinstance(value, float):
            value = f"{value:.4f}"
        elif isinstance(value, (dict, list)):
            value = json.dumps(value, ensure_ascii=False)
        print(f"{key}: {value}")


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
        _print_human(to_jsonable(result))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
