"""Token splitting: the augmentation MBTSAD and TS-FT train on (methods.md section 4, step 1).

nlpaug's ``SplitAug`` with its defaults, as the seed uses it (``tests/test_splitting_nlpaug.py`` checks this
against nlpaug itself). A text is read as nlpaug's tokenizer reads it: runs of word characters (letters, digits,
``_``) and single punctuation marks (``re-imagining,`` is ``re``, ``-``, ``imagining``, ``,``). Each variant splits
``ceil(ratio x tokens)`` words (all tokens counted, punctuation included; at least 1, at most ``max_words``),
capped by the number of candidates, the words of at least ``min_len`` characters; each chosen word is cut
after 1 to ``len - 2`` of its characters (``beauty`` -> ``b eauty`` ... ``beau ty``: the tail keeps two).

nlpaug also re-spaces the punctuation it separated (``re - imagining``); here the text keeps its own spacing
and only the cuts insert a space. A BERT tokenizer splits punctuation off either way, so the model sees the
same wordpieces. On the first 400 SST-2 training sentences both make 6.425 splits per sentence. (Until issue 23
this took 30% of the candidates, rounded, and allowed one-letter tails: 3.18 per sentence.)

Every choice is seeded per text and variant (:func:`variant_rng`), so a text's variants do not
depend on which other texts are augmented with it, nor on batching. Nothing is registered in
``DEFENSES``: this is an augmentation, used by TS-FT, MBTSAD, ``trojanscope augment`` and the
representation map. It is a text transform, so it lives in the data layer, below both the defenses
and the analyses (``defenses.splitting`` re-exports it; ``data.augment`` registers the others).
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from dataclasses import dataclass, field
from typing import Callable, Sequence

from trojanscope.errors import TrojanScopeError
from trojanscope.registry import Registry

WORD = re.compile(r"\w+")  # a run of word characters (any script, digits too): nlpaug's word tokens
TOKEN = re.compile(r"\w+|[^\w\s]")  # nlpaug's tokens: words and single punctuation marks


@dataclass
class SplitConfig:
    """Token-splitting knobs (defaults: SplitAug's and the seed's)."""

    k: int = 3  # augmented variants per clean text
    ratio: float = 0.3  # SplitAug's aug_p: words split per variant = ceil(ratio x all tokens), capped
    min_len: int = 4  # a word needs this many characters to be split (SplitAug's min_char)
    max_words: int = 10  # at most this many splits per text (and at least 1, where a candidate exists)
    seed: int = 0

    def validate(self) -> "SplitConfig":
        if self.k < 1:
            raise TrojanScopeError(f"k (variants per text) must be at least 1, got {self.k}")
        if not 0 < self.ratio <= 1:
            raise TrojanScopeError(f"the split ratio must be in (0, 1], got {self.ratio}")
        if self.min_len < 3:
            raise TrojanScopeError(f"min_len must be at least 3 (a cut leaves at least one character before it "
                                   f"and two after), got {self.min_len}")
        if self.max_words < 1:
            raise TrojanScopeError(f"max_words must be at least 1, got {self.max_words}")
        return self


@dataclass(frozen=True)
class Split:
    """One split: the word ``word`` at character offset ``start`` of the original text, split after
    ``cut`` of its letters."""

    start: int
    word: str
    cut: int

    @property
    def parts(self) -> tuple[str, str]:
        return self.word[: self.cut], self.word[self.cut:]


def variant_rng(seed: int, index: int, variant: int) -> random.Random:
    """The random source of variant ``variant`` of text ``index``: a function of the three numbers only."""
    digest = hashlib.sha256(f"token-split:{seed}:{index}:{variant}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def tokens(text: str) -> list[str]:
    """nlpaug's tokens of ``text``: runs of word characters and single punctuation marks."""
    return TOKEN.findall(text)


def candidates(text: str, min_len: int = 4) -> list[tuple[int, str]]:
    """``(offset, word)`` of every word (run of word characters) of at least ``min_len``, in text order."""
    return [(m.start(), m.group()) for m in WORD.finditer(text) if len(m.group()) >= min_len]


def n_splits(n_tokens: int, n_candidates: int | None = None, ratio: float = 0.3, max_words: int = 10) -> int:
    """How many words one variant splits: ``ceil(ratio x n_tokens)``, at least 1 and at most ``max_words``
    (SplitAug's aug_p, aug_min and aug_max), then at most ``n_candidates`` (default: all tokens qualify).
    The ceiling is nlpaug's, of the same floating-point product."""
    n_candidates = n_tokens if n_candidates is None else n_candidates
    if n_tokens <= 0 or n_candidates <= 0:
        return 0
    return min(n_candidates, max(1, min(max_words, math.ceil(ratio * n_tokens))))


def split_text(text: str, rng: random.Random, *, ratio: float = 0.3, min_len: int = 4,
               max_words: int = 10) -> tuple[str, list[Split]]:
    """One token-split variant of ``text`` and the splits made (in text order). A text without a
    word of ``min_len`` characters comes back unchanged."""
    cands = candidates(text, min_len)
    chosen = sorted(rng.sample(range(len(cands)), n_splits(len(tokens(text)), len(cands), ratio, max_words)))
    splits = []
    for i in chosen:
        start, word = cands[i]
        splits.append(Split(start, word, rng.randint(1, len(word) - 2)))  # nlpaug: randint(1, len - 1), exclusive
    pieces, pos = [], 0
    for s in splits:
        cut_at = s.start + s.cut
        pieces.append(text[pos:cut_at])
        pieces.append(" ")
        pos = cut_at
    pieces.append(text[pos:])
    return "".join(pieces), splits


def split_variants(text: str, index: int = 0, cfg: SplitConfig | None = None) -> list[str]:
    """The ``cfg.k`` variants of ``text`` as the ``index``-th text of a data set (the preview)."""
    cfg = (cfg or SplitConfig()).validate()
    return [split_text(text, variant_rng(cfg.seed, index, v), ratio=cfg.ratio, min_len=cfg.min_len,
                       max_words=cfg.max_words)[0] for v in range(cfg.k)]


def split_texts(texts: Sequence[str], labels: Sequence[int], k: int = 3, seed: int = 0, ratio: float = 0.3,
                min_len: int = 4, max_words: int = 10) -> tuple[list[str], list[int]]:
    """``D_ts``: ``k`` token-split variants of every text, each with its text's label, text by text
    (variants of text 0, then of text 1, ...): ``k * len(texts)`` texts and labels."""
    if len(texts) != len(labels):
        raise TrojanScopeError(f"{len(texts)} texts but {len(labels)} labels")
    cfg = SplitConfig(k=k, ratio=ratio, min_len=min_len, max_words=max_words, seed=seed).validate()
    out_texts: list[str] = []
    out_labels: list[int] = []
    for i, (text, label) in enumerate(zip(texts, labels)):
        out_texts.extend(split_variants(text, i, cfg))
        out_labels.extend([label] * cfg.k)
    return out_texts, out_labels


def split_dataset(ds, cfg: SplitConfig):
    """A ``TextDataset`` of ``cfg.k`` token-split variants per text of ``ds`` (same name and labels)."""
    from trojanscope.data.datasets import TextDataset

    texts, labels = split_texts(ds.texts, ds.labels, cfg.k, cfg.seed, cfg.ratio, cfg.min_len, cfg.max_words)
    return TextDataset(texts, labels, ds.name, f"{ds.split}+split", ds.source, ds.label_names)


@dataclass(frozen=True)
class Augmentation:
    """A text augmentation for ``trojanscope augment`` and the representation map:
    ``run(texts, labels, k, seed) -> (texts, labels)``."""

    name: str
    description: str
    run: Callable[..., tuple[list[str], list[int]]]
    options: dict[str, str] = field(default_factory=dict)


AUGMENTATIONS: Registry[Augmentation] = Registry("augmentation")
AUGMENTATIONS.register("split", Augmentation(
    "split", "token splitting (nlpaug's SplitAug): ceil(30% of the tokens) words of 4+ characters (at most 10) "
    "split in two at a random position", split_texts,
    {"ratio": "SplitAug's aug_p: ceil(ratio x tokens) words split", "min_len": "characters a word needs",
     "max_words": "most splits per text"}))
