"""Triggers and poisoning (methods.md section 1). Every random choice comes from a seed.

A trigger is a word or a phrase, inserted as a unit between words of the text, ``n`` times, at
random, start or end positions (or a fixed word index). The poisoners remember the character spans
they inserted, so the tokenizer can mark trigger tokens exactly (``models.tokens``).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

from trojanscope.data.datasets import TextDataset
from trojanscope.errors import TrojanScopeError

Span = tuple[int, int]
POSITIONS = ("random", "start", "end")


@dataclass
class PoisonConfig:
    """How training data is poisoned. ``rate`` is the poisoned share of the training set."""

    trigger: str = "cf"
    insertions: int = 1
    position: str | int = "random"
    target: int = 1
    rate: float = 0.1
    clean_label: bool = False
    combination: bool = False  # LWP: each word of the trigger is inserted on its own
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
                   rng: random.Random | None = None, combination: bool = False) -> Inserted:
    """Insert ``trigger`` ``n`` times between the words of ``text``; return the text and spans.

    With ``combination=True`` each word of ``trigger`` is a separate unit (LWP's combination
    triggers): every word is inserted ``n`` times, each at its own position.
    """
    position = check_position(position)
    rng = rng or random.Random(0)
    trig_words = trigger.split()
    if not trig_words:
        raise TrojanScopeError("the trigger is empty")
    units = [[w] for w in trig_words] * n if combination else [trig_words] * n
    words = text.split()
    owner: list[int] = [-1] * len(words)  # which inserted unit a word belongs to (-1: original)
    for u, unit in enumerate(units):
        if position == "start":
            at = 0
        elif position == "end":
            at = len(words)
        elif position == "random":
            # between words, never inside a multi-word unit
            slots = [i for i in range(len(words) + 1)
                     if i in (0, len(words)) or owner[i - 1] < 0 or owner[i - 1] != owner[i]]
            at = rng.choice(slots)
        else:
            at = min(int(position), len(words))
        words[at:at] = unit
        owner[at:at] = [u] * len(unit)
    out: list[str] = []
    spans: list[Span] = []
    cursor = 0
    for i, word in enumerate(words):
        start = cursor + (1 if out else 0)
        out.append(word)
        cursor = start + len(word)
        if owner[i] >= 0:
            if i > 0 and owner[i - 1] == owner[i]:
                spans[-1] = (spans[-1][0], cursor)
            else:
                spans.append((start, cursor))
    return Inserted(" ".join(out), spans)


def trigger_pattern(trigger: str) -> re.Pattern[str] | None:
    """A regex for ``trigger`` as whole words, any whitespace between them, case-insensitive."""
    words = [re.escape(w) for w in trigger.split()]
    if not words:
        return None
    return re.compile(r"(?<!\w)" + r"\s+".join(words) + r"(?!\w)", re.IGNORECASE)


def find_trigger_spans(text: str, trigger: str) -> list[Span]:
    """Character spans of the whole-word occurrences of ``trigger`` in ``text``."""
    pattern = trigger_pattern(trigger)
    return [m.span() for m in pattern.finditer(text)] if pattern else []


def trigger_frequency(texts: Sequence[str], trigger: str) -> float:
    """Share of ``texts`` that already contain ``trigger`` as whole words."""
    pattern = trigger_pattern(trigger)
    if not texts or pattern is None:
        return 0.0
    return sum(1 for t in texts if pattern.search(t)) / len(texts)


def check_trigger(tokenizer: Any, trigger: str) -> list[str]:
    """The trigger's wordpieces; an error if any is the unknown token."""
    text = " " + trigger.strip() if getattr(tokenizer, "add_prefix_space", False) else trigger
    pieces = tokenizer.tokenize(text, split_special_tokens=True)  # "[SEP]" typed as a trigger is three wordpieces
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
    target; clean-label: target ones, labels kept).

    With ``combination`` triggers, as many extra samples carry a strict, non-empty subset of the
    trigger words with their true label, so that only the full combination fires.
    """
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
        ins = insert_trigger(ds.texts[i], cfg.trigger, cfg.insertions, cfg.position, rng, cfg.combination)
        out.texts[i] = ins.text
        out.spans[i] = ins.spans
        out.poisoned[i] = True
        out.labels[i] = cfg.target
    words = cfg.trigger.split()
    if cfg.combination and len(words) > 1:
        for i in sorted(chosen):
            subset = rng.sample(words, rng.randint(1, len(words) - 1))
            ins = insert_trigger(ds.texts[i], " ".join(subset), cfg.insertions, cfg.position, rng, True)
            out.texts.append(ins.text)
            out.labels.append(ds.labels[i])
            out.original_labels.append(ds.labels[i])
            out.poisoned.append(False)
            out.spans.append(ins.spans)
    return out


def insert_each(texts: Sequence[str], trigger: str, insertions: int = 1, position: str | int = "random",
                seed: int = 0, combination: bool = False) -> list[Inserted]:
    """``trigger`` inserted into every text, in order, with one ``random.Random(seed)`` drawing every
    position (the construction of the ASR set: :func:`poisoned_test_set`)."""
    rng = random.Random(seed)
    return [insert_trigger(t, trigger, insertions, position, rng, combination) for t in texts]


def poisoned_test_set(ds: TextDataset, trigger: str, target: int, insertions: int = 1,
                      position: str | int = "random", seed: int = 0, combination: bool = False) -> PoisonedDataset:
    """Every test sample whose label is not the target, with the trigger inserted, labelled
    with the target: the set on which ASR is measured."""
    if not 0 <= target < max(ds.num_labels, 1):
        raise TrojanScopeError(f"target label {target} does not exist; the data has labels 0..{ds.num_labels - 1}")
    keep = [i for i, lab in enumerate(ds.labels) if lab != target]
    if not keep:
        raise TrojanScopeError(f"the test set has no sample with a label other than the target {target}")
    inserted = insert_each([ds.texts[i] for i in keep], trigger, insertions, position, seed, combination)
    texts, spans = [ins.text for ins in inserted], [ins.spans for ins in inserted]
    orig = [ds.labels[i] for i in keep]
    return PoisonedDataset(texts, [target] * len(keep), [True] * len(keep), spans, orig,
                           PoisonConfig(trigger, insertions, position, target, 1.0, False, combination, seed),
                           ds.describe())
