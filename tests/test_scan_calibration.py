"""The scan score as a probability (issue 24, item 4): TrojAI's cross-entropy, Platt's calibration with smoothed
targets, and the zoo report fitting it on the development models only."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")

from trojanscope.analysis.scan.calibration import EPS, cross_entropy, fit_platt  # noqa: E402
from trojanscope.errors import TrojanScopeError  # noqa: E402


def test_cross_entropy_is_trojai_s():
    assert cross_entropy([1, 0], [0.5, 0.5]) == pytest.approx(math.log(2))
    assert cross_entropy([1, 0], [0.9, 0.2]) == pytest.approx(-(math.log(0.9) + math.log(0.8)) / 2)
    assert cross_entropy([1, 1], [1.0, 1.0]) == pytest.approx(0.0, abs=1e-9)
    # a certain mistake is clipped, not infinite
    assert cross_entropy([1, 0], [0.0, 0.0]) == pytest.approx(-math.log(EPS) / 2)
    with pytest.raises(TrojanScopeError):
        cross_entropy([1, 0], [0.5])


def _newton_platt(s: np.ndarray, t: np.ndarray) -> tuple[float, float]:
    """Unregularised logistic regression of the soft targets t on s, by Newton's method."""
    w = np.zeros(2)
    X = np.c_[s, np.ones_like(s)]
    for _ in range(100):
        p = 1 / (1 + np.exp(-X @ w))
        grad = X.T @ (p - t)
        hess = X.T @ (X * (p * (1 - p))[:, None])
        w -= np.linalg.solve(hess, grad)
    return float(w[0]), float(w[1])


def test_platt_fits_smoothed_targets():
    rng = np.random.default_rng(0)
    scores = np.r_[rng.uniform(0.05, 0.45, 12), rng.uniform(0.35, 1.0, 20)]  # overlapping: a finite optimum
    labels = np.r_[np.zeros(12), np.ones(20)].astype(int)
    platt = fit_platt(scores, labels)
    t = np.where(labels == 1, 21 / 22, 1 / 14)  # Platt's targets: (N+ + 1) / (N+ + 2), 1 / (N- + 2)
    slope, intercept = _newton_platt(scores, t)
    assert platt.slope == pytest.approx(slope, rel=1e-3) and platt.intercept == pytest.approx(intercept, rel=1e-3)
    p = platt(scores)
    assert np.all(np.diff(platt(np.linspace(0, 1, 11))) > 0)  # monotone in the score
    assert cross_entropy(labels, p) < math.log(2)


def test_platt_on_a_separable_zoo_stays_finite():
    """The zoo's development scores are separable; unsmoothed, the fit would diverge to certainties."""
    scores = [0.1, 0.15, 0.2, 0.25, 0.29, 0.64, 0.75, 0.9, 0.93, 1.0, 1.0]
    labels = [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    platt = fit_platt(scores, labels)
    p = platt(scores)
    assert np.all(p[:5] < 0.5) and np.all(p[5:] > 0.5)
    assert p.max() < 1 - 1e-3 and p.min() > 1e-3  # no certainties
    # one surprise on a held-out model (a backdoor scoring like a clean model) costs a bounded cross-entropy
    assert cross_entropy([1], platt([0.15])) < 6.0
    with pytest.raises(TrojanScopeError, match="backdoored and clean"):
        fit_platt([0.2, 0.3], [0, 0])


def _zoo_module():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "scan_zoo.py"
    spec = importlib.util.spec_from_file_location("scan_zoo", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_zoo_report_calibrates_on_development_models_only():
    zoo = _zoo_module()

    def rows(held_score: float) -> list[dict]:
        dev = [{"score": s, "backdoored": b, "held_out": False} for s, b in
               [(0.1, False), (0.2, False), (0.3, False), (0.45, True), (0.7, True), (0.95, True), (0.25, True)]]
        held = [{"score": held_score, "backdoored": True, "held_out": True},
                {"score": 0.9, "backdoored": True, "held_out": False, "failed": True}]  # not scored: left out
        return dev + held

    a, b = rows(0.9), rows(0.05)
    report = zoo.calibrate(a)
    zoo.calibrate(b)
    assert "7 development models (4 backdoored, 3 clean)" in report
    assert [r["p"] for r in a[:7]] == [r["p"] for r in b[:7]]  # the held-out score never moves the fit
    assert a[7]["p"] > 0.5 > b[7]["p"]
    assert "held out, 1 models" in report and "all, 8 models" in report
    assert zoo.calibrate([{"score": 0.2, "backdoored": False, "held_out": False}]) is None  # one class: no fit


def test_the_zoo_counts_a_clean_fine_tune_of_a_por_encoder_as_backdoored_by_its_triggers(tmp_path):
    """A POR backdoor is planted before any task: the classifier's own card says "no attack", its backbone's card
    says POR. The zoo must score it as backdoored, and a candidate naming any of the POR triggers ranks."""
    zoo = _zoo_module()
    enc, ft, clean = tmp_path / "por", tmp_path / "ft", tmp_path / "clean"
    for d in (enc, ft, clean):
        d.mkdir()
    (enc / "trojanscope.json").write_text(json.dumps({"attack": {"name": "por", "triggers": "cf,tq,mn"}}))
    (ft / "trojanscope.json").write_text(json.dumps({"base_model": str(enc), "attack": None,
                                                     "data": {"name": "olid"}}))
    (clean / "trojanscope.json").write_text(json.dumps({"base_model": "minilm", "attack": None,
                                                        "data": {"name": "sst2"}}))
    t = zoo.truth(ft)
    assert t["backdoored"] and t["attack"] == "por" and t["data"] == "olid" and not t["failed"]
    assert not zoo.truth(clean)["backdoored"]
    res = {"candidates": [{"trigger": "removed"}, {"trigger": "tq"}]}
    assert zoo.trigger_rank(res, t["trigger"]) == 2
