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
    with pytest.raises(TrojanScopeError, match="'olid' is not on disk .*olid/train.tsv"):
        load_dataset("olid", "train")  # (tests are offline: the error says what to fetch and where)


def test_missing_data_dir_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("TROJANSCOPE_DATA_DIR", str(tmp_path / "absent"))
    with pytest.raises(TrojanScopeError, match="TROJANSCOPE_DATA_DIR=.* is not a directory"):
        load_dataset("sst2")  # a mistyped setting is reported as such, never papered over by a download


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
    with pytest.raises(TrojanScopeError, match=r"cols.tsv: no text column found; expected one of text") as err:
        load_dataset(str(bad_cols))
    assert "body" not in str(err.value)  # what the file's header holds is never echoed
    bad_lab = tmp_path / "lab.tsv"
    bad_lab.write_text("text\tlabel\nfine\tpositive\n")
    with pytest.raises(TrojanScopeError, match=r"lab.tsv, line 2: the label is not an integer") as err:
        load_dataset(str(bad_lab))
    assert "positive" not in str(err.value)  # nor a cell's value
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


def test_single_class_training_data_is_refused(tmp_path, tiny_bert):
    one = TextDataset(["a", "b", "c"], [0, 0, 0], "one")
    assert one.num_labels == 1  # what the labels say: a one-logit "classifier"
    with pytest.raises(TrojanScopeError, match=r"^the training data has only one class \(label 0\); a classifier "
                                               r"needs at least two$"):
        one.require_classes(2, "the training data")
    assert _ds(4).require_classes() is not None
    # and training refuses it before building a model
    from trojanscope.training.pipeline import TrainSpec, run_training

    path = tmp_path / "one.tsv"
    path.write_text("text\tlabel\n" + "".join(f"sentence {i}\t1\n" for i in range(20)))
    with pytest.raises(TrojanScopeError, match=r"only one class \(label 1\)"):
        run_training(TrainSpec(data=str(path), model=str(tiny_bert), attack="none"), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_unlabelled_rows_are_refused_clearly(tmp_path, monkeypatch):
    unlabelled = tmp_path / "test.tsv"  # a GLUE test split exported as is: every label -1
    unlabelled.write_text("sentence\tlabel\nfirst\t-1\nsecond\t-1\n")
    with pytest.raises(TrojanScopeError, match=r"test.tsv has no labels \(every label is -1"):
        load_dataset(str(unlabelled))
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text('{"text": "a", "label": 1}\n{"text": "b", "label": -1}\n')
    with pytest.raises(TrojanScopeError, match=r"mixed.jsonl, line 2: label -1 is negative"):
        load_dataset(str(mixed))

    import sys
    import types

    class FakeSplit:
        column_names = ["sentence", "label", "idx"]

        def __init__(self, labels):
            self.labels = labels

        def __getitem__(self, column):
            return {"sentence": [f"s{i}" for i in range(len(self.labels))], "label": self.labels}[column]

    splits = {"test": [-1, -1, -1], "validation": [0, 1, 1], "train": [0, 1, -1]}
    fake = types.ModuleType("datasets")
    fake.load_dataset = lambda repo, config, split: FakeSplit(splits[split])
    monkeypatch.setitem(sys.modules, "datasets", fake)
    with pytest.raises(TrojanScopeError, match=r"^split test of hf:glue:sst2 has no labels \(-1\); use validation$"):
        load_dataset("hf:glue:sst2", "test")
    assert load_dataset("hf:glue:sst2", "dev").labels == [0, 1, 1]
    with pytest.raises(TrojanScopeError, match=r"split train, row 2: label -1 is negative"):
        load_dataset("hf:glue:sst2", "train")


def test_json_file_holding_one_array(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"text": "good film", "label": 1}, {"text": "bad film", "label": 0}], indent=2))
    ds = load_dataset(str(path))
    assert ds.texts == ["good film", "bad film"] and ds.labels == [1, 0]
    lines = tmp_path / "lines.json"  # JSON Lines under a .json name, as `datasets` writes them
    lines.write_text('{"sentence": "x", "label": 0}\n{"sentence": "y", "label": 1}\n')
    assert load_dataset(str(lines)).texts == ["x", "y"]
    for content, message in [
        (json.dumps({"data": [{"text": "a", "label": 0}]}, indent=2), "holds one object; a .json data file holds "
                                                                      "one array of objects"),
        ("[1, 2]", r"item 1 of the array: expected an object with text and label fields, found a number"),
        ('"just text"', "holds a string"),
        ("[{", "line 1: not valid JSON"),
    ]:
        path.write_text(content)
        with pytest.raises(TrojanScopeError, match=message):
            load_dataset(str(path))
    jl = tmp_path / "arr.jsonl"
    jl.write_text('["a", 1]\n')
    with pytest.raises(TrojanScopeError, match=r"arr.jsonl, line 1: expected an object"):
        load_dataset(str(jl))


def test_csv_with_a_field_over_128_kb(tmp_path):
    long = "word " * 40_000  # 200,000 characters
    for name, sep in (("long.csv", ","), ("long.tsv", "\t")):
        path = tmp_path / name
        path.write_text(f"text{sep}label\n{long}{sep}1\nshort{sep}0\n")
        ds = load_dataset(str(path))
        assert ds.texts == [long, "short"] and ds.labels == [1, 0]
