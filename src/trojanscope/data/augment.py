"""The augmentations the seed compares token splitting with (seed Table III, Fig. 3), registered
beside ``split`` in ``data.splitting.AUGMENTATIONS``:

- ``eda``: EDA's operations that need no thesaurus: random swap, random deletion and random
  insertion of a word already in the text, each with probability ``alpha`` per word (EDA's synonym
  replacement needs WordNet, which cannot be downloaded here; the three operations kept are EDA's
  own). One operation per variant, drawn from the seed.
- ``aeda``: AEDA: punctuation marks (. ; ? : ! ,) inserted at random positions, between 1 and a
  third of the text's length of them.
- ``addtrig``: "Add Trig": a random rare word (default ``cb``) inserted once at a random position.

All are seeded per text and variant, like token splitting, and keep each text's label. They are text
transforms, so they live in the data layer, below the defenses that train on them and the analyses that
draw them (the representation map); ``defenses.augmentations`` re-exports this module.
"""

from __future__ import annotations

import random
from typing import Sequence

from trojanscope.data.splitting import AUGMENTATIONS, Augmentation, variant_rng
from trojanscope.errors import TrojanScopeError

PUNCTUATION = (".", ";", "?", ":", "!", ",")


def _variants(texts: Sequence[str], labels: Sequence[int], k: int, seed: int, one) -> tuple[list[str], list[int]]:
    if len(texts) != len(labels):
        raise TrojanScopeError(f"{len(texts)} texts but {len(labels)} labels")
    if k < 1:
        raise TrojanScopeError(f"k must be at least 1 (variants per text), got {k}")
    out_t: list[str] = []
    out_l: list[int] = []
    for i, (text, label) in enumerate(zip(texts, labels)):
        for v in range(k):
            out_t.append(one(text, variant_rng(seed, i, v)))
            out_l.append(label)
    return out_t, out_l


def eda_text(text: str, rng: random.Random, alpha: float = 0.1) -> str:
    words = text.split()
    if len(words) < 2:
        return text
    n = max(1, round(alpha * len(words)))
    op = rng.choice(("swap", "delete", "insert"))
    if op == "swap":
        for _ in range(n):
            a, b = rng.randrange(len(words)), rng.randrange(len(words))
            words[a], words[b] = words[b], words[a]
    elif op == "delete":
        kept = [w for w in words if rng.random() > alpha]
        words = kept or [rng.choice(words)]
    else:
        for _ in range(n):
            words.insert(rng.randint(0, len(words)), rng.choice(words))
    return " ".join(words)


def aeda_text(text: str, rng: random.Random) -> str:
    words = text.split()
    if not words:
        return text
    n = rng.randint(1, max(1, len(words) // 3))
    for _ in range(n):
        words.insert(rng.randint(0, len(words)), rng.choice(PUNCTUATION))
    return " ".join(words)


def addtrig_text(text: str, rng: random.Random, word: str = "cb") -> str:
    words = text.split()
    words.insert(rng.randint(0, len(words)), word)
    return " ".join(words)


def eda_texts(texts, labels, k: int = 3, seed: int = 0, alpha: float = 0.1):
    return _variants(texts, labels, k, seed, lambda t, r: eda_text(t, r, alpha))


def aeda_texts(texts, labels, k: int = 3, seed: int = 0):
    return _variants(texts, labels, k, seed, aeda_text)


def addtrig_texts(texts, labels, k: int = 3, seed: int = 0, word: str = "cb"):
    return _variants(texts, labels, k, seed, lambda t, r: addtrig_text(t, r, word))


for _name, _aug in (
    ("eda", Augmentation("eda", "EDA without a thesaurus: random swap, deletion or insertion of the text's own words",
                         eda_texts, {"alpha": "share of words touched"})),
    ("aeda", Augmentation("aeda", "AEDA: punctuation marks inserted at random positions", aeda_texts)),
    ("addtrig", Augmentation("addtrig", "Add Trig: a random rare word (cb) inserted once", addtrig_texts,
                             {"word": "the inserted word"})),
):
    if _name not in AUGMENTATIONS:
        AUGMENTATIONS.register(_name, _aug)


def augmentations():
    """Every augmentation, ``split`` first (importing this module registers the others)."""
    return AUGMENTATIONS
