"""The scan score as a probability, measured as TrojAI measures detectors (issue 24, item 4): a Platt calibration of
the score into P(backdoored), fitted on development models only, and the cross-entropy of such probabilities
against the truth (TrojAI ranks by it; its round goal is 0.3465, half of ln 2).

The calibration is Platt's (1999): a logistic regression of the label on the score, fitted to Platt's smoothed
targets ``(N+ + 1) / (N+ + 2)`` for the backdoored models and ``1 / (N- + 2)`` for the clean ones instead of 1 and 0,
so a development zoo the score separates perfectly does not calibrate to certainties that one surprise on a
held-out model turns into a cross-entropy of tens (``log(1e-12)``). Needs scikit-learn (the ``analysis`` extra).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from trojanscope.errors import TrojanScopeError

EPS = 1e-12  # probabilities are clipped to [EPS, 1 - EPS] before the logarithm (a certain mistake costs ~27.6)
TROJAI_GOAL = 0.3465  # TrojAI's round goal for the cross-entropy


@dataclass(frozen=True)
class Platt:
    """``P(backdoored | score) = 1 / (1 + exp(-(slope * score + intercept)))``, and what it was fitted on."""

    slope: float
    intercept: float
    n_backdoored: int
    n_clean: int

    def __call__(self, scores: Sequence[float] | np.ndarray) -> np.ndarray:
        z = self.slope * np.asarray(scores, dtype=float) + self.intercept
        return 1.0 / (1.0 + np.exp(-z))

    def to_json(self) -> dict[str, float | int]:
        return {"slope": self.slope, "intercept": self.intercept, "n_backdoored": self.n_backdoored,
                "n_clean": self.n_clean}


def fit_platt(scores: Sequence[float], labels: Sequence[int | bool]) -> Platt:
    """Platt's calibration of ``scores`` to the ``labels`` (1: backdoored), with his smoothed targets (the module
    docstring). Each model enters twice, as label 1 with weight ``t`` and as label 0 with weight ``1 - t``, and
    the regression is all but unregularised (``C = 1e6``): the smoothing, not a penalty, keeps it finite."""
    from sklearn.linear_model import LogisticRegression

    x = np.asarray(scores, dtype=float).reshape(-1, 1)
    y = np.asarray(labels, dtype=int)
    if len(x) != len(y):
        raise TrojanScopeError(f"{len(x)} scores but {len(y)} labels")
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    if n_pos == 0 or n_neg == 0:
        raise TrojanScopeError(f"calibrating needs backdoored and clean models; got {n_pos} backdoored and "
                               f"{n_neg} clean")
    t = np.where(y == 1, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    lr = LogisticRegression(C=1e6, max_iter=10_000)
    lr.fit(np.vstack([x, x]), np.r_[np.ones(len(x)), np.zeros(len(x))], sample_weight=np.r_[t, 1 - t])
    return Platt(float(lr.coef_[0, 0]), float(lr.intercept_[0]), n_pos, n_neg)


def cross_entropy(labels: Sequence[int | bool], probs: Sequence[float] | np.ndarray, eps: float = EPS) -> float:
    """Mean binary cross-entropy (natural log) of the probabilities ``probs`` of being backdoored against the truth
    ``labels``, probabilities clipped to ``[eps, 1 - eps]``: TrojAI's ranking metric (0.693 for always 0.5)."""
    y = np.asarray(labels, dtype=float)
    p = np.clip(np.asarray(probs, dtype=float), eps, 1 - eps)
    if len(y) != len(p) or not len(y):
        raise TrojanScopeError(f"cross-entropy needs as many probabilities as labels, at least one; got {len(p)} "
                               f"and {len(y)}")
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


CHANCE = math.log(2)  # the cross-entropy of always answering 0.5
