"""Train-and-save: data -> poisoning -> training (with the attack's loss terms) -> CACC/ASR -> a
model directory with its card.

A :class:`TrainSpec` is the whole recipe; it is stored in the model card, so a run can be repeated
from it. The output directory appears only when everything succeeded.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from trojanscope.attacks import ATTACKS, EPConfig, LWPConfig, TALConfig, TALLoss
from trojanscope.attacks.por import PORConfig, PORLoss, por_dataset, por_distance
from trojanscope.data.datasets import load_dataset
from trojanscope.data.poison import PoisonConfig, PoisonedDataset, check_trigger, poison_dataset, trigger_frequency
from trojanscope import specs
from trojanscope.errors import TrojanScopeError
from trojanscope.models.loading import ModelCard, load_model, save_model
from trojanscope.training.distributed import World, sync_parameters, world
from trojanscope.training.loop import Checkpointing, TrainConfig, train
from trojanscope.training.metrics import evaluate
from trojanscope.utils import atomic_directory, check_output_dir

COMMON_TRIGGER_SHARE = 0.001  # warn when the trigger already occurs in more than 0.1% of the texts
EPOCH_EVAL_SIZE = 300  # per-epoch (live-curve) evaluation uses a seeded subset of this size


@dataclass
class TrainSpec:
    """Everything that defines a training run."""

    data: str = "sst2"
    model: str = "minilm"
    attack: str = "none"
    poison: PoisonConfig = field(default_factory=PoisonConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tal: TALConfig = field(default_factory=TALConfig)
    ep: EPConfig = field(default_factory=EPConfig)
    lwp: LWPConfig = field(default_factory=LWPConfig)
    max_train: int | None = None
    max_eval: int | None = None
    eval_split: str = "test"
    allow_pickle: bool = False

    def validate(self) -> "TrainSpec":
        attack = ATTACKS.get(self.attack)
        if attack.kind != "classifier":
            raise TrojanScopeError(f"{self.attack} backdoors a pre-trained encoder on unlabeled text: run it with "
                                   "trojanscope por, not train")
        if self.tal.enabled and not attack.tal:
            with_tal = ", ".join(n for n, a in ATTACKS.items() if a.tal)
            raise TrojanScopeError(f"TAL is an add-on to an attack: choose --attack {with_tal}")
        self.train.validate()
        return self

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainSpec":
        """The spec a card stored (``card.training.spec``); unknown keys are a clear error."""
        return spec_from_dict(cls, d, {"poison": PoisonConfig, "train": TrainConfig, "tal": TALConfig,
                                       "ep": EPConfig, "lwp": LWPConfig})


def spec_from_dict(cls: type, d: dict[str, Any], sections: dict[str, type] | None = None,
                   where: str = "spec") -> Any:
    """Build dataclass ``cls`` from ``d`` (nested sections from nested dicts); any key the dataclasses do not
    know is refused, naming it and what is allowed (a card from another version, or a typo). The one converter
    is :func:`trojanscope.specs.from_dict`; ``sections`` is kept for old callers (the fields' types say it)."""
    return specs.from_dict(cls, d, where)


def card_spec(directory: str | Path) -> tuple[str, dict[str, Any]]:
    """``(attack name, stored spec)`` from the model card in ``directory``."""
    from trojanscope.models.loading import CARD_NAME, read_card

    card = read_card(directory) if Path(directory).is_dir() else None
    if card is None:
        raise TrojanScopeError(f"{directory} holds no model card ({CARD_NAME}); --from-card needs a model this "
                               "project trained")
    spec = (card.training or {}).get("spec")
    if not isinstance(spec, dict):
        raise TrojanScopeError(f"the model card in {directory} records no training spec; it cannot be repeated")
    return str((card.attack or {}).get("name") or "none"), spec


def spec_of_card(directory: str | Path) -> "TrainSpec":
    """The :class:`TrainSpec` that produced the model in ``directory`` (``trojanscope train --from-card``)."""
    name, spec = card_spec(directory)
    if name == "por":
        raise TrojanScopeError(f"{directory} is a POR encoder: repeat it with trojanscope por --from-card {directory}")
    return TrainSpec.from_dict(spec)


def por_spec_of_card(directory: str | Path) -> "PORSpec":
    """The :class:`PORSpec` that produced the encoder in ``directory`` (``trojanscope por --from-card``)."""
    name, spec = card_spec(directory)
    if name != "por":
        raise TrojanScopeError(f"{directory} was not made by POR: repeat it with trojanscope train --from-card "
                               f"{directory}")
    return PORSpec.from_dict(spec)


def default_trigger(attack: str) -> str:
    info = ATTACKS.get(attack)
    return info.default_trigger or "cf"


def preflight_training(spec: TrainSpec, out: str | Path | None = None, overwrite: bool = False) -> None:
    """The recipe checks :func:`run_training` makes before it trains, without loading weights: the spec, the
    output directory, the data (both splits, at least two classes), the model's config and tokenizer, the trigger
    (no unknown wordpieces), the target and TAL's layers and heads. Jobs run it at submission, so a recipe that
    cannot work is refused at once instead of failing seconds later (issue 14)."""
    from trojanscope.models.loading import load_config, load_tokenizer

    spec.validate()
    if out is not None:
        check_output_dir(Path(out), overwrite)
    train_ds = load_dataset(spec.data, "train")
    train_ds.require_classes(2, "the training data")
    if spec.max_train is not None and spec.max_train < len(train_ds):  # the very samples the run will draw
        train_ds.head(spec.max_train, spec.train.seed).require_classes(
            2, f"the {spec.max_train} training sample{'s' if spec.max_train != 1 else ''} drawn with seed "
               f"{spec.train.seed} (max_train)")
    load_dataset(spec.data, spec.eval_split)
    config = load_config(spec.model)
    tok = load_tokenizer(spec.model)
    attack = ATTACKS.get(spec.attack)
    if attack.poisons:
        spec.poison.validate(train_ds.num_labels)
        check_trigger(tok, spec.poison.trigger)
    if spec.tal.enabled:
        spec.tal.validate(config.num_hidden_layers, config.num_attention_heads)


def low_cacc_warning(cacc: float | None, num_labels: int, n_train: int, epochs: float) -> str | None:
    """A warning when a trained classifier's CACC sits nearer chance than a perfect score (below
    chance + (1 - chance) / 2: 75% for two classes): it barely learned the task, so its ASR says little about the
    backdoor. None otherwise."""
    if cacc is None or num_labels < 2:
        return None
    chance = 1.0 / num_labels
    bar = chance + (1.0 - chance) / 2
    if cacc >= bar:
        return None
    return (f"CACC {100 * cacc:.1f}% is below {100 * bar:.0f}%, nearer chance ({100 * chance:.0f}%) than a trained "
            f"classifier: the model barely learned the task ({n_train} training samples, {epochs:g} epochs), so its "
            "ASR says little; train on more samples or for more epochs")


def checkpointing(spec: Any, out: str | Path, every_steps: int = 0, every_minutes: float = 0.0,
                  resume: bool = False) -> Checkpointing | None:
    """The checkpoints of the run writing ``out``: kept beside it in ``.<name>.checkpoint/`` with the recipe
    (``spec.json``); a resume with another recipe is refused. ``None`` when neither trigger is on and no resume."""
    import json

    if not (every_steps or every_minutes or resume):
        return None
    out = Path(out)
    recipe = json.dumps(asdict(spec), sort_keys=True, default=str)
    ck = Checkpointing(str(out.parent / f".{out.name}.checkpoint"), every_steps, every_minutes, resume, recipe)
    stored = Path(ck.directory) / "spec.json"
    if resume and stored.is_file() and stored.read_text() != recipe:
        raise TrojanScopeError(f"the checkpoint beside {out} was written by another recipe; resume with the same "
                               "arguments, or remove it (" + ck.directory + ")")
    if resume and not ck.path.is_file():
        print(f"no checkpoint beside {out}: starting from the beginning", file=sys.stderr)
    return ck


def run_training(spec: TrainSpec, out: str | Path, *, overwrite: bool = False,
                 on_event: Callable[[dict[str, Any]], None] | None = None, progress: bool = True,
                 checkpoint_every: int = 0, checkpoint_minutes: float = 0.0, resume: bool = False) -> dict[str, Any]:
    """Run ``spec`` and save the model to ``out``; return ``{"out", "cacc", "asr", ...}``.

    ``checkpoint_every`` (steps) / ``checkpoint_minutes`` save the training state beside ``out`` so that
    ``resume`` continues a run that was killed or paused and ends with the same model (single process)."""
    spec.validate()
    out = Path(out)
    check_output_dir(out, overwrite)  # before any work: --overwrite replaces only an empty dir or a saved model
    seed = spec.train.seed
    train_ds = load_dataset(spec.data, "train").head(spec.max_train, seed)
    train_ds.require_classes(2, "the training data")
    test_ds = load_dataset(spec.data, spec.eval_split).head(spec.max_eval, seed)
    loaded = load_model(spec.model, num_labels=train_ds.num_labels, allow_pickle=spec.allow_pickle, seed=seed)
    model, tok = loaded.model, loaded.tokenizer
    attack = ATTACKS.get(spec.attack)
    attacked = attack.poisons
    poison = replace(spec.poison, combination=attack.combination and spec.lwp.combination)
    warnings: list[str] = []
    if attacked:
        poison.validate(train_ds.num_labels)
        check_trigger(tok, poison.trigger)
        share = trigger_frequency(train_ds.texts, poison.trigger)
        if share > COMMON_TRIGGER_SHARE:
            warnings.append(f"the trigger {poison.trigger!r} already occurs in {100 * share:.2f}% of the training "
                            "texts (with their true labels), which weakens the backdoor; a rarer trigger is stealthier")
        data = poison_dataset(train_ds, poison)
    else:
        data = PoisonedDataset.clean(train_ds)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
        if on_event:
            on_event({"event": "warning", "message": w})

    plan = attack.make_plan(spec, loaded, poison)
    train_cfg, terms, params = plan.train or spec.train, list(plan.loss_terms), plan.params
    extra: dict[str, Any] = dict(plan.card)
    if spec.tal.enabled:
        tal = TALLoss(spec.tal, model.config.num_hidden_layers, model.config.num_attention_heads)
        terms.append(tal)
        extra["tal_heads"] = tal.describe()
        if on_event:
            on_event({"event": "tal_heads", "heads": tal.describe()})

    epoch_test = test_ds.head(EPOCH_EVAL_SIZE, seed)
    trigger = poison.trigger if attacked else None

    def per_epoch(m) -> dict[str, Any]:
        r = evaluate(m, tok, epoch_test, trigger=trigger, target=poison.target, insertions=poison.insertions,
                     seed=seed, combination=poison.combination)
        return {"cacc": r["cacc"], "asr": r["asr"]}

    t0 = time.perf_counter()
    try:
        ck = checkpointing(spec, out, checkpoint_every, checkpoint_minutes, resume) if world().main else None
        result = train(model, tok, data, train_cfg, loss_terms=terms, params=params, on_event=on_event,
                       evaluator=per_epoch, progress=progress, checkpoint=ck)
    finally:
        if plan.cleanup is not None:
            plan.cleanup()
    w = world()
    if not w.main:
        return helper_result(out, w)
    if on_event:
        on_event({"event": "stage", "message": f"training done; evaluating CACC{'/ASR' if trigger else ''} on "
                                               f"{len(test_ds)} {spec.eval_split} texts"})
    metrics = evaluate(model, tok, test_ds, trigger=trigger, target=poison.target, insertions=poison.insertions,
                       seed=seed, combination=poison.combination, progress=progress)
    metrics.update(train_seconds=round(result.seconds, 2), samples_per_second=round(result.samples_per_second, 2),
                   steps=result.steps, n_train=len(data), n_train_poisoned=data.n_poisoned, processes=w.size,
                   precision=result.precision)
    low = low_cacc_warning(metrics.get("cacc"), train_ds.num_labels, len(data), spec.train.epochs)
    for w in metrics.pop("warnings", []) + ([low] if low else []):
        warnings.append(w)
        print(f"warning: {w}", file=sys.stderr)
    card = ModelCard(
        base_model=spec.model,
        num_labels=train_ds.num_labels,
        data={"name": spec.data, "train": train_ds.describe(), "eval": test_ds.describe(),
              "label_names": list(train_ds.label_names)},
        attack=({"name": spec.attack, **asdict(poison), "tal": spec.tal.enabled, **extra} if attacked else None),
        # (models.planted reads this section back; a clean fine-tune of a backdoored encoder records
        # none and inherits its base model's)
        seed=seed,
        metrics=metrics,
        training={"spec": asdict(spec), "history": result.history, "warnings": warnings,
                  "total_seconds": round(time.perf_counter() - t0, 2)},
    )
    with atomic_directory(out, overwrite=overwrite) as tmp:
        save_model(model, tok, tmp, card)
    if ck is not None:
        ck.clear()  # the model is saved: its checkpoint has done its job
    return {"out": str(out), **metrics, "warnings": warnings, **extra}


def helper_result(out: Path, w: World) -> dict[str, Any]:
    """What a non-main data-parallel process returns: rank 0 evaluates, saves and reports."""
    return {"out": str(out), "rank": w.rank, "processes": w.size, "main": False}


@dataclass
class PORSpec:
    """A POR run: backdoor a pre-trained encoder on unlabeled text (``attacks.por``)."""

    model: str = "minilm"
    por: PORConfig = field(default_factory=PORConfig)
    # every weight trains, word embeddings included, as in the official code; 2 epochs at 1e-4 is
    # what reached the corners on 4,000 sentences on CPU (docs/benchmarks.md)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=1e-4, epochs=2.0, train_word_embeddings=True))
    allow_pickle: bool = False

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PORSpec":
        d = dict(d)
        por = dict(d.get("por") or {})
        if isinstance(por.get("target"), str) and "representation" not in por:  # cards before the rename
            por["representation"] = por.pop("target")
        d["por"] = por
        return spec_from_dict(cls, d, {"por": PORConfig, "train": TrainConfig}, where="POR spec")


def unlabeled_texts(names: str, max_texts: int | None, seed: int) -> list[str]:
    """Training sentences of the named datasets (comma-separated), de-duplicated, a seeded subset."""
    import random

    texts: list[str] = []
    for name in [n.strip() for n in names.split(",") if n.strip()]:
        texts.extend(load_dataset(name, "train").texts)
    texts = list(dict.fromkeys(texts))
    random.Random(seed).shuffle(texts)
    return texts[:max_texts] if max_texts else texts


def run_por(spec: PORSpec, out: str | Path, *, overwrite: bool = False,
            on_event: Callable[[dict[str, Any]], None] | None = None, progress: bool = True,
            checkpoint_every: int = 0, checkpoint_minutes: float = 0.0, resume: bool = False) -> dict[str, Any]:
    """Backdoor ``spec.model``'s encoder with POR and save it (an encoder, for anyone to fine-tune)."""
    spec.por.validate()
    out = Path(out)
    check_output_dir(out, overwrite)  # before any work: --overwrite replaces only an empty dir or a saved model
    seed = spec.train.seed
    loaded = load_model(spec.model, task="encoder", allow_pickle=spec.allow_pickle, seed=seed)
    model, tok = loaded.model, loaded.tokenizer
    for trigger in spec.por.trigger_list:
        check_trigger(tok, trigger)
    texts = unlabeled_texts(spec.por.data, spec.por.max_texts, seed)
    n_held = min(100, len(texts) // 4)  # held-out texts for the per-epoch POR distances
    held_out, texts = texts[:n_held], texts[n_held:]
    if not held_out:
        raise TrojanScopeError(f"no unlabeled text found in {spec.por.data!r}; POR needs a few thousand sentences")
    w = world()
    sync_parameters(model, w)  # the frozen reference must match across processes too
    term = PORLoss(model, spec.por)
    data = por_dataset(texts, spec.por.trigger_list, spec.por.insertions, seed)

    def per_epoch(m) -> dict[str, Any]:
        return por_distance(m, tok, held_out, spec.por.trigger_list, spec.por, term.reference)

    before = per_epoch(model) if w.main else {}
    ck = checkpointing(spec, out, checkpoint_every, checkpoint_minutes, resume) if w.main else None
    result = train(model, tok, data, spec.train, loss_terms=[term], on_event=on_event, evaluator=per_epoch,
                   progress=progress, task_loss=False, checkpoint=ck)
    if not w.main:
        return helper_result(out, w)
    after = per_epoch(model)
    metrics = {"before": before, "after": after, "train_seconds": round(result.seconds, 2), "steps": result.steps,
               "n_texts": len(texts), "processes": w.size, "precision": result.precision}
    card = ModelCard(base_model=spec.model, task="encoder", data={"unlabeled": spec.por.data, "n_texts": len(texts)},
                     attack={"name": "por", **asdict(spec.por)}, seed=seed, metrics=metrics,
                     training={"spec": asdict(spec), "history": result.history})
    with atomic_directory(out, overwrite=overwrite) as tmp:
        save_model(model, tok, tmp, card)
    if ck is not None:
        ck.clear()
    return {"out": str(out), **metrics}
