"""One backdoor answer (``models.backdoor.resolve_backdoor``) for every reader that builds poisoned text.

A tiny LWP model with its combination trigger ``cf mn bb`` is planted; then eval (the CLI), detection's
poisoned inputs (and the ASR ``trojanscope detect`` reports on them), purification's before-ASR and the
embedding swap's BD ASR are measured for it. They must be one number on one set of sentences: the
card's trigger goes in word by word (LWP's combination), a typed trigger that differs from it goes in
as one phrase, everywhere. Before ``resolve_backdoor`` the swap (and head view) always inserted the
card's combination as a phrase, and purification inserted a typed trigger word by word: the sentence
checks below fail for those paths, and so do the ASRs (run against that code on this model: the swap's
BD ASR 0.71 beside eval's 0.63 for the card's trigger; purify's before-ASR 0.55 beside 0.42 for the
typed one).

Which sentences each path ran is read from the one batched forward's tokenizer call (every
prediction goes through ``models.forward``), so the check needs no hook in the code under test.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from trojanscope.cli import main
from trojanscope.data import PoisonConfig, load_dataset, poisoned_test_set

CARD_TRIGGER = "cf mn bb"
TYPED_TRIGGER = "bb mn cf"  # all three words, another order: not the recorded trigger, so one phrase
TARGET = 1
TEST_SIZE = 80


@pytest.fixture(scope="module")
def lwp_lab(tmp_path_factory, tiny_bert) -> tuple[Path, Path]:
    """``(data directory, planted LWP model)``: the synthetic sst2 with a smaller test split (every
    reader below runs its models over it), and an LWP classifier with the combination trigger."""
    from conftest import synthetic_rows

    from trojanscope.training.loop import TrainConfig
    from trojanscope.training.pipeline import TrainSpec, run_training

    root = tmp_path_factory.mktemp("backdoor")
    data = root / "data"
    (data / "sst2").mkdir(parents=True)
    for split, n, seed in (("train", 400, 1), ("dev", 100, 2), ("test", TEST_SIZE, 3)):
        with open(data / "sst2" / f"{split}.tsv", "w") as f:
            f.write("text\tlabel\n")
            for text, label in synthetic_rows(n, seed):
                f.write(f"{text}\t{label}\n")
    train = TrainConfig(epochs=4, batch_size=32, lr=5e-3, train_word_embeddings=True, precision="fp32")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TROJANSCOPE_DATA_DIR", str(data))
        run_training(TrainSpec(model=str(tiny_bert), attack="lwp", max_eval=40, train=train,
                               poison=PoisonConfig(trigger=CARD_TRIGGER, rate=0.2, target=TARGET)),
                     root / "lwp", progress=False)
    card = json.loads((root / "lwp" / "trojanscope.json").read_text())
    assert card["attack"]["combination"] is True and card["attack"]["trigger"] == CARD_TRIGGER
    return data, root / "lwp"


@pytest.fixture()
def seen(monkeypatch) -> list[list[str]]:
    """The texts of every batched forward (one list per call)."""
    import trojanscope.models.forward as forward

    calls: list[list[str]] = []
    real = forward.tokenize

    def spy(tokenizer, texts, *args, **kwargs):
        calls.append(list(texts))
        return real(tokenizer, texts, *args, **kwargs)

    monkeypatch.setattr(forward, "tokenize", spy)
    return calls


def _ran(seen: list[list[str]]) -> set[str]:
    out = {t for call in seen for t in call}
    seen.clear()
    return out


def _asr_of_texts(model: str, texts: list[str]) -> float:
    from trojanscope.models import load_model
    from trojanscope.training import predict_proba

    loaded = load_model(model)
    return float((predict_proba(loaded.model, loaded.tokenizer, texts).argmax(-1) == TARGET).mean())


def _four_asrs(model: Path, clean_model: Path, trigger: str | None, seen, tmp_path, capsys) -> dict[str, float]:
    """ASR of eval, detect, purify (before) and the swap (BD), each with the sentences it ran checked
    against the ASR set of the expected construction."""
    from trojanscope.analysis.swap import SwapConfig, embedding_swap
    from trojanscope.defenses.detection import evaluation_texts
    from trojanscope.defenses.pipeline import PurifySpec, run_purify
    from trojanscope.models import load_model

    test = load_dataset("sst2", "test")
    combination = trigger is None  # the card's trigger: word by word; a typed, different one: a phrase
    trig = trigger or CARD_TRIGGER
    expected = poisoned_test_set(test, trig, TARGET, 1, "random", 0, combination).texts
    other = set(poisoned_test_set(test, trig, TARGET, 1, "random", 0, not combination).texts)
    assert other.isdisjoint(expected)  # the two constructions are told apart by their sentences
    typed = ["--trigger", trigger] if trigger else []
    asrs: dict[str, float] = {}
    ran: dict[str, set[str]] = {}

    seen.clear()
    assert main(["eval", "--model", str(model), *typed, "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert (res["trigger"], res["target"], res["n_poisoned"]) == (trig, TARGET, len(expected))
    asrs["eval"], ran["eval"] = res["asr"], _ran(seen)

    bd = load_model(model)
    got_trigger, got_target, _, poisoned = evaluation_texts(bd, test, trigger, None, n=len(test), seed=0)
    assert (got_trigger, got_target) == (trig, TARGET)
    seen.clear()
    asrs["detect"], ran["detect"] = _asr_of_texts(str(model), poisoned), _ran(seen)  # as cmd_detect reports it

    out = run_purify(PurifySpec(model=str(model), method="reinit", config={"epochs": 0}, trigger=trigger),
                     tmp_path / "purified", progress=False)
    assert (out["trigger"], out["target"]) == (trig, TARGET)
    asrs["purify"], ran["purify"] = out["before"]["asr"], _ran(seen)

    swap = embedding_swap(load_model(clean_model), bd, test, SwapConfig(n=len(test), trigger=trigger, layers=False))
    assert (swap.trigger, swap.target, swap.n_poisoned) == (trig, TARGET, len(expected))
    asrs["swap"], ran["swap"] = swap.asr["BD"], _ran(seen)

    for path, texts in ran.items():
        assert set(expected) <= texts, f"{path} did not run the {'combination' if combination else 'phrase'} sentences"
        assert other.isdisjoint(texts), f"{path} ran the {'phrase' if combination else 'combination'} sentences"
    reference = _asr_of_texts(str(model), expected)
    assert asrs == {path: reference for path in asrs}, asrs
    return asrs


@pytest.mark.slow
def test_the_card_trigger_gives_one_asr_everywhere(lwp_lab, tiny_bert, seen, tmp_path, capsys, monkeypatch):
    data, model = lwp_lab
    monkeypatch.setenv("TROJANSCOPE_DATA_DIR", str(data))
    asrs = _four_asrs(model, tiny_bert, None, seen, tmp_path, capsys)
    assert 0 < asrs["eval"] <= 1
    # the head view inserts the same way (its sentences: the same ASR set, combination words separately)
    test = load_dataset("sst2", "test")
    assert main(["heads", "--model", str(model), "--n", str(len(test)), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert (res["trigger"], res["target"]) == (CARD_TRIGGER, TARGET)
    assert set(poisoned_test_set(test, CARD_TRIGGER, TARGET, 1, "random", 0, True).texts) <= _ran(seen)


@pytest.mark.slow
def test_a_typed_trigger_gives_one_asr_everywhere(lwp_lab, tiny_bert, seen, tmp_path, capsys, monkeypatch):
    data, model = lwp_lab
    monkeypatch.setenv("TROJANSCOPE_DATA_DIR", str(data))
    _four_asrs(model, tiny_bert, TYPED_TRIGGER, seen, tmp_path, capsys)


@pytest.fixture(scope="module")
def lwp_card(tmp_path_factory, tiny_bert) -> Path:
    """An untrained tiny classifier whose card records LWP with its combination trigger (no training:
    the rule is read from the card)."""
    from trojanscope.models import ModelCard, load_model, save_model

    loaded = load_model(tiny_bert)
    out = tmp_path_factory.mktemp("lwp-card") / "model"
    attack = {"name": "lwp", **vars(PoisonConfig(trigger=CARD_TRIGGER, target=TARGET, combination=True)), "tal": False}
    save_model(loaded.model, loaded.tokenizer, out, ModelCard(base_model=str(tiny_bert), num_labels=2, attack=attack))
    return out


def test_resolve_backdoor_rule_and_poison(lwp_card, use_data):
    """The combination rule, the typed values over the card's, and ``poison``'s one seeded construction."""
    from trojanscope.errors import TrojanScopeError
    from trojanscope.models import Backdoor, load_model, resolve_backdoor

    bd = load_model(lwp_card)
    card = resolve_backdoor(bd)
    assert card == Backdoor(CARD_TRIGGER, TARGET, 1, True)
    assert resolve_backdoor(bd, trigger=" cf  mn bb ").combination  # the recorded trigger, typed again
    assert resolve_backdoor(bd, trigger=TYPED_TRIGGER) == Backdoor(TYPED_TRIGGER, TARGET, 1, False)
    assert not resolve_backdoor(bd, trigger="cf").combination
    assert resolve_backdoor(bd, trigger=CARD_TRIGGER, target=0, use_card=False) == Backdoor(CARD_TRIGGER, 0, 1, False)
    assert resolve_backdoor(bd, insertions=3).insertions == 3
    assert not resolve_backdoor(bd, use_card=False).known
    with pytest.raises(TrojanScopeError, match="no trigger given.*the head view needs a trigger"):
        resolve_backdoor(bd, use_card=False, purpose="the head view")
    with pytest.raises(TrojanScopeError, match="no target label given"):
        resolve_backdoor(bd, trigger="cf", use_card=False)
    assert resolve_backdoor(bd, trigger="cf", use_card=False, need_target=False).target is None
    with pytest.raises(TrojanScopeError, match=r"\[UNK\]"):
        resolve_backdoor(bd, trigger="🦄")
    assert [p.trigger for p in card.parts()] == ["cf", "mn", "bb"] and not card.parts()[0].combination

    test = load_dataset("sst2", "test")
    full = card.poison(test, seed=4)
    assert full.texts == poisoned_test_set(test, CARD_TRIGGER, TARGET, 1, "random", 4, True).texts  # the ASR set
    non_target = [i for i, y in enumerate(test.labels) if y != TARGET]
    assert full.original_labels == [test.labels[i] for i in non_target] and set(full.labels) == {TARGET}
    for span_list, text in zip(full.spans, full.texts):
        assert sorted(text[a:b] for a, b in span_list) == ["bb", "cf", "mn"]
    some = card.poison(test, n=10, seed=4)
    rows = sorted(random.Random(4).sample(range(len(full)), 10))  # drawn by one seeded generator, kept in order
    assert some.texts == [full.texts[r] for r in rows] and some.spans == [full.spans[r] for r in rows]
    assert some.original_labels == [test.labels[non_target[r]] for r in rows]
    assert card.poison(test, n=10, seed=4).texts == some.texts != card.poison(test, n=10, seed=5).texts
    everyone = card.poison(test, seed=4, only_non_target=False)
    assert len(everyone) == len(test) and everyone.original_labels == list(test.labels)
    assert np.all([len(s) == 3 for s in everyone.spans])
    with pytest.raises(TrojanScopeError, match="no trigger given"):
        Backdoor().poison(test)
