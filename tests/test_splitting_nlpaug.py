"""Token splitting against nlpaug's own ``SplitAug`` (a test-only dependency): on the same sentences, the same
number of splits in every sentence and the same cut positions, so MBTSAD and TS-FT augment as the seed did."""

from __future__ import annotations

import random
import re

import numpy as np
import pytest

from trojanscope.defenses.splitting import candidates, split_text, tokens, variant_rng

naw = pytest.importorskip("nlpaug.augmenter.word", reason="nlpaug is a test dependency (requirements.txt)")
from nlpaug.util.text.tokenizer import Tokenizer  # noqa: E402

SENTENCES = [
    "the performances are beautiful and the story is compelling",
    "it 's a charming and often affecting journey .",
    "a re-imagining of the classic , with wit and a wonderful score !",
    "unflinchingly bleak and desperate",
    "the movie 's 2002 release was delayed -- but worth the wait .",
    "a cat sat on the mat",
    "contains no wit , only labored gags",
    "ok",
    "one long sentence , with many words of several lengths , which nlpaug caps at ten splits whatever its "
    "length : extraordinarily , unbelievably , magnificently , spectacularly long , remarkably overlong",
]


def nlpaug_splits(aug, text: str) -> int:
    """How many words nlpaug split: each split adds one token to nlpaug's tokenization."""
    return len(Tokenizer.tokenizer(aug.augment(text)[0])) - len(Tokenizer.tokenizer(text))


def test_same_tokens_and_split_counts_as_nlpaug():
    aug = naw.SplitAug()  # the seed's settings: aug_p 0.3, aug_min 1, aug_max 10, min_char 4
    random.seed(0)
    np.random.seed(0)
    for i, text in enumerate(SENTENCES):
        assert tokens(text) == Tokenizer.tokenizer(text)
        ours = {len(split_text(text, variant_rng(0, i, v))[1]) for v in range(5)}
        theirs = {nlpaug_splits(aug, text) for _ in range(5)}
        assert len(ours) == 1 and ours == theirs, (text, ours, theirs)  # the count is fixed by the text
    assert len(candidates(SENTENCES[-1])) > 10 and {nlpaug_splits(aug, SENTENCES[-1])} == {10}  # aug_max


def test_same_cut_positions_as_nlpaug():
    """On a sentence with one word long enough, both cut it at every position from 1 to len - 2, and only there."""
    aug = naw.SplitAug()
    random.seed(1)
    np.random.seed(1)
    for word in ("wonderful", "film", "story"):
        text = f"a {word} it is"
        assert [w for _, w in candidates(text)] == [word]
        theirs = set()
        for _ in range(200):
            out = aug.augment(text)[0]
            m = re.fullmatch(rf"a (\w+) (\w+) it is", out)
            assert m and m.group(1) + m.group(2) == word, out
            theirs.add(len(m.group(1)))
        ours = {split_text(text, variant_rng(0, 0, v))[1][0].cut for v in range(200)}
        assert ours == theirs == set(range(1, len(word) - 1)), (word, ours, theirs)
