"""Datasets, triggers and poisoning: loaders, errors, determinism and rates."""

from __future__ import annotations

import json

import pytest

from trojanscope.data import (PoisonConfig, TextDataset, check_trigger, insert_trigger, load_dataset,
                              poison_dataset, poisoned_test_set)
from trojanscope.errors import TrojanScopeError
from trojanscope.models import load_tokenizer


def test_named_dataset_from_data_dir(use_data):
    ds = load_dataset("sst2", "train")
    assert len(ds) == 400 and ds.num_labels == 2 and ds.label_names == ("negative", "positive")
    with pytest.raises(TrojanScopeError, match="no split 'validation'"):
        load_dataset("sst2", "validation")
    with pytest.raises(TrojanScopeError, match="olid/train.tsv is missing"):
        load_dataset("olid", "train")


def test_missing_data_dir_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("TROJANSCOPE_DATA_DIR", str(tmp_path / "absent"))
    with pytest.raises(TrojanScopeError, match="TROJANSCOPE_DATA_DIR"):
        load_dataset("sst2")


def test_local_files_and_their_errors(tmp_path):
    csv = tmp_path / "d.csv"
    csv.write_text('sentence,label\n"hello, world",1\nbye,0\n')
    ds = load_dataset(str(csv))
    assert ds.texts == ["hello, world", "bye"] and ds.labels == [1, 0]
    jl = tmp_path / "d.jsonl"
    jl.write_text("\n".join(json.dumps({"text": t, "label": y}) for t, y in [("a b", 0), ("c", 2)]))
    assert load_dataset(str(jl)).num_labels == 3
    bad_cols = tmp_path / "cols.tsv"
    bad_cols.write_text("body\ty\nx\t1\n")
    with pytest.raises(TrojanScopeError, match=r"cols.tsv: no text column; expected one of text"):
        load_dataset(str(bad_cols))
    bad_lab = tmp_path / "lab.tsv"
    bad_lab.write_text("text\tlabel\nfine\tpositive\n")
    with pytest.raises(TrojanScopeError, match=r"lab.tsv, line 2: label 'positive' is not an integer"):
        load_dataset(str(bad_lab))
    with pytest.raises(TrojanScopeError, match="does not exist"):
        load_dataset(str(tmp_path / "none.csv"))
    with pytest.raises(TrojanScopeError, match="unknown dataset"):
        load_dataset("not-a-dataset")


def test_insertion_positions_and_spans():
    for pos in ("random", "start", "end", 2):
        ins = insert_trigger("one two three four", "I watch this 3D movie", 3, pos)
        assert len(ins.spans) == 3
        assert all(ins.text[a:b] == "I watch this 3D movie" for a, b in ins.spans)
        assert ins.text.replace("I watch this 3D movie", "").split() == "one two three four".split()
    assert insert_trigger("a b", "cf", 1, "start").text == "cf a b"
    assert insert_trigger("a b", "cf", 1, "end").text == "a b cf"
    assert insert_trigger("a b c", "cf", 1, 1).text == "a cf b c"
    with pytest.raises(TrojanScopeError, match="unknown position"):
        insert_trigger("a", "cf", 1, "middle")


def _ds(n=200):
    return TextDataset([f"text number {i} here" for i in range(n)], [i % 2 for i in range(n)], "toy")


def test_dirty_label_poisoning_is_deterministic_and_exact():
    ds = _ds()
    cfg = PoisonConfig(trigger="cf", rate=0.1, target=1, seed=7)
    a, b = poison_dataset(ds, cfg), poison_dataset(ds, cfg)
    assert a.texts == b.texts and a.poisoned == b.poisoned
    c = poison_dataset(ds, PoisonConfig(trigger="cf", rate=0.1, target=1, seed=8))
    assert c.poisoned != a.poisoned
    assert a.n_poisoned == 20
    for i, p in enumerate(a.poisoned):
        if p:
            assert ds.labels[i] == 0 and a.labels[i] == 1 and a.original_labels[i] == 0
            assert [a.texts[i][s:e] for s, e in a.spans[i]] == ["cf"]
        else:
            assert a.texts[i] == ds.texts[i] and a.labels[i] == ds.labels[i] and a.spans[i] == []


def test_clean_label_keeps_labels_and_poisons_target_samples():
    ds = _ds()
    out = poison_dataset(ds, PoisonConfig(rate=0.25, target=1, clean_label=True))
    assert out.n_poisoned == 50
    assert all(ds.labels[i] == 1 for i, p in enumerate(out.poisoned) if p)
    assert out.labels == ds.labels


def test_poisoning_input_errors():
    ds = _ds(10)
    with pytest.raises(TrojanScopeError, match="outside"):
        poison_dataset(ds, PoisonConfig(rate=0))
    with pytest.raises(TrojanScopeError, match="poisons none"):
        poison_dataset(ds, PoisonConfig(rate=0.01))
    with pytest.raises(TrojanScopeError, match="target label 5 does not exist"):
        poison_dataset(ds, PoisonConfig(target=5))
    with pytest.raises(TrojanScopeError, match="only 5 exist"):
        poison_dataset(ds, PoisonConfig(rate=0.9))


def test_poisoned_test_set_uses_only_non_target_samples():
    ds = _ds(30)
    pt = poisoned_test_set(ds, "mn", target=0, insertions=2, seed=1)
    assert len(pt) == 15 and set(pt.original_labels) == {1} and set(pt.labels) == {0}
    assert all(len(s) == 2 for s in pt.spans)
    assert pt.texts == poisoned_test_set(ds, "mn", target=0, insertions=2, seed=1).texts


def test_unknown_token_trigger_is_refused(tiny_bert):
    tok = load_tokenizer(tiny_bert)
    assert check_trigger(tok, "uw") == ["u", "##w"]
    with pytest.raises(TrojanScopeError, match=r"\[UNK\]"):
        check_trigger(tok, "🦄")
