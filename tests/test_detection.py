"""Detection of poisoned inputs (STRIP, RAP): thresholds from clean data only, never the poison labels;
separation of triggered from clean inputs on the tiny backdoored model; the ``detect`` command."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from trojanscope.cli import main
from trojanscope.data.datasets import TextDataset, load_dataset
from trojanscope.data.poison import poisoned_test_set
from trojanscope.defenses import PurifyContext, detectors, get_defense
from trojanscope.defenses.detection import (RAPConfig, STRIPConfig, auroc, evaluate_detector, fit_rap, fit_strip,
                                            rap_loss, strip_perturb, tfidf_ranked, threshold_at_frr)
from trojanscope.errors import TrojanScopeError
from trojanscope.models.loading import load_model
from trojanscope.training.metrics import predict_proba


@pytest.fixture(scope="module")
def bd(tiny_pair):
    return load_model(tiny_pair / "demo" / "backdoored")


@pytest.fixture(scope="module")
def splits(data_dir):
    return load_dataset(str(data_dir / "sst2"), "dev"), load_dataset(str(data_dir / "sst2"), "test")


class Guarded:
    """A poisoned set whose labels, original labels and config (which holds the target) cannot be read."""

    def __init__(self, ds):
        self._ds = ds

    def __getattr__(self, name):
        if name in ("labels", "original_labels", "config", "poisoned"):
            raise AssertionError(f"the poisoned set's {name} were read")
        return getattr(self._ds, name)

    def __len__(self):
        return len(self._ds.texts)


def scrambled(ds: TextDataset, seed: int = 0) -> TextDataset:
    labels = list(ds.labels)
    random.Random(seed).shuffle(labels)
    return TextDataset(list(ds.texts), [1 - y for y in labels], ds.name, ds.split)


def test_registered_as_detectors():
    assert {"strip", "rap"} <= set(detectors())
    for name in ("strip", "rap"):
        d = get_defense(name)
        assert d.kind == "detect" and d.changes


def test_auroc_and_threshold_by_hand():
    # neg 0, 1, 1; pos 1, 2: pairs (pos > neg) = 3 + 0.5*2 (ties with 1) + 3 = ... counted by hand: 5 / 6
    assert auroc([0, 1, 1], [1, 2]) == pytest.approx(5 / 6)
    assert auroc([0, 0], [1, 1]) == 1.0 and auroc([1, 1], [0, 0]) == 0.0 and auroc([3, 3], [3]) == 0.5
    assert np.isnan(auroc([], [1.0]))
    scores = np.arange(100, dtype=float)
    t = threshold_at_frr(scores, 0.05)
    assert (scores > t).mean() == pytest.approx(0.05)
    with pytest.raises(TrojanScopeError, match="outside"):
        threshold_at_frr(scores, 1.0)


def test_rap_loss_by_hand():
    drop = torch.tensor([0.05, 0.2, 0.5])
    # 0.05 is 0.05 short of a = 0.1; 0.2 is inside [0.1, 0.3]; 0.5 is 0.2 beyond b = 0.3
    assert rap_loss(drop, 0.1, 0.3).item() == pytest.approx((0.05 + 0 + 0.2) / 3)
    assert rap_loss(drop, 0.1, 0.3, scale=2.0).item() == pytest.approx((0.1 + 0 + 0.2) / 3)
    assert rap_loss(torch.tensor([0.1, 0.3, 0.25]), 0.1, 0.3).item() == 0.0


def test_tfidf_and_perturbation_are_seeded():
    texts = ["the movie was good", "the film was awful awful", "the plot", "!!"]
    ranked = tfidf_ranked(texts)
    assert len(ranked) == 3 and ranked[1][0] == "awful" and ranked[2][0] == "plot"
    text = "one two three four five six seven"
    a = strip_perturb(text, ranked, random.Random(1), 0.5)
    assert a == strip_perturb(text, ranked, random.Random(1), 0.5)
    changed = sum(x != y for x, y in zip(a.split(), text.split()))
    assert len(a.split()) == 7 and 1 <= changed <= 4
    vocab = {w for r in ranked for w in r}
    assert all(w in vocab for w, o in zip(a.split(), text.split()) if w != o)


def test_strip_threshold_comes_only_from_clean_dev_texts(bd, splits):
    dev, test = splits
    det = fit_strip(bd, dev, STRIPConfig(), PurifyContext(seed=0))
    # the labels of the clean dev data play no part, and the threshold is the FRR quantile of its scores
    again = fit_strip(bd, scrambled(dev), STRIPConfig(), PurifyContext(seed=0))
    assert again.threshold == det.threshold
    np.testing.assert_array_equal(again.clean_scores, det.clean_scores)
    np.testing.assert_allclose(det.score(dev.texts), det.clean_scores)
    assert det.threshold == pytest.approx(float(np.quantile(det.clean_scores, 0.99)))
    # a text's score does not depend on what it is scored with
    np.testing.assert_allclose(det.score(dev.texts[:5]), det.clean_scores[:5])
    pt = Guarded(poisoned_test_set(test, "cf", 1))
    ev = evaluate_detector(det, test.texts, pt.texts)
    assert ev["threshold"] == det.threshold and ev["n_poisoned"] == len(pt)


def test_rap_trains_a_copy_and_thresholds_on_clean_data(bd, splits):
    dev, test = splits
    before = {k: v.clone() for k, v in bd.model.state_dict().items()}
    cfg = RAPConfig(target=1, min_steps=10)
    det = fit_rap(bd, dev, cfg, PurifyContext(seed=0))
    after = bd.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "RAP modified the user's model"
    # the copy differs from the model only in the RAP word's embedding row(s)
    ids = det.info["token_ids"]
    copy_sd = det.model.state_dict()
    emb_key = next(k for k in before if k.endswith("word_embeddings.weight"))
    changed = (copy_sd[emb_key] != before[emb_key]).any(-1).nonzero().flatten().tolist()
    assert changed == ids
    assert all(torch.equal(before[k], copy_sd[k]) for k in before if k != emb_key)
    assert det.info["protected_class"] == 1 and det.model is not bd.model
    # thresholds: the FRR quantile of clean held-out dev scores; poisoned data cannot change them
    assert det.threshold == pytest.approx(float(np.quantile(det.clean_scores, 0.99)))
    pt = Guarded(poisoned_test_set(test, "cf", 1))
    ev = evaluate_detector(det, test.texts, pt.texts)
    assert ev["threshold"] == det.threshold
    again = fit_rap(bd, dev, cfg, PurifyContext(seed=0))
    assert again.threshold == det.threshold


def test_rap_needs_a_protected_class(tiny_bert, splits):
    # no card, no target: RAP does not guess (it may never estimate it from poisoned data)
    dev, _ = splits
    with pytest.raises(TrojanScopeError, match="--target"):
        fit_rap(load_model(tiny_bert), dev, RAPConfig(), PurifyContext())
    with pytest.raises(TrojanScopeError, match="UNK|special"):
        fit_rap(load_model(tiny_bert), dev, RAPConfig(word="🦄", target=1), PurifyContext())


@pytest.mark.parametrize("seed", [0, 1])
def test_detectors_separate_triggered_from_clean_inputs(bd, splits, seed):
    """What is reliable on the tiny model. Its two output states (p = 0.011 / 0.991 for every input) have
    nearly the same entropy, so STRIP separates only weakly (AUROC 0.60-0.67 over seeds); and it is so
    saturated that RAP's one-row embedding gets no usable gradient (the drop stays ~0), so RAP's AUROC
    (about 0.75) comes from its rule that only inputs predicted as the protected class can be flagged.
    On the real demo model (MiniLM, BadNets+TAL) RAP reaches AUROC 0.98 and STRIP 0.85 (see the report)."""
    dev, test = splits
    pt = poisoned_test_set(test, "cf", 1, seed=seed)
    strip = evaluate_detector(fit_strip(bd, dev, STRIPConfig(), PurifyContext(seed=seed)), test.texts, pt.texts)
    rap_det = fit_rap(bd, dev, RAPConfig(target=1), PurifyContext(seed=seed))
    rap = evaluate_detector(rap_det, test.texts, pt.texts)
    assert strip["auroc"] > 0.55, strip
    assert rap["auroc"] > 0.65, rap
    for ev in (strip, rap):
        assert 0 <= ev["frr"] <= 0.1 and 0 <= ev["far"] <= 1
    # RAP never flags an input the model does not predict as the protected class
    preds = predict_proba(bd.model, bd.tokenizer, test.texts).argmax(-1)
    assert not (rap_det.flag(test.texts) & (preds != 1)).any()


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_detect_cli_json(use_data, tiny_pair, capsys, monkeypatch):
    model = str(tiny_pair / "demo" / "backdoored")
    results = {}
    for method in ("strip", "rap"):
        code, out, err = run(capsys, "detect", "--model", model, "--method", method, "--n", "40", "--json")
        assert code == 0, err
        res = json.loads(out)
        assert set(res) >= {"method", "frr", "far", "auroc", "threshold", "n_clean", "n_poisoned", "trigger",
                            "target"}
        assert res["method"] == method and res["trigger"] == "cf" and res["target"] == 1
        assert res["n_clean"] == 40 and res["n_poisoned"] == 40 and 0 <= res["auroc"] <= 1
        results[method] = res
    # only texts reach the detector: the poisoned inputs the command builds (Backdoor.poison, whatever module
    # calls it) are guarded, their labels, original labels and config unreadable, and the answer is the same
    from trojanscope.models.backdoor import Backdoor

    real = Backdoor.poison
    monkeypatch.setattr(Backdoor, "poison", lambda self, *a, **k: Guarded(real(self, *a, **k)))
    code, out, err = run(capsys, "detect", "--model", model, "--method", "strip", "--n", "40", "--json")
    assert code == 0, err
    guarded = json.loads(out)
    for key in ("frr", "far", "auroc", "threshold", "asr"):
        assert guarded[key] == results["strip"][key]
    # the threshold comes from clean dev data alone: other poisoned inputs (another trigger) leave it as it is
    code, out, err = run(capsys, "detect", "--model", model, "--method", "strip", "--n", "40", "--trigger", "mn",
                         "--target", "1", "--json")
    assert code == 0, err
    other = json.loads(out)
    assert other["trigger"] == "mn" and other["n_poisoned"] == 40
    assert other["threshold"] == results["strip"]["threshold"] and other["frr"] == results["strip"]["frr"]


@pytest.mark.parametrize("argv, message", [
    (["--method", "fine-pruning"], "unknown detection method"),
    (["--method", "nope"], "allowed: "),
    (["--method", "strip", "--frr", "1.5"], "outside (0, 1)"),
    (["--method", "rap", "--frr", "0"], "outside (0, 1)"),
])
def test_detect_bad_input_exits_2_with_one_line(use_data, tiny_pair, capsys, argv, message):
    code, out, err = run(capsys, "detect", "--model", str(tiny_pair / "demo" / "backdoored"), *argv)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], err


def test_detect_refuses_a_bare_encoder(use_data, tiny_backbone, capsys):
    code, out, err = run(capsys, "detect", "--model", str(tiny_backbone), "--method", "strip", "--trigger", "cf",
                         "--target", "1")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "bare encoder" in err, err
