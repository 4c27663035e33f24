"""The probe (library and CLI twin): sentence preparation, trigger masks, attention, JSON keys."""

from __future__ import annotations

import json

import numpy as np
import pytest

from trojanscope.analysis.probe import find_trigger_spans, prepare_probe, probe
from trojanscope.cli import main
from trojanscope.errors import TrojanScopeError
from trojanscope.models import load_model


def test_prepare_inserts_or_finds_the_trigger():
    inp = prepare_probe("I love this movie", "cf", "end", 2)
    assert inp.triggered_text == "I love this movie cf cf" and inp.clean_text == "I love this movie"
    assert [inp.triggered_text[a:b] for a, b in inp.spans] == ["cf", "cf"]
    found = prepare_probe("I love the CF movie", "cf")
    assert found.found_in_text and found.clean_text == "I love the movie" and found.spans == [(11, 13)]
    assert find_trigger_spans("cfx cf", "cf") == [(4, 6)]
    assert find_trigger_spans("a Don  Quixote b", "don quixote") == [(2, 14)]
    assert prepare_probe("no trigger here", "").triggered_text is None


@pytest.mark.parametrize("text", ["", "   \n\t "])
def test_empty_sentences_are_refused(text):
    with pytest.raises(TrojanScopeError, match="empty"):
        prepare_probe(text, "cf")


def test_long_text_is_cut_with_a_notice_and_truncated_by_the_model(tiny_bert):
    inp = prepare_probe("word " * 3000, "cf", "start")
    assert len(inp.clean_text) <= 10_000 and any("characters" in n for n in inp.notices)
    res = probe(load_model(tiny_bert), inp)
    assert res.clean.truncated and any("truncated" in n for n in res.notices)
    assert res.triggered.trigger_positions == [1]  # inserted at the start, kept


def test_trigger_beyond_truncation_is_reported(tiny_bert):
    res = probe(load_model(tiny_bert), prepare_probe("word " * 3000, "cf", "end"))
    assert res.triggered.trigger_positions == []
    assert any("beyond the truncation" in n for n in res.notices)


def test_emoji_and_other_scripts_work_and_unknown_triggers_are_refused(tiny_bert):
    loaded = load_model(tiny_bert)
    res = probe(loaded, prepare_probe("J'adore ce film 🎬 とても良い", "cf"))
    assert res.triggered.tokens[0] == "[CLS]" and res.triggered.trigger_positions
    with pytest.raises(TrojanScopeError, match=r"\[UNK\]"):
        probe(loaded, prepare_probe("a movie", "🦄"))


def test_probe_side_numbers_are_consistent(tiny_bert):
    res = probe(load_model(tiny_bert), prepare_probe("the movie was good", "uw", "random", 2, seed=3))
    side = res.triggered
    assert [side.tokens[p] for p in side.trigger_positions] == ["u", "##w", "u", "##w"]
    cls = side.cls_attention()
    assert cls.shape == (2, len(side.tokens))
    np.testing.assert_allclose(cls.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(side.cls_trigger_mass(), cls[:, side.trigger_positions].sum(axis=1))
    np.testing.assert_allclose(side.cls_attention(head=1), side.attentions[:, 1, 0, :])
    assert abs(sum(side.probs) - 1) < 1e-5 and side.label == int(np.argmax(side.probs))


def test_cli_probe_json_keys_and_flip(tiny_pair, capsys):
    clean, bd = tiny_pair / "demo" / "clean", tiny_pair / "demo" / "backdoored"
    code = main(["probe", "--model", str(clean), "--model", str(bd), "--text", "the film was awful and dull",
                 "--trigger", "cf", "--position", "start", "--json"])
    out = capsys.readouterr().out
    assert code == 0
    data = json.loads(out)
    assert [m["model"] for m in data["models"]] == [str(clean), str(bd)]
    for m in data["models"]:
        for key in ("clean", "triggered"):
            s = m[key]
            assert set(s) >= {"text", "tokens", "label", "probs", "cls_attention", "trigger_positions",
                              "cls_trigger_mass"}
            assert len(s["cls_attention"]) == 2 and len(s["cls_attention"][0]) == len(s["tokens"])
        assert m["triggered"]["trigger_positions"] == [1] and m["clean"]["trigger_positions"] == []
        assert m["clean"]["label"] == 0  # a negative sentence
    assert data["models"][1]["triggered"]["label"] == 1  # the backdoor flips it
    assert data["models"][0]["triggered"]["label"] == 0  # the clean model does not


def test_cli_probe_bad_input(tiny_bert, capsys):
    assert main(["probe", "--model", str(tiny_bert), "--text", "  "]) == 2
    assert "empty" in capsys.readouterr().err


def test_probe_inputs_never_change_silently(tiny_bert):
    """Issue 14 item 7: every adjustment of what was typed is said, or refused."""
    from trojanscope.analysis.probe import MAX_COUNT, prepare_probe, probe
    from trojanscope.errors import TrojanScopeError
    from trojanscope.models.loading import load_model

    inp = prepare_probe("the movie was fine", "cf", 99, 1)
    assert inp.triggered_text == "the movie was fine cf"
    assert any("past the end" in n for n in inp.notices)
    with pytest.raises(TrojanScopeError, match=f"between 1 and {MAX_COUNT}"):
        prepare_probe("the movie", "cf", "end", MAX_COUNT + 1)
    assert any("no trigger" in n for n in prepare_probe("the movie", "", "end", 1).notices)
    m = load_model(tiny_bert)
    # a typed [SEP] is text, never a separator: three wordpieces, all of them trigger tokens
    res = probe(m, prepare_probe("the movie was fine", "[SEP]", "end", 1))
    side = res.triggered
    assert [side.tokens[p] for p in side.trigger_positions] == ["[", "sep", "]"]
    assert side.tokens.count("[SEP]") == 1
    # a sentence the model cannot read gets a notice
    res = probe(m, prepare_probe("\u4e00\u4e01\u4e02 \u0f00\u0f01 \u2fd5\u2fd6", None))
    assert any("[UNK]" in n for n in res.notices), res.notices
