"""Training: the shared loop, its loss-term hook, metrics (CACC/ASR), and the train-and-save pipeline."""

from trojanscope.training.loop import Batch, LossTerm, TrainConfig, TrainResult, train
from trojanscope.training.metrics import asr, cacc, evaluate, predict_proba

__all__ = ["Batch", "LossTerm", "TrainConfig", "TrainResult", "train", "asr", "cacc", "evaluate", "predict_proba"]
