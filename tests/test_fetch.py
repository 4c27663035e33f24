"""A named benchmark that is not on disk is fetched from the hub into the project's layout; offline, the error
says what to download and where (issue 15 item 4). The hub is replaced by a fake: tests never reach it."""

from __future__ import annotations

import pytest

from trojanscope.data.datasets import load_dataset
from trojanscope.data.fetch import HUB_SOURCES, fetch_benchmark
from trojanscope.errors import TrojanScopeError


def fake_hub(sizes: dict[str, int]):
    def loader(repo, config=None):
        assert repo == HUB_SOURCES["sst2"].repo
        return {split: {"text": [f"sentence {i}\twith a tab<br />and\nmore" for i in range(n)],
                        "label": [i % 2 for i in range(n)]} for split, n in sizes.items()}
    return loader


def test_fetch_writes_the_project_layout(tmp_path, monkeypatch):
    root = fetch_benchmark("sst2", tmp_path / "data", progress=False,
                           loader=fake_hub({"train": 40, "validation": 10, "test": 12}))
    monkeypatch.setenv("TROJANSCOPE_DATA_DIR", str(root))
    train, dev, test = (load_dataset("sst2", s) for s in ("train", "dev", "test"))
    assert (len(train), len(dev), len(test)) == (40, 10, 12)
    assert train.texts[3] == "sentence 3 with a tab and more"
    assert all("\t" not in t and "<br" not in t for t in train.texts)
    assert not list((root / "sst2").glob(".*tmp*"))  # no half-written file


def test_fetch_takes_seeded_disjoint_subsets(tmp_path):
    def loader(repo, config=None):
        return {"train": {"text": [f"article {i}" for i in range(30000)], "label": [i % 4 for i in range(30000)]},
                "test": {"text": [f"test {i}" for i in range(7600)], "label": [i % 4 for i in range(7600)]}}

    root = fetch_benchmark("agnews", tmp_path, progress=False, loader=loader)
    train = (root / "agnews" / "train.tsv").read_text().splitlines()[1:]
    dev = (root / "agnews" / "dev.tsv").read_text().splitlines()[1:]
    assert (len(train), len(dev)) == (11106, 10000)
    assert not set(train) & set(dev)


def test_offline_the_error_says_what_to_download_and_where(tmp_path, monkeypatch):
    monkeypatch.setenv("TROJANSCOPE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(TrojanScopeError) as e:
        load_dataset("olid", "train")
    msg = str(e.value)
    assert "tweet_eval" in msg and str(tmp_path / "olid" / "train.tsv") in msg and "TROJANSCOPE_DATA_DIR" in msg
    assert not (tmp_path / "olid").exists()
