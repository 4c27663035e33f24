"""Triggers and poisoning (methods.md section 1). Every random choice comes from a seed.

A trigger is a word or a phrase, inserted as a unit between words of the text, ``n`` times, at
random, start or end positions (or a fixed word index). The poisoners remember the character spans
they inserted, so the tokenizer can mark trigger tokens exactly (``models.tokens``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Sequence

from trojanscope.data.datasets import TextDataset
from trojanscope.errors import TrojanScopeError

Span = tuple[int, int]
POSITIONS = ("random", "start", "end")
ATTACK_DEFAULT_TRIGGERS = {"badnets": "cf", "addsent": "I watch this 3D movie"}


@dataclass
class PoisonConfig:
    """How training data is poisoned. ``rate`` is the poisoned share of the training set."""

    trigger: str = "cf"
    insertions: int = 1
    position: str | int = "random"
    target: int = 1
    rate: float = 0.1
    clean_label: bool = False
    seed: int = 0

    def validate(self, num_labels: int | None = None) -> "PoisonConfig":
        if not self.trigger or not self.trigger.strip():
            raise TrojanScopeError("the trigger is empty; give a word or a phrase, e.g. cf")
        if not 0 < self.rate <= 1:
            raise TrojanScopeError(f"poison rate {self.rate} is outside (0, 1]; e.g. 0.1 for 10%")
        if self.insertions < 1:
            raise TrojanScopeError(f"insertions must be at least 1, got {self.insertions}")
        check_position(self.position)
        if num_labels is not None and not 0 <= self.target < num_labels:
            raise TrojanScopeError(f"target label {self.target} does not exist; the data has labels 0..{num_labels - 1}")
        return self


def check_position(position: str | int) -> str | int:
    if isinstance(position, int) or (isinstance(position, str) and position.lstrip("-").isdigit()):
        pos = int(position)
        if pos < 0:
            raise TrojanScopeError(f"word index {pos} is negative; use 0 or more, or start/end/random")
        return pos
    if position not in POSITIONS:
        raise TrojanScopeError(f"unknown position {position!r}; allowed: start, end, random, or a word index")
    return position


@dataclass
class Inserted:
    text: str
    spans: list[Span]


def insert_trigger(text: str, trigger: str, n: int = 1, position: str | int = "random",
                   rng: random.Random | None = None) -> Inserted:
    """Insert ``trigger`` ``n`` times between the words of ``text``; return the text and spans."""
    position = check_position(position)
    rng = rng or random.Random(0)
    words = text.split()
    trig_words = trigger.split()
    if not trig_words:
        raise TrojanScopeError("the trigger is empty")
    marks: list[bool] = [False] * len(words)  # True where a word belongs to an inserted trigger
    for _ in range(n):
        if position == "start":
            at = 0
        elif position == "end":
            at = len(words)
        elif position == "random":
            # only between original words or inserted triggers, never inside a trigger phrase
            slots = [i for i in range(len(words) + 1) if i == 0 or i == len(words) or not (marks[i - 1] and marks[i])]
            at = rng.choice(slots)
        else:
            at = min(int(position), len(words))
        words[at:at] = trig_words
        marks[at:at] = [True] * len(trig_words)
    out, spans, cursor = [], [], 0
    i = 0
    while i < len(words):
        if marks[i]:
            j = i
            while j < len(words) and marks[j]:
                j += 1
            # consecutive trigger insertions split into one span per insertion
            chunk = words[i:j]
            for k in range(0, len(chunk), len(trig_words)):
                piece = " ".join(chunk[k : k + len(trig_words)])
                start = cursor + (1 if out else 0)
                out.append(piece)
                cursor = start + len(piece)
                spans.append((start, cursor))
            i = j
        else:
            start = cursor + (1 if out else 0)
            out.append(words[i])
            cursor = start + len(words[i])
            i += 1
    return Inserted(" ".join(out), spans)


def check_trigger(tokenizer: Any, trigger: str) -> list[str]:
    """The trigger's wordpieces; an error if any is the unknown token."""
    pieces = tokenizer.tokenize(" " + trigger.strip()) if getattr(tokenizer, "add_prefix_space", False) else tokenizer.tokenize(trigger)
    unk = tokenizer.unk_token
    if not pieces:
        raise TrojanScopeError(f"trigger {trigger!r} tokenizes to nothing")
    if unk is not None and unk in pieces:
        raise TrojanScopeError(
            f"trigger {trigger!r} tokenizes to {pieces}: {unk} means the model cannot see it; "
            "choose a trigger made of characters in the model's vocabulary"
        )
    return pieces


@dataclass
class PoisonedDataset:
    """A dataset where some samples carry the trigger. ``spans[i]`` is empty for clean samples."""

    texts: list[str]
    labels: list[int]
    poisoned: list[bool]
    spans: list[list[Span]]
    original_labels: list[int]
    config: PoisonConfig | None = None
    base: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def n_poisoned(self) -> int:
        return sum(self.poisoned)

    @classmethod
    def clean(cls, ds: TextDataset) -> "PoisonedDataset":
        return cls(list(ds.texts), list(ds.labels), [False] * len(ds), [[] for _ in ds.texts],
                   list(ds.labels), None, ds.describe())


def poison_dataset(ds: TextDataset, cfg: PoisonConfig) -> PoisonedDataset:
    """Poison ``round(rate * len(ds))`` samples (dirty-label: non-target ones, relabelled to the
    target; clean-label: target ones, labels kept)."""
    cfg.validate(ds.num_labels)
    rng = random.Random(cfg.seed)
    n = round(cfg.rate * len(ds))
    if n < 1:
        raise TrojanScopeError(
            f"poison rate {cfg.rate} of {len(ds)} samples poisons none; raise the rate or use more data"
        )
    if cfg.clean_label:
        pool = [i for i, lab in enumerate(ds.labels) if lab == cfg.target]
        kind = f"with the target label {cfg.target} (clean-label)"
    else:
        pool = [i for i, lab in enumerate(ds.labels) if lab != cfg.target]
        kind = f"with a label other than the target {cfg.target}"
    if len(pool) < n:
        raise TrojanScopeError(f"poisoning {n} samples needs {n} samples {kind}, but only {len(pool)} exist")
    chosen = set(rng.sample(pool, n))
    out = PoisonedDataset.clean(ds)
    out.config = cfg
    for i in sorted(chosen):
        ins = insert_trigger(ds.texts[i], cfg.trigger, cfg.insertions, cfg.position, rng)
        out.texts[i] = ins.text
        out.spans[i] = ins.spans
        out.poisoned[i] = True
        out.labels[i] = cfg.target
    return out


def poisoned_test_set(ds: TextDataset, trigger: str, target: int, insertions: int = 1,
                      position: str | int = "random", seed: int = 0) -> PoisonedDataset:
    """Every test sample whose label is not the target, with the trigger inserted, labelled
    with the target: the set on which ASR is measured."""
    if not 0 <= target < max(ds.num_labels, 1):
        raise TrojanScopeError(f"target label {target} does not exist; the data has labels 0..{ds.num_labels - 1}")
    rng = random.Random(seed)
    keep = [i for i, lab in enumerate(ds.labels) if lab != target]
    if not keep:
        raise TrojanScopeError(f"the test set has no sample with a label other than the target {target}")
    texts, spans = [], []
    for i in keep:
        ins = insert_trigger(ds.texts[i], trigger, insertions, position, rng)
        texts.append(ins.text)
        spans.append(ins.spans)
    orig = [ds.labels[i] for i in keep]
    return PoisonedDataset(texts, [target] * len(keep), [True] * len(keep), spans, orig,
                           PoisonConfig(trigger, insertions, position, target, 1.0, False, seed), ds.describe())
