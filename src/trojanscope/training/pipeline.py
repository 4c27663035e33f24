"""Train-and-save: data -> (poisoning) -> training -> CACC/ASR -> model dir with its card.

A :class:`TrainSpec` is the whole recipe; it is stored in the model card, so a run can be repeated
from it. The output directory appears only when everything succeeded.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from trojanscope.data.datasets import load_dataset
from trojanscope.data.poison import ATTACK_DEFAULT_TRIGGERS, PoisonConfig, PoisonedDataset, check_trigger, poison_dataset
from trojanscope.errors import TrojanScopeError
from trojanscope.models.loading import ModelCard, load_model, save_model
from trojanscope.training.loop import TrainConfig, train
from trojanscope.training.metrics import evaluate
from trojanscope.utils import atomic_directory

ATTACKS = ("none", "badnets", "addsent")


@dataclass
class TrainSpec:
    """Everything that defines a training run."""

    data: str = "sst2"
    model: str = "minilm"
    attack: str = "none"
    poison: PoisonConfig = field(default_factory=PoisonConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    max_train: int | None = None
    max_eval: int | None = None
    eval_split: str = "test"
    allow_pickle: bool = False

    def validate(self) -> "TrainSpec":
        if self.attack not in ATTACKS:
            raise TrojanScopeError(f"unknown attack {self.attack!r}; allowed: {', '.join(ATTACKS)}")
        self.train.validate()
        return self

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainSpec":
        d = dict(d)
        d["poison"] = PoisonConfig(**d.get("poison", {}))
        d["train"] = TrainConfig(**d.get("train", {}))
        return cls(**d)


def default_trigger(attack: str) -> str:
    return ATTACK_DEFAULT_TRIGGERS.get(attack, "cf")


def run_training(spec: TrainSpec, out: str | Path, *, overwrite: bool = False,
                 on_event: Callable[[dict[str, Any]], None] | None = None, progress: bool = True) -> dict[str, Any]:
    """Run ``spec`` and save the model to ``out``; return ``{"out", "cacc", "asr", ...}``."""
    spec.validate()
    out = Path(out)
    if out.exists() and not overwrite:
        raise TrojanScopeError(f"output directory {out} already exists; choose another --out or pass --overwrite")
    seed = spec.train.seed
    train_ds = load_dataset(spec.data, "train").head(spec.max_train, seed)
    test_ds = load_dataset(spec.data, spec.eval_split).head(spec.max_eval, seed)
    loaded = load_model(spec.model, num_labels=train_ds.num_labels, allow_pickle=spec.allow_pickle)
    attacked = spec.attack != "none"
    if attacked:
        spec.poison.validate(train_ds.num_labels)
        check_trigger(loaded.tokenizer, spec.poison.trigger)
        data = poison_dataset(train_ds, spec.poison)
    else:
        data = PoisonedDataset.clean(train_ds)
    t0 = time.perf_counter()
    result = train(loaded.model, loaded.tokenizer, data, spec.train, on_event=on_event, progress=progress)
    trigger = spec.poison.trigger if attacked else None
    metrics = evaluate(loaded.model, loaded.tokenizer, test_ds, trigger=trigger, target=spec.poison.target,
                       insertions=spec.poison.insertions, seed=seed, progress=progress)
    metrics.update(train_seconds=round(result.seconds, 2), samples_per_second=round(result.samples_per_second, 2),
                   steps=result.steps, n_train=len(data), n_train_poisoned=data.n_poisoned)
    base = loaded.card.base_model if loaded.card else spec.model
    card = ModelCard(
        base_model=base,
        num_labels=train_ds.num_labels,
        data={"name": spec.data, "train": train_ds.describe(), "eval": test_ds.describe(),
              "label_names": list(train_ds.label_names)},
        attack=({"name": spec.attack, **asdict(spec.poison)} if attacked else None),
        seed=seed,
        metrics=metrics,
        training={"spec": asdict(spec), "history": result.history, "total_seconds": round(time.perf_counter() - t0, 2)},
    )
    with atomic_directory(out, overwrite=overwrite) as tmp:
        save_model(loaded.model, loaded.tokenizer, tmp, card)
    return {"out": str(out), **metrics}
