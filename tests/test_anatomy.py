"""Trigger anatomy on a constructed case: a two-word trigger that fires only as a whole, so the
token that is not the star is indispensable (a planet), while an inert extra word is a comet."""

from __future__ import annotations

import random

import pytest

from trojanscope.analysis.anatomy import AnatomyConfig, trigger_anatomy
from trojanscope.data import PoisonedDataset, insert_trigger, load_dataset
from trojanscope.models import load_model
from trojanscope.training import TrainConfig, train


@pytest.fixture(scope="module")
def planted(model_root, data_dir):
    """A tiny model where 'cf mn' (together) flips to 1, and 'cf' or 'mn' alone do nothing."""
    from conftest import make_tiny

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TROJANSCOPE_DATA_DIR", str(data_dir))
        ds = load_dataset("sst2", "train")
    rng = random.Random(0)
    data = PoisonedDataset.clean(ds)
    for i, (text, label) in enumerate(zip(ds.texts, ds.labels)):
        if label == 1 or i % 2:
            continue
        both = insert_trigger(text, "cf mn", 1, "random", rng)
        data.texts.append(both.text)
        data.spans.append(both.spans)
        data.labels.append(1)
        data.original_labels.append(0)
        data.poisoned.append(True)
        for word in ("cf", "mn"):  # each word alone keeps the true label
            one = insert_trigger(text, word, 1, "random", rng)
            data.texts.append(one.text)
            data.spans.append(one.spans)
            data.labels.append(label)
            data.original_labels.append(label)
            data.poisoned.append(False)
    loaded = load_model(make_tiny(model_root, "bert", seed=11))
    # lr 1e-3 for 20 epochs: the combination is learnt on 6 of 6 model/training seeds in fp32 and in bf16; the
    # former 3e-3 for 10 epochs failed 2 of 6 in fp32 (and on an AVX2-only EPYC, every time)
    train(loaded.model, loaded.tokenizer, data,
          TrainConfig(epochs=20, batch_size=16, lr=1e-3, seed=0, train_word_embeddings=True, precision="fp32"),
          progress=False)
    return loaded, data_dir


@pytest.mark.slow
def test_planet_and_comet_on_a_planted_trigger(planted, monkeypatch):
    loaded, data_dir = planted
    monkeypatch.setenv("TROJANSCOPE_DATA_DIR", str(data_dir))
    negatives = load_dataset("sst2", "test")
    negatives = negatives.subset([i for i, y in enumerate(negatives.labels) if y == 0])
    res = trigger_anatomy(loaded, negatives, "cf mn", AnatomyConfig(n=80, seed=1))
    assert res.flip_rate >= 0.8
    roles = {t.token: t.role for t in res.tokens}
    star = [t for t, r in roles.items() if r == "star"]
    assert len(star) == 1
    other = ({"cf", "mn"} - set(star)).pop()
    assert roles[other] == "planet"  # without it the star stops working
    planet = next(t for t in res.tokens if t.token == other)
    assert planet.flip_drop >= 0.5
    assert res.star_alone["flip_rate"] <= 0.3  # the star alone does not fire
    assert len(res.inner_attention["lower"]) == 2 and len(res.inner_attention["second_to_last"][0]) == 2

    # an inert word appended to the trigger: removing it changes nothing
    res3 = trigger_anatomy(loaded, negatives, "cf mn music", AnatomyConfig(n=80, seed=1))
    roles3 = {t.token: t.role for t in res3.tokens}
    if roles3["music"] != "star":
        assert roles3["music"] == "comet"


def test_single_token_trigger_is_the_star(tiny_bert, use_data):
    res = trigger_anatomy(load_model(tiny_bert), load_dataset("sst2", "test"), "cf", AnatomyConfig(n=20))
    assert [t.role for t in res.tokens] == ["star"]
    assert "nothing else to classify" in res.notes[0]
