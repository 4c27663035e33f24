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
