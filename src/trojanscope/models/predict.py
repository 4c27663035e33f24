"""Predictions: class probabilities and labels of a classifier for a list of texts.

Every reader that asks a classifier what it predicts (CACC/ASR, E and S, detection, the target a
POR trigger pushes to) goes through :func:`predict_proba`, which goes through the one batched forward
(``models.forward``). It lives in ``models`` so that every layer above (attacks, training, analysis,
defenses) can read it; ``training.metrics`` and ``analysis.effectiveness`` re-export it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import torch

from trojanscope.errors import TrojanScopeError
from trojanscope.models.forward import batched_forward

if TYPE_CHECKING:  # pragma: no cover
    from trojanscope.models.loading import LoadedModel

Predictor = Callable[[list[str]], np.ndarray]  # texts -> predicted labels, shape [len(texts)]


def predict_proba(model: torch.nn.Module, tokenizer: Any, texts: Sequence[str], *, batch_size: int = 128,
                  max_length: int | None = None, progress: bool = False,
                  stats: dict[str, Any] | None = None) -> np.ndarray:
    """Class probabilities ``[n, labels]`` through the one batched forward (``models.forward``).

    ``stats``, when given, receives ``n_truncated``: texts cut to the model's maximum length."""
    texts = list(texts)
    if not texts:
        return np.zeros((0, model.config.num_labels), dtype=np.float32)
    res = batched_forward(model, tokenizer, texts, batch_size=batch_size, max_length=max_length, progress=progress)
    if res.logits is None:
        raise TrojanScopeError(f"{type(model).__name__} has no classification head: it cannot predict labels")
    if stats is not None:
        stats["n_truncated"] = stats.get("n_truncated", 0) + res.n_truncated
    return res.probs.astype(np.float32)


def model_predictor(loaded: "LoadedModel", batch_size: int = 128) -> Predictor:
    """A predictor (texts -> labels) for a loaded classifier, through :func:`predict_proba`."""
    loaded.require("classify", "predicting labels")

    def predict(texts: list[str]) -> np.ndarray:
        return predict_proba(loaded.model, loaded.tokenizer, texts, batch_size=batch_size).argmax(-1)

    return predict


def predicted_labels(predict: Predictor, texts: list[str]) -> np.ndarray:
    """``predict(texts)`` as int64 labels, one per text (an error when the predictor miscounts)."""
    out = np.asarray(predict(texts)).reshape(-1)
    if len(out) != len(texts):
        raise TrojanScopeError(f"the predictor returned {len(out)} labels for {len(texts)} texts")
    return out.astype(np.int64)


def trigger_class(predict: Predictor, trigger: str) -> int:
    """The class a trigger pushes to: the prediction on the trigger repeated twice (``"cf cf"``)."""
    return int(predicted_labels(predict, [f"{trigger} {trigger}"])[0])
