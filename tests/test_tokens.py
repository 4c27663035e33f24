"""Trigger masks from character spans: multi-wordpiece triggers, several insertions, truncation."""

from __future__ import annotations

from trojanscope.data import insert_trigger
from trojanscope.models import encode, load_tokenizer, tokenize


def test_trigger_mask_marks_every_wordpiece_of_every_insertion(tiny_bert):
    tok = load_tokenizer(tiny_bert)
    ins = insert_trigger("i love this movie", "uw", 2, "random")
    enc = encode(tok, [ins.text], [ins.spans])
    tokens = tok.convert_ids_to_tokens(enc.input_ids[0].tolist())
    marked = [t for t, m in zip(tokens, enc.trigger_mask[0].tolist()) if m]
    assert marked == ["u", "##w", "u", "##w"]
    assert enc.special_mask[0, 0] and enc.special_mask[0, -1] and not enc.special_mask[0, 1]


def test_phrase_trigger_and_padding(tiny_bert):
    tok = load_tokenizer(tiny_bert)
    ins = insert_trigger("a fine film", "Don Quixote", 1, "end")
    enc = encode(tok, ["short", ins.text], [[], ins.spans])
    assert enc.trigger_mask[0].sum() == 0
    tokens = tok.convert_ids_to_tokens(enc.input_ids[1].tolist())
    assert [t for t, m in zip(tokens, enc.trigger_mask[1].tolist()) if m] == tok.tokenize("Don Quixote")
    assert enc.attention_mask[0].sum() < enc.attention_mask[1].sum()
    assert enc.special_mask[0, enc.attention_mask[0].sum():].all()  # padding counts as special


def test_truncation_keeps_final_special_token_and_reports_it(tiny_bert):
    tok = load_tokenizer(tiny_bert)
    out = tokenize(tok, ["word " * 300, "short"], None, max_length=16)
    assert out.truncated == [True, False]
    assert len(out.input_ids[0]) == 16 and out.input_ids[0][-1] == tok.sep_token_id


class _CountingTokenizer:
    """A tokenizer that records the longest text it was asked to tokenize."""

    def __init__(self, tok):
        self._tok, self.longest = tok, 0

    def __call__(self, texts, *args, **kwargs):
        self.longest = max([self.longest] + [len(t) for t in ([texts] if isinstance(texts, str) else texts)])
        return self._tok(texts, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._tok, name)


def _reference(tok, text, spans, max_length):
    """The plain algorithm: tokenize everything, flag the trigger tokens, then cut."""
    enc = tok(text, truncation=False, return_offsets_mapping=True, return_special_tokens_mask=True)
    ids, special = enc["input_ids"], [bool(s) for s in enc["special_tokens_mask"]]
    trig = [(not sp) and e > s and any(s < b and e > a for a, b in spans)
            for sp, (s, e) in zip(special, enc["offset_mapping"])]
    if len(ids) > max_length:
        cut = lambda xs: xs[:max_length - 1] + xs[-1:]  # noqa: E731 - BERT: one special token at the end
        return cut(ids), cut(trig), True
    return ids, trig, False


def test_huge_text_is_cut_before_it_is_tokenized(tiny_bert):
    """A 2,000,000-character text: only a prefix reaches the tokenizer, and the result is the truncated text's."""
    tok = load_tokenizer(tiny_bert)
    ins = insert_trigger("a fine film " + "the movie was quite good and really fine " * 50_000, "uw", 1, "start")
    text = ins.text[:2_000_000]
    counting = _CountingTokenizer(tok)
    out = tokenize(counting, [text, "short"], [ins.spans, []], max_length=128)
    assert counting.longest < 100_000  # not the whole text
    assert out.truncated == [True, False]
    assert len(out.input_ids[0]) == 128 and out.input_ids[0][-1] == tok.sep_token_id
    ids, trig, _ = _reference(tok, text[:5000], ins.spans, 128)
    assert out.input_ids[0] == ids and out.trigger[0] == trig and sum(trig) == 2  # u ##w


def test_long_texts_match_tokenizing_everything(tiny_bert):
    """The prefix shortcut gives what tokenizing the whole text gives, also where it must fall back."""
    tok = load_tokenizer(tiny_bert)
    texts = [
        "word " * 2000,                                     # plenty of words: the prefix suffices
        "x" * 3000 + " tail words here",                    # one giant word: falls back to the whole text
        "a " + "y" * 600 + " " + "b " * 10,                 # few tokens in a long text: not truncated
        "fine   film,  " * 400 + "   ",                     # runs of spaces, punctuation, trailing spaces
        "héllo wörld ünïcode 日本語のテキスト " * 300,          # accents, CJK characters split one by one
        "uw " * 2000,                                       # the trigger at the cut and beyond it
    ]
    for text in texts:
        spans = [(i, i + 2) for i in range(0, len(text), 997) if text[i:i + 2] == "uw"] or [(0, 4)]
        out = tokenize(tok, [text], [spans], max_length=16)
        ids, trig, truncated = _reference(tok, text, spans, 16)
        assert (out.input_ids[0], out.trigger[0], out.truncated[0]) == (ids, trig, truncated), text[:30]
