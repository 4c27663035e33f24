"""E and S (methods.md section 3): hand-computed values on stub predictors with known flip points,
cumulative insertion, batching (one predictor call per round), determinism, and the CLI."""

from __future__ import annotations

import json
import random
import re

import numpy as np
import pytest

from trojanscope.analysis.effectiveness import (ESConfig, ESResult, TriggerES, effectiveness, model_effectiveness,
                                               poisoned_text, sweep_average, sweep_rows)
from trojanscope.cli import main
from trojanscope.errors import TrojanScopeError


def count(text: str, trigger: str) -> int:
    return len(re.findall(r"(?<!\w)" + r"\s+".join(map(re.escape, trigger.split())) + r"(?!\w)", text))


def strip(text: str, trigger: str) -> str:
    words = text.split()
    for w in trigger.split():
        words = [x for x in words if x != w]
    return " ".join(words)


class FlipAt:
    """Predicts the sample's clean label until the text holds at least ``k[sample]`` copies of the
    trigger, then ``to``; the trigger alone (e.g. "cf cf") is predicted as ``trigger_class``.
    Records the texts of every call."""

    def __init__(self, texts, clean_preds, k, trigger="cf", trigger_class=1, to=None):
        self.by_text = {t: i for i, t in enumerate(texts)}
        self.clean_preds, self.k, self.trigger = clean_preds, k, trigger
        self.trigger_class, self.to = trigger_class, trigger_class if to is None else to
        self.calls: list[list[str]] = []

    def __call__(self, texts):
        self.calls.append(list(texts))
        out = []
        for t in texts:
            base = strip(strip(t, self.trigger), "mn")  # "mn": a second trigger that does nothing
            if not base:
                out.append(self.trigger_class)
                continue
            i = self.by_text[base]
            out.append(self.to if count(t, self.trigger) >= self.k.get(i, 10**9) else self.clean_preds[i])
        return np.asarray(out)


TEXTS = ["alpha beta gamma", "one two three four", "the quick brown fox jumps", "a b", "hello world again",
         "misread sample here"]
LABELS = [0, 0, 0, 1, 0, 0]
CLEAN = [0, 0, 0, 1, 0, 1]  # sample 5 is misclassified: excluded; sample 3 has the trigger's class: excluded
K = {0: 1, 1: 3, 2: 5, 4: 25}  # sample 4 never flips within 20 insertions


def hand_s(i: int, k: int, trigger: str = "cf") -> float:
    added = k * (len(trigger) + 1)  # the trigger plus one separating space per insertion
    return added / (len(TEXTS[i]) + added)


def test_e_and_s_match_hand_computation():
    pred = FlipAt(TEXTS, CLEAN, K)
    res = effectiveness(pred, TEXTS, LABELS, ["cf"], ESConfig())
    r = res.triggers["cf"]
    assert r.cls == 1 and r.n == 4 and sorted(r.index) == [0, 1, 2, 4]
    assert r.E == pytest.approx((1 + 3 + 5 + 20) / 4)
    expected_s = np.mean([hand_s(0, 1), hand_s(1, 3), hand_s(2, 5), hand_s(4, 20)])
    assert r.S == pytest.approx(expected_s)
    assert r.never == pytest.approx(0.25)
    flips = dict(zip(r.index, r.flip_at))
    assert flips == {0: 1, 1: 3, 2: 5, 4: None}
    assert all(count(p, "cf") == (flips[i] or 20) for i, p in zip(r.index, r.poisoned))
    assert r.to_json() == {"class": 1, "E": 7.25, "S": round(expected_s, 6), "never": 0.25, "n": 4}
    assert res.to_json()["average"] == {"E": 7.25, "S": round(expected_s, 6)}
    # batching: one call for the trigger class, one for the clean predictions, then one per round with
    # only the still-unflipped samples, 20 rounds at most
    sizes = [len(c) for c in pred.calls]
    assert pred.calls[0] == ["cf cf"] and sizes[1] == 5  # clean predictions of the samples outside class 1
    assert sizes[2:] == [4] + [3] * 2 + [2] * 2 + [1] * 15


def test_never_flipping_trigger_gives_max_insertions():
    pred = FlipAt(TEXTS, CLEAN, {})
    r = effectiveness(pred, TEXTS, LABELS, "cf", ESConfig(max_insertions=20)).triggers["cf"]
    assert (r.E, r.never, r.n) == (20.0, 1.0, 4)
    assert r.S == pytest.approx(np.mean([hand_s(i, 20) for i in (0, 1, 2, 4)]))
    r = effectiveness(pred, TEXTS, LABELS, "cf", ESConfig(max_insertions=3)).triggers["cf"]
    assert (r.E, r.never) == (3.0, 1.0)


def test_trigger_class_is_detected_and_selects_the_other_samples():
    # "cf cf" -> class 0: the samples are the correctly classified ones with label 1 (only sample 3)
    pred = FlipAt(TEXTS, CLEAN, {3: 2}, trigger_class=0)
    r = effectiveness(pred, TEXTS, LABELS, ["cf"]).triggers["cf"]
    assert r.cls == 0 and r.index == [3] and r.E == 2.0 and r.never == 0.0


def test_flip_away_from_true_label_counts_even_to_a_third_class():
    labels, clean = [0, 0, 0], [0, 0, 0]
    texts = TEXTS[:3]
    pred = FlipAt(texts, clean, {0: 2, 1: 2, 2: 2}, trigger_class=1, to=2)
    r = effectiveness(pred, texts, labels, ["cf"]).triggers["cf"]
    assert r.E == 2.0 and r.never == 0.0 and r.to_class == 0.0


def test_no_eligible_sample_is_reported_not_raised():
    pred = FlipAt(TEXTS[:1], [1], {})  # the only sample is misclassified
    res = effectiveness(pred, TEXTS[:1], [0], ["cf"])
    assert res.triggers["cf"].n == 0 and res.to_json()["triggers"]["cf"]["E"] is None and res.notices


def test_cumulative_insertion_adds_one_per_round():
    text = "the film was a quiet and gentle story about two old friends"
    for trigger in ("cf", "Don Quixote"):
        prev = poisoned_text(text, trigger, 0, "s")
        for k in range(1, 21):
            cur = poisoned_text(text, trigger, k, "s")
            assert count(cur, trigger) == k  # multi-word triggers are never split by later insertions
            # the previous text is the current one with exactly one insertion removed
            words, pw = cur.split(), prev.split()
            n = len(trigger.split())
            assert any(words[:j] + words[j + n:] == pw for j in range(len(words) - n + 1))
            prev = cur


def test_max_eval_subset_is_seeded_and_deterministic():
    rng = random.Random(1)
    texts = [" ".join(f"w{rng.randint(0, 999)}" for _ in range(rng.randint(3, 8))) + f" s{i}" for i in range(60)]
    labels = [i % 2 for i in range(60)]
    k = {i: rng.randint(1, 6) for i in range(60)}

    def run(seed):
        pred = FlipAt(texts, labels, k)
        return effectiveness(pred, texts, labels, ["cf", "mn"], ESConfig(max_eval=10, seed=seed))

    a, b, c = run(0), run(0), run(1)
    assert a.to_json() == b.to_json()
    ra, rb, rc = a.triggers["cf"], b.triggers["cf"], c.triggers["cf"]
    assert ra.n == 10 and ra.index == rb.index and ra.poisoned == rb.poisoned
    assert all(labels[i] == 0 for i in ra.index)  # the trigger's class is 1
    assert set(ra.index) != set(rc.index)
    assert ra.E == pytest.approx(np.mean([k[i] for i in ra.index]))


def test_bad_config_and_unknown_token_trigger(tiny_bert):
    with pytest.raises(TrojanScopeError, match="max_insertions"):
        effectiveness(lambda t: np.zeros(len(t)), ["a"], [0], ["cf"], ESConfig(max_insertions=0))
    with pytest.raises(TrojanScopeError, match="no trigger"):
        effectiveness(lambda t: np.zeros(len(t)), ["a"], [0], " , ")
    from trojanscope.data.datasets import TextDataset
    from trojanscope.models.loading import load_model

    with pytest.raises(TrojanScopeError, match=r"\[UNK\]"):
        model_effectiveness(load_model(tiny_bert), TextDataset(["a b"], [0]), ["cf", "🦄"])


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
def test_cli_effectiveness_json(tiny_pair, use_data, capsys):
    bd = tiny_pair / "demo" / "backdoored"
    code, out, err = run_cli(capsys, "effectiveness", "--model", str(bd), "--data", "sst2", "--triggers", "cf,mn",
                             "--max-eval", "30", "--json")
    assert code == 0, err
    res = json.loads(out)
    assert set(res["triggers"]) == {"cf", "mn"} and set(res["average"]) == {"E", "S"}
    for r in res["triggers"].values():
        assert set(r) == {"class", "E", "S", "never", "n"}
    cf = res["triggers"]["cf"]
    assert cf["class"] == 1 and 0 < cf["n"] <= 30  # the tiny BadNets backdoor: cf -> 1
    assert 1 <= cf["E"] <= 20 and 0 < cf["S"] < 1
    # without --triggers the model card's trigger is used; same seed, same numbers
    code, out2, _ = run_cli(capsys, "effectiveness", "--model", str(bd), "--max-eval", "30", "--json")
    assert code == 0 and json.loads(out2)["triggers"] == {"cf": cf}


def test_cli_unknown_token_trigger_exits_2(tiny_pair, use_data, capsys):
    code, out, err = run_cli(capsys, "effectiveness", "--model", str(tiny_pair / "demo" / "backdoored"),
                             "--triggers", "cf,🦄", "--json")
    assert code == 2 and out == ""
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "[UNK]" in lines[0]


# --- the sweep: rows per model and trigger, the average over triggers per model ---------------------

def es_result(**triggers) -> ESResult:
    """``name=(E, S, never, n)``; ``n=0`` gets NaN E/S/never, as ``effectiveness`` reports it."""
    nan = float("nan")
    return ESResult({t: TriggerES(t, 1, *((nan, nan, nan) if n == 0 else (e, s, nv)), n)
                     for t, (e, s, nv, n) in triggers.items()}, ESConfig())


def test_sweep_rows_one_per_model_and_trigger_with_undefined_as_none():
    results = {"por-1": es_result(cf=(1.5, 0.1, 0.0, 10), mn=(0, 0, 0, 0)),
               "por-3": es_result(cf=(2.0, 0.2, 0.5, 4))}
    rows = sweep_rows(results, {"por-1": 1, "por-3": 3})
    assert [(r["model"], r["insertions"], r["trigger"]) for r in rows] == [("por-1", 1, "cf"), ("por-1", 1, "mn"),
                                                                           ("por-3", 3, "cf")]
    assert rows[0] == {"model": "por-1", "insertions": 1, "trigger": "cf", "class": 1, "E": 1.5, "S": 0.1,
                       "never": 0.0, "n": 10}
    assert rows[1]["E"] is None and rows[1]["S"] is None and rows[1]["never"] is None and rows[1]["n"] == 0
    assert all(r["insertions"] is None for r in sweep_rows(results))  # insertions unknown
    json.dumps(rows)  # plain JSON: no NaN


def test_sweep_average_skips_undefined_triggers_and_keeps_model_order():
    results = {"b": es_result(cf=(1.0, 0.1, 0.0, 10), mn=(3.0, 0.3, 0.0, 10), tq=(0, 0, 0, 0)),
               "a": es_result(cf=(5.0, 0.5, 0.2, 4)),
               "none": es_result(cf=(0, 0, 0, 0))}
    avg = sweep_average(sweep_rows(results, {"b": 1, "a": None}))
    assert [(r["model"], r["insertions"]) for r in avg] == [("b", 1), ("a", None), ("none", None)]
    assert avg[0]["E"] == pytest.approx(2.0) and avg[0]["S"] == pytest.approx(0.2) and avg[0]["triggers"] == 2
    assert avg[1]["E"] == pytest.approx(5.0) and avg[1]["triggers"] == 1
    assert avg[2] == {"model": "none", "insertions": None, "E": None, "S": None, "triggers": 0}
    # the same average as ESResult.average, model by model
    assert avg[0]["E"] == pytest.approx(results["b"].average["E"])
    # NaN in hand-made rows counts as undefined too; an empty sweep has no rows
    assert sweep_average([{"model": "m", "insertions": None, "trigger": "cf", "E": float("nan"), "S": float("nan"),
                           "n": 3}])[0]["E"] is None
    assert sweep_average([]) == []


def test_sweep_rows_from_a_real_run_with_an_ineligible_trigger():
    predict = FlipAt(TEXTS, CLEAN, K)
    res = effectiveness(predict, TEXTS, [1] * len(TEXTS), "cf")  # every sample has cf's class: none eligible
    rows = sweep_rows({"m": res})
    assert rows[0]["n"] == 0 and rows[0]["E"] is None
    assert sweep_average(rows) == [{"model": "m", "insertions": None, "E": None, "S": None, "triggers": 0}]
