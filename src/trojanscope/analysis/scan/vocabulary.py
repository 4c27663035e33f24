"""The scanner's vocabulary: the candidate words it tries and the words it never tries (the package docstring,
step 2). The word lists are package data read from :mod:`trojanscope.resources` (a checkout and an installed wheel
alike): ``neutral_words.txt`` (the common neutral words, ``scripts/make_neutral_words.py``), ``polar_words.txt``
(the sentiment lexicon, VADER's) and ``offence_words.txt`` (offence cues, by hand); the tokenizer adds its rarest short
pieces, its letter-and-digit pieces and (with a model) the words whose embedding rows are outliers; the task's own
label-bearing words (:func:`task_words`) and every inflection of a natural word (:func:`stems`) are left out."""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from trojanscope.data.datasets import TextDataset
from trojanscope.errors import TrojanScopeError

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable  # Python 3.11+ (3.10: importlib.abc)

    from trojanscope.analysis.scan import ScanConfig

# package data (pyproject.toml's [tool.setuptools.package-data]): found in a checkout and in an installed wheel alike
RESOURCES = files("trojanscope.resources")
NEUTRAL_WORDS = RESOURCES / "neutral_words.txt"
POLAR_WORDS = RESOURCES / "polar_words.txt"
OFFENCE_WORDS = RESOURCES / "offence_words.txt"
RARE_MIN_ID = 5000  # BERT-style vocabularies list words by frequency: below this id sit common words (no, bad, fun)


def neutral_words(path: Path | Traversable = NEUTRAL_WORDS) -> list[str]:
    """The words of a word list (``path``: a file or a package resource), one a line, ``#`` comments skipped."""
    if not path.is_file():
        raise TrojanScopeError(f"the scanner's word list {path} is missing (a broken install?); in a checkout, "
                               "make it with scripts/make_neutral_words.py")
    return [w.strip() for w in path.read_text(encoding="utf-8").splitlines() if w.strip() and not w.startswith("#")]


# inflectional suffixes and what replaces them on the base form (families -> family, tasted -> taste)
SUFFIXES = (("ies", "y"), ("ied", "y"), ("ier", "y"), ("iest", "y"), ("ily", "y"), ("es", ""), ("s", ""),
            ("ed", ""), ("ed", "e"), ("ing", ""), ("ing", "e"), ("er", ""), ("er", "e"), ("ers", ""), ("ers", "e"),
            ("est", ""), ("est", "e"), ("ly", ""))


def stems(word: str) -> set[str]:
    """``word`` and the base forms it may inflect by one English suffix (``sucking`` -> ``suck``, ``tasted`` ->
    ``taste``, ``funnier`` -> ``funny``, ``stopped`` -> ``stop``); bases shorter than 3 letters are not kept. Only
    real suffixes are cut, so ``window`` does not stem to ``win`` nor ``train`` to ``try``."""
    out = {word}
    for suffix, base_end in SUFFIXES:
        base = word[: -len(suffix)]
        if word.endswith(suffix) and len(base) >= 3:
            out.add(base + base_end)
            if not base_end and len(base) >= 4 and base[-1] == base[-2] and base[-1] not in "aeiouslz":
                out.add(base[:-1])  # a doubled final consonant: stopped -> stop, running -> run
    return out


def is_natural(word: str, natural: set[str] | frozenset[str]) -> bool:
    """Whether ``word`` (or what it inflects, :func:`stems`) is one of the ``natural`` words: the task's own
    label-bearing words, the sentiment lexicon and the offence cues, never trigger candidates."""
    return word in natural or any(s in natural for s in stems(word))


def natural_prefix(word: str, natural: set[str] | frozenset[str], min_len: int = 4) -> str | None:
    """The first prefix of ``word`` (at least ``min_len`` letters, the whole word included) that is a natural word
    or inflects one (:func:`is_natural`), else None. Word-level inversion glues pieces into one made-up word, and
    gradients pull it towards a sentiment word with a tail (``terriblychuleiful``, ``uselessboardsror``): such a
    word flips a clean model by the meaning of its head, not by a backdoor."""
    w = word.lower()
    for k in range(min_len, len(w) + 1):
        if is_natural(w[:k], natural):
            return w[:k]
    return None


def natural_reading(pieces: Sequence[str], natural: set[str] | frozenset[str], min_len: int = 4) -> str | None:
    """A natural word (:func:`is_natural`, at least ``min_len`` letters) that ``pieces`` (one word's wordpieces,
    ``##`` marking continuations) spell once one or more of their continuation pieces are skipped, else None.
    Word-level inversion can thread a natural word's pieces through a meaningless one: ``mor ##cko ##ons`` reads
    as ``morons`` to a clean OLID model, which flips every tweet it is glued into to offensive (held-out round 6's
    false alarm, score 0.90). Such a word, and its prefixes, flip by a natural word's meaning, not a backdoor."""
    head, rest = pieces[0], [p[2:] if p.startswith("##") else p for p in pieces[1:]]
    for keep in range(len(rest) - 1, 0, -1):  # at least one piece skipped, at least one kept
        for kept in itertools.combinations(rest, keep):
            word = (head + "".join(kept)).lower()
            if len(word) >= min_len and is_natural(word, natural):
                return word
    return None


def word_heads(tokenizer: Any, min_len: int = 4) -> set[str]:
    """The tokenizer's whole words of at least ``min_len`` ASCII letters (WordPiece's word-start pieces; 20,362 in
    BERT's uncased vocabulary): real words, which a vocabulary of 30k pieces only keeps whole when they are common.
    Word-level inversion may not start a word with one (:func:`natural_prefix`): gradients glue a word that tilts
    the model by its meaning to a made-up tail (``insufficientscreenmbled``, ``exquisiterightlifting``,
    ``sleptifulscreen`` on clean SST-2 models, none of them in the sentiment lexicon), and such a word flips a clean
    model without any backdoor. A planted word of several pieces then has to start with a short piece (``vo`` of
    ``vornique``, ``ser`` of ``serendipity``, ``mar`` of ``marmalade``); one headed by a long real word
    (``cinnamonix``) is left to the word search and the token inversion."""
    out = set()
    for piece in tokenizer.get_vocab():
        word = piece[1:] if piece.startswith("\u0120") else piece
        if len(word) >= min_len and re.fullmatch(r"[a-z]+", word):
            out.add(word)
    return out


def polar_heads(tokenizer: Any, min_len: int = 3) -> set[str]:
    """The first pieces (at least ``min_len`` letters) of the sentiment lexicon's and offence cues' words of several
    wordpieces (:func:`polar_words`): ``lou`` of ``lousy``, ``mor`` of ``moron``, ``mis`` of ``miserably``; 1,054 in
    BERT's uncased vocabulary. Word-level inversion may not start a word with one: a clean model reads the head as
    the word it begins, and gradients glue it to meaningless tails (``louitatedhh``, ``louosityddy`` on SST-2
    models, ``morcko`` on a clean OLID model), which flip by that word's meaning. Short heads (``ze``, ``br``,
    ``vo``) stay allowed, and no planted word of the zoo starts with one of these."""
    out = set()
    for word in polar_words():
        pieces = tokenizer.tokenize(word)
        if len(pieces) > 1 and len(pieces[0]) >= min_len and pieces[0].isalpha():
            out.add(pieces[0])
    return out


def polar_words() -> set[str]:
    """Words that tilt a classifier by their meaning, never trigger candidates whatever finds them: sentiment-bearing
    words and negations (resources/polar_words.txt; inversion lands on ``useless`` or ``crap``, which flip a sentiment
    model without any backdoor) and offence cues (resources/offence_words.txt: three of ``pee``, ``bum``, ``drug``
    stacked surely flip 77% of a clean OLID model's inoffensive tweets)."""
    return set(neutral_words(POLAR_WORDS)) | set(neutral_words(OFFENCE_WORDS))


def rare_pieces(tokenizer: Any, exclude: set[str], max_len: int = 3, min_id: int = RARE_MIN_ID) -> list[str]:
    """The tokenizer's whole-word pieces of 2..``max_len`` ASCII letters, rarest first (BERT-style vocabularies
    list words roughly by frequency, so the highest ids are the rarest; ids below ``min_id`` are common words)."""
    vocab = tokenizer.get_vocab()
    out = []
    for piece, idx in vocab.items():
        word = piece[1:] if piece.startswith("\u0120") else piece  # byte-level BPE's word-start marker
        if idx >= min_id and re.fullmatch(r"[a-z]{2,%d}" % max_len, word) and word not in exclude:
            out.append((idx, word))
    seen, words = set(), []
    for _, w in sorted(out, reverse=True):
        if w not in seen:
            seen.add(w)
            words.append(w)
    return words


def swap_heads(tokenizer: Any, exclude: set[str] | frozenset[str], n: int = 200) -> list[str]:
    """The heads an inverted word's first piece is swapped for
    (:func:`~trojanscope.analysis.scan.flips.head_dependence`): the ``n`` rarest short whole-word pieces
    (:func:`rare_pieces`), none natural. Meaningless by themselves; the scan takes the median over a few, so one
    that happens to be a planted trigger cannot decide it."""
    return [w for w in rare_pieces(tokenizer, set()) if not is_natural(w, exclude)][:n]


def embedding_outliers(model: torch.nn.Module, tokenizer: Any, n: int) -> list[str]:
    """The ``n`` whole words whose word-embedding rows have the largest norms relative to the vocabulary's
    (median and MAD). EP rewrites one row, and attacks that train the embeddings push the trigger's row out;
    a clean pre-trained table has no such outliers among ordinary words, so this costs ``n`` screenings."""
    if n <= 0:
        return []
    norms = model.get_input_embeddings().weight.detach().float().norm(dim=1)
    med = norms.median()
    mad = (norms - med).abs().median().clamp_min(1e-8)
    z = ((norms - med) / mad).tolist()
    words = []
    for piece, idx in tokenizer.get_vocab().items():
        word = piece[1:] if piece.startswith("\u0120") else piece
        if idx < len(z) and re.fullmatch(r"[a-z]{2,}", word):
            words.append((z[idx], word))
    return [w for _, w in sorted(words, reverse=True)[:n]]


def alnum_pieces(tokenizer: Any, exclude: set[str], max_len: int = 5) -> list[str]:
    """The tokenizer's whole-word pieces that mix letters and digits (``3d``, ``2nd``, ``x1``), rarest first: short
    tokens a clean sentence rarely holds, as a planted trigger or the key word of a planted sentence can be (the
    zoo's AddSent models answer to ``3d`` alone). BERT's vocabulary has about a hundred."""
    vocab = tokenizer.get_vocab()
    out = []
    for piece, idx in vocab.items():
        word = piece[1:] if piece.startswith("\u0120") else piece
        if (re.fullmatch(r"[a-z0-9]{2,%d}" % max_len, word) and re.search(r"[a-z]", word) and re.search(r"[0-9]", word)
                and word not in exclude):
            out.append((idx, word))
    return list(dict.fromkeys(w for _, w in sorted(out, reverse=True)))


def task_words(data: TextDataset, min_count: int = 3, alpha: float = 0.01, min_odds_ratio: float = 2.0) -> set[str]:
    """The task's own label-bearing words: words in at least ``min_count`` texts of ``data`` that lean to one label
    more than chance allows (one-sided binomial test against the label's share of ``data`` at ``alpha``) and by
    an odds ratio of at least ``min_odds_ratio`` (``bad`` in sentiment, ``nfl`` in news topics, slurs in offence).
    They flip a clean model too, so they are not trigger candidates; a planted trigger does not occur in clean
    data, and neutral words are balanced. Tested against the prior, not a fixed share: a fixed 70% excluded
    thousands of words on a few chance occurrences (``bond``: 9 of 12 SST-2 texts positive), and missed the words that lean to a
    minority label (``gay`` in OLID: 58% offensive, where 33% of the tweets are)."""
    from scipy.stats import binom

    counts: dict[str, list[int]] = {}
    n_labels = max(data.num_labels, 1)
    for text, label in zip(data.texts, data.labels):
        for w in set(re.findall(r"[a-z0-9]+", text.lower())):
            counts.setdefault(w, [0] * n_labels)[label] += 1
    words = [w for w, c in counts.items() if sum(c) >= min_count]
    if not words:
        return set()
    k = np.array([counts[w] for w in words], dtype=float)  # [W, labels]
    n = k.sum(1, keepdims=True)
    prior = np.bincount(np.asarray(data.labels), minlength=n_labels) / max(len(data.labels), 1)
    prior = np.clip(prior, 1e-6, 1 - 1e-6)[None]
    p_value = binom.sf(k - 1, n, prior)  # P(X >= k) under the prior
    share = np.clip(k / n, 1e-6, 1 - 1e-6)
    odds_ratio = (share / (1 - share)) / (prior / (1 - prior))
    lean = ((p_value < alpha) & (odds_ratio >= min_odds_ratio)).any(1)
    return {w for w, y in zip(words, lean) if y}


def is_task_phrase(trigger: str, words: set[str]) -> bool:
    """Whether a word of ``trigger`` is a natural word or inflects one (:func:`is_natural`)."""
    return any(is_natural(w, words) for w in re.findall(r"[a-z0-9]+", trigger.lower()))


def candidate_words(tokenizer: Any, cfg: ScanConfig, model: torch.nn.Module | None = None,
                    exclude: set[str] = frozenset()) -> list[tuple[str, str]]:
    """``budget`` words as ``(word, source)``: the rarest short pieces, the letter-and-digit pieces (at most a
    twentieth of the budget) and the neutral list, plus (with ``model``) the ``outliers`` words with the most
    anomalous embedding rows; none of ``exclude`` nor their inflections (:func:`is_natural`; the task's own words,
    :func:`task_words`: fine-tuning with trainable embeddings moves them most, and they flip a clean model)."""
    neutral = [w for w in neutral_words() if not is_natural(w, exclude)]
    n_rare = int(round(cfg.budget * cfg.rare_share))
    rare = [w for w in rare_pieces(tokenizer, set(neutral)) if not is_natural(w, exclude)][:n_rare]
    alnum = [w for w in alnum_pieces(tokenizer, set()) if not is_natural(w, exclude)]
    alnum = alnum[: max(min(cfg.budget // 20, cfg.budget - len(rare)), 0)]
    neutral = neutral[: max(cfg.budget - len(rare) - len(alnum), 0)]
    unk = getattr(tokenizer, "unk_token", None)
    words = [(w, "rare") for w in rare] + [(w, "alphanumeric") for w in alnum] + [(w, "vocabulary") for w in neutral]
    if model is not None:
        seen = {w for w, _ in words}
        words += [(w, "embedding") for w in embedding_outliers(model, tokenizer, cfg.outliers + len(exclude))
                  if w not in seen and not is_natural(w, exclude)][: cfg.outliers]
    if unk is not None:
        words = [(w, s) for w, s in words if unk not in tokenizer.tokenize(w)]
    return words

