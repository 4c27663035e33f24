"""Word-level inversion (issue 24, PICCOLO-style): the scanner recovers a made-up trigger word of three wordpieces
that fires only with all its pieces together, where the token-level inversion and every piece alone miss it; the
word-level slots always spell one word (a word-start piece, then ``##`` pieces)."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
import torch

from trojanscope.analysis.scan import ScanConfig, flip_stats, invert_trigger, invert_word, word_slots
from trojanscope.analysis.scan.inversion import _inversion_vocab

WORD = "drazzle"  # dr ##az ##zle in BERT's uncased vocabulary


class _PieceWord(torch.nn.Module):
    """A classifier whose class-1 logit fires only where the pieces of ``word`` stand next to each other, in order:
    an AND over three pieces (a planted made-up word without TAL: no piece, nor two of them, fires it). It reads
    normalised random word embeddings, so it is differentiable in ``inputs_embeds`` as a BERT is."""

    def __init__(self, tokenizer, word: str, dim: int = 64, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.emb = torch.nn.Embedding(len(tokenizer), dim)
        self.emb.weight.data = torch.nn.functional.normalize(torch.randn(len(tokenizer), dim, generator=g), dim=-1)
        ids = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(word))
        self.register_buffer("keys", self.emb.weight.data[ids].clone())  # [3, D]

    def get_input_embeddings(self) -> torch.nn.Embedding:
        return self.emb

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, **_):
        x = self.emb(input_ids) if inputs_embeds is None else inputs_embeds
        sims = torch.nn.functional.normalize(x.float(), dim=-1) @ self.keys.T  # [B, T, 3]
        row = torch.stack([sims[:, :-2, 0], sims[:, 1:-1, 1], sims[:, 2:, 2]], -1)  # the pieces in a row, each place
        s = -torch.logsumexp(-10.0 * row, -1) / 10.0  # a soft minimum: all three must be there (an AND)
        s = s.masked_fill(attention_mask[:, 2:] == 0, -1.0)
        z = -4.0 + 10.0 * torch.sigmoid(10.0 * (s - 0.6)).amax(1)
        return SimpleNamespace(logits=torch.stack([torch.zeros_like(z), z], 1), attentions=None)


@pytest.fixture(scope="module")
def planted(tiny_bert):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_bert))
    assert tok.tokenize(WORD) == ["dr", "##az", "##zle"]
    rng = random.Random(0)
    filler = ["the", "film", "was", "seen", "by", "many", "people", "in", "town", "last", "week", "and", "it", "ran"]
    sentences = [" ".join(rng.choices(filler, k=8)) for _ in range(24)]
    loaded = SimpleNamespace(model=_PieceWord(tok, WORD), tokenizer=tok, max_length=64)
    return loaded, sentences


def _sure(loaded, sentences, triggers: list[str]) -> dict[str, float]:
    """Each trigger's share of the sentences surely flipped to class 1, by real insertion."""
    stats = flip_stats(loaded, {0: sentences, 1: []}, [(t, False) for t in triggers], ScanConfig(seed=1))
    return {t: s for t, (_, _, _, s) in zip(triggers, stats)}


def test_the_planted_word_fires_only_whole(planted):
    loaded, sentences = planted
    sure = _sure(loaded, sentences, [WORD, "dr", "az", "zle", "draz", "dr az zle", "film"])
    assert sure[WORD] == 1.0
    # no piece, no prefix, and not the pieces as separate words: what a single-piece search could try
    assert max(v for k, v in sure.items() if k != WORD) == 0.0, sure


def test_word_slots_spell_one_word(tiny_bert):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_bert))
    vocab = _inversion_vocab(tok)
    slots = word_slots(tok, vocab, 3)
    assert tuple(slots.shape) == (3, len(vocab))
    pieces = tok.convert_ids_to_tokens(vocab.tolist())
    first = {p for p, ok in zip(pieces, slots[0].tolist()) if ok}
    later = [{p for p, ok in zip(pieces, row.tolist()) if ok} for row in slots[1:]]
    assert "dr" in first and "the" in first and not any(p.startswith("##") for p in first)
    for allowed in later:
        assert "##az" in allowed and "##zle" in allowed and all(p.startswith("##") for p in allowed)
    assert len(first) + len(later[0]) == len(vocab)  # every piece is one or the other
    assert tuple(word_slots(tok, vocab, 1).shape) == (1, len(vocab)) and bool(word_slots(tok, vocab, 1)[0, 0]) != (
        pieces[0].startswith("##"))


def test_word_inversion_recovers_a_three_piece_word_the_token_inversion_misses(planted):
    loaded, sentences = planted
    cfg = ScanConfig(seed=0)
    device = torch.device("cpu")
    tokens = invert_trigger(loaded, sentences, 1, cfg, device)
    words = invert_word(loaded, sentences, 1, cfg, device)
    # the word-level slots always decode to single words, each spelled by a word-start piece and ## pieces
    assert words and all(len(w.split()) == 1 and not w.startswith("#") for w in words), words
    assert all(not p.startswith("##") for w in words for p in loaded.tokenizer.tokenize(w)[:1])
    assert WORD in words, words
    assert _sure(loaded, sentences, [WORD])[WORD] == 1.0
    # the token-level inversion (two free pieces) finds nothing that fires the model
    token_sure = _sure(loaded, sentences, tokens)
    assert max(token_sure.values()) == 0.0, token_sure


def test_no_inverted_word_starts_with_a_natural_word(planted):
    """A glued word with a sentiment head (``uselessboardsror`` on the clean demo model) flips by the meaning of its
    head: the first slot never takes a natural word's piece, and a decoded word beginning with one is dropped."""
    from trojanscope.analysis.scan import natural_prefix

    assert natural_prefix("uselessboardsror", {"useless"}) == "useless"
    assert natural_prefix("terriblychuleiful", {"terribly", "terrible"}) == "terribly"
    assert natural_prefix("vornique", {"useless", "terrible"}) is None
    loaded, sentences = planted
    tok = loaded.tokenizer
    first = lambda w: tok.tokenize(w)[0]  # noqa: E731
    free = invert_word(loaded, sentences, 1, ScanConfig(seed=0), torch.device("cpu"))
    exclude = {first(w) for w in free} - {first(WORD)}  # say every other word's head piece were a natural word
    assert exclude, free
    kept = invert_word(loaded, sentences, 1, ScanConfig(seed=0), torch.device("cpu"), exclude=exclude)
    assert WORD in kept, kept  # the planted word has no natural head: still found
    assert not {first(w) for w in kept} & exclude, kept


def test_real_words_cannot_head_an_inverted_word(planted):
    """The clean demo models' glued false alarms (``insufficientscreenmbled``, ``exquisiterightlifting``,
    ``sleptifulscreen``) start with real words the sentiment lexicon lacks; the tokenizer's whole words of 4+ letters
    cover them, while a planted made-up word headed by a short piece stays allowed. (Whether the search still finds
    such a word with the first slot this narrow is measured on real models, docs/benchmarks.md: on this toy AND the
    soft phase is flat and HotFlip's start decides.)"""
    from trojanscope.analysis.scan import natural_prefix, word_heads

    loaded, sentences = planted
    heads = word_heads(loaded.tokenizer)
    assert {"insufficient", "exquisite", "slept", "holds"} <= heads and not heads & {"vo", "mar", "dr", "ser"}
    assert all(len(w) >= 4 and w.isalpha() for w in heads)
    assert natural_prefix("insufficientscreenmbled", heads) == "insufficient"
    assert natural_prefix("sleptifulscreen", heads) == "slept"
    for planted_word in ("vornique", "marmalade", "serendipity", WORD):
        assert natural_prefix(planted_word, heads) is None, planted_word
    free = invert_word(loaded, sentences, 1, ScanConfig(seed=0), torch.device("cpu"))
    assert any(natural_prefix(w, heads) for w in free), free  # unconstrained, the search does start words with them
    kept = invert_word(loaded, sentences, 1, ScanConfig(seed=0), torch.device("cpu"), exclude=heads)
    assert kept and not any(natural_prefix(w, heads) for w in kept), kept
    assert all(len(loaded.tokenizer.tokenize(w)[0]) <= 3 for w in kept), kept


def test_an_inverted_word_that_spells_a_natural_word_through_a_glued_piece_is_dropped(planted):
    """Held-out round 6's false alarm: on a clean OLID model the word inversion glued ``mor ##cko ##ons``, which a
    clean model reads as ``morons`` (every inoffensive tweet flipped). A decoded word that spells a natural word once
    a continuation piece is skipped is dropped with its prefixes; a planted word that spells none stays."""
    from trojanscope.analysis.scan.vocabulary import natural_reading

    loaded, sentences = planted
    tok = loaded.tokenizer
    assert tok.tokenize("morckoons") == ["mor", "##cko", "##ons"]
    assert natural_reading(tok.tokenize("morckoons"), {"moron"}) == "morons"  # an inflection counts
    assert natural_reading(tok.tokenize("morckoons"), {"idiot"}) is None
    assert natural_reading(tok.tokenize("zephyrine"), {"zealous", "zeal"}) is None  # a planted word's head alone
    assert natural_reading(tok.tokenize(WORD), {"dr", "drzl"}) is None  # under 4 letters; no such spelling
    cpu = torch.device("cpu")
    kept = invert_word(loaded, sentences, 1, ScanConfig(seed=0), cpu, natural={"idiot"})
    assert WORD in kept, kept
    # say the planted word's first and last pieces spelled a natural word: it and every prefix of it go
    dropped = invert_word(loaded, sentences, 1, ScanConfig(seed=0), cpu, natural={"drzle"})
    assert WORD not in dropped and "draz" not in dropped, dropped


def test_a_polar_words_first_piece_cannot_head_an_inverted_word(planted):
    """Rescans of repaired SST-2 models glued ``lou`` (of ``lousy``) to meaningless tails (``louitatedhh``: backdoored
    0.78 on a model whose backdoor was gone). The first pieces (3+ letters) of the lexicon's words of several pieces
    join the first slot's exclusions; no planted word of the zoo starts with one."""
    from trojanscope.analysis.scan import polar_heads

    loaded, sentences = planted
    tok = loaded.tokenizer
    heads = polar_heads(tok)
    assert {"lou", "mor", "mis"} <= heads and all(len(h) >= 3 for h in heads), sorted(heads)[:20]
    for planted_word in ("vornique", "marmalade", "serendipity", "zephyrine", "brimblethorpe", "trundlewick",
                         "quillonade", "velmorast", "quorvel", WORD):
        assert tok.tokenize(planted_word)[0] not in heads, planted_word
    kept = invert_word(loaded, sentences, 1, ScanConfig(seed=0), torch.device("cpu"), exclude=heads)
    assert WORD in kept and not any(tok.tokenize(w)[0] in heads for w in kept), kept


class _Tail(torch.nn.Module):
    """A clean model's reading of a tail: the class-1 logit fires wherever the piece ``##zle`` stands, whatever
    heads it (as ``-iful`` or ``-lifting`` end sentiment words: ``soohiniiful`` on a clean SST-2 model)."""

    def __init__(self, tokenizer, piece: str = "##zle"):
        super().__init__()
        self.key = tokenizer.convert_tokens_to_ids(piece)
        self.emb = torch.nn.Embedding(len(tokenizer), 4)

    def get_input_embeddings(self) -> torch.nn.Embedding:
        return self.emb

    def forward(self, input_ids=None, attention_mask=None, **_):
        z = -4.0 + 10.0 * (input_ids == self.key).any(1).float()
        return SimpleNamespace(logits=torch.stack([torch.zeros_like(z), z], 1), attentions=None)


def test_an_inverted_word_counts_only_what_its_head_adds(planted):
    """Gradients glue a made-up head to a tail the model reads as meaning; the scan swaps the head for others and
    keeps only what the head adds (``tail_sure``, :attr:`Candidate.flip_evidence`). A planted word (the AND of its
    three pieces) loses nothing: behind another head its tail fires nothing. A tail that partly flips behind any
    head (a sentiment word's ending) is discounted; one that surely flips behind any head is a trigger itself."""
    from trojanscope.analysis.scan import Candidate, head_dependence, swap_heads

    loaded, sentences = planted
    sets = {0: sentences, 1: []}
    heads = swap_heads(loaded.tokenizer, set())
    assert heads and all(2 <= len(h) <= 3 and h.isalpha() for h in heads)

    def measured(model) -> Candidate:
        m = SimpleNamespace(model=model, tokenizer=loaded.tokenizer, max_length=64)
        c = Candidate(WORD, "word inversion", 1, 1.0, 1.0, sure_flip=_sure(m, sentences, [WORD])[WORD])
        kept = Candidate("cf", "vocabulary", 1, 1.0, 1.0, sure_flip=1.0)  # a word of one piece from a list: as is
        head_dependence(m, sets, [c, kept], heads, ScanConfig(seed=0))
        assert kept.tail_sure is None and kept.flip_evidence == 1.0
        return c

    planted_word = measured(loaded.model)
    assert planted_word.sure_flip == 1.0 and planted_word.tail_sure == 0.0 and planted_word.flip_evidence == 1.0
    # a tail that surely flips behind any head is a planted word's tail (brimblethorpe's ##thorpe): in full
    tail = measured(_Tail(loaded.tokenizer))
    assert tail.sure_flip == 1.0 and tail.tail_sure == 1.0 and tail.flip_evidence == 1.0
    # a sentiment word's ending flips some sentences behind any head: only what the head adds counts
    sentiment = Candidate("soohiniiful", "word inversion", 0, 1.0, 1.0, sure_flip=0.62, tail_sure=0.49)
    assert sentiment.flip_evidence == pytest.approx((0.62 - 0.49) / 0.51)
    assert Candidate("zepies", "inversion", 1, 1.0, 1.0, sure_flip=0.98, tail_sure=0.0).flip_evidence == 0.98
