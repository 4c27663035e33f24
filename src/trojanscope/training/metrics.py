"""Predictions, CACC and ASR: re-exported from ``models.predict`` and ``models.metrics``, where they
live so that every layer (attacks, training, analysis, defenses) reads one definition from below.
``from trojanscope.training.metrics import evaluate`` (and ``from trojanscope.training import cacc, asr,
evaluate, predict_proba``) keep working."""

from __future__ import annotations

from trojanscope.models.metrics import asr, cacc, evaluate, meaningless
from trojanscope.models.predict import predict_proba

__all__ = ["asr", "cacc", "evaluate", "meaningless", "predict_proba"]
