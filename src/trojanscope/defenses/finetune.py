"""CFT and TS-FT: fine-tune the backdoored model on the clean subset, as it is (CFT) or token-split
(TS-FT, the first step of MBTSAD; methods.md section 4).

Both go through the one training loop (``training.loop.train``). :class:`FinetuneConfig` and
:func:`finetune` are the shared "then fine-tune" step that other purifiers (re-initialisation,
fine-pruning, Fine-mixing, PURE) can reuse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from trojanscope.data.datasets import TextDataset
from trojanscope.data.poison import PoisonedDataset
from trojanscope.defenses import DEFENSES, Defense, PurifyContext
from trojanscope.defenses.splitting import SplitConfig, split_dataset
from trojanscope.errors import TrojanScopeError
from trojanscope.training.loop import LossTerm, TrainConfig, TrainResult, train


@dataclass
class FinetuneConfig:
    """Fine-tuning on the clean subset (CFT). Word embeddings stay fixed unless asked, as in training."""

    epochs: float = 2.0
    lr: float = 5e-5
    batch_size: int = 32
    warmup: float = 0.06
    weight_decay: float = 0.01
    max_length: int = 128
    train_word_embeddings: bool = False
    precision: str = "auto"  # auto | fp32 | bf16 (training.loop.TrainConfig.precision)

    def validate(self) -> "FinetuneConfig":
        self.train_config().validate()
        return self

    def train_config(self, ctx: PurifyContext | None = None, *, epochs: float | None = None,
                     lr: float | None = None, dropout: bool = True) -> TrainConfig:
        """The loop's :class:`TrainConfig` (seed and device from ``ctx``; ``dropout``: TrainConfig.dropout)."""
        ctx = ctx or PurifyContext()
        return TrainConfig(epochs=self.epochs if epochs is None else epochs, lr=self.lr if lr is None else lr,
                           batch_size=self.batch_size, warmup=self.warmup, weight_decay=self.weight_decay,
                           max_length=self.max_length, train_word_embeddings=self.train_word_embeddings,
                           precision=self.precision, seed=ctx.seed, device=ctx.device, dropout=dropout)


@dataclass
class TSFTConfig(FinetuneConfig):
    """Fine-tuning on ``k`` token-split variants of every clean text (TS-FT)."""

    k: int = 3
    ratio: float = 0.3
    min_len: int = 4
    max_words: int = 10
    augmentation: str = "split"  # split | eda | aeda | addtrig: another augmentation in place of splitting (Table III)

    def validate(self) -> "TSFTConfig":
        super().validate()
        self.split_config().validate()
        from trojanscope.defenses.augmentations import augmentations

        augmentations().get(self.augmentation)  # unknown names are refused, the known ones listed
        return self

    def split_config(self, seed: int = 0) -> SplitConfig:
        return SplitConfig(k=self.k, ratio=self.ratio, min_len=self.min_len, max_words=self.max_words, seed=seed)


def phase_events(on_event: Callable[[dict[str, Any]], None] | None, phase: int, phases: int,
                 name: str) -> Callable[[dict[str, Any]], None] | None:
    """Re-scale one training run's step/total events to ``phase`` (0-based) of ``phases`` equal parts, so a
    job's progress runs once from 0 to 1 over a method with several training runs; events gain ``phase``."""
    if on_event is None:
        return None

    def relay(event: dict[str, Any]) -> None:
        event = dict(event, phase=name)
        total = event.get("total")
        if total and "step" in event:
            event["step"], event["total"] = phase * total + event["step"], phases * total
        on_event(event)

    return relay


def finetune(loaded: Any, data: TextDataset | PoisonedDataset, cfg: FinetuneConfig, ctx: PurifyContext, *,
             loss_terms: Sequence[LossTerm] = (), train_cfg: TrainConfig | None = None,
             on_event: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Fine-tune ``loaded.model`` in place on ``data`` (clean texts) with ``cfg`` (or ``train_cfg``)."""
    if isinstance(data, TextDataset):
        data = PoisonedDataset.clean(data)
    if len(data) == 0:
        raise TrojanScopeError("no clean texts to fine-tune on")
    return train(loaded.model, loaded.tokenizer, data, train_cfg or cfg.train_config(ctx), loss_terms=loss_terms,
                 on_event=ctx.on_event if on_event is None else on_event, progress=ctx.progress)


def train_summary(result: TrainResult, n_train: int) -> dict[str, Any]:
    """What a purifier records of its fine-tuning (steps, seconds, samples, per-epoch history)."""
    return {"steps": result.steps, "train_seconds": round(result.seconds, 2), "n_train": n_train,
            "history": result.history}


def run_cft(loaded: Any, clean: TextDataset, cfg: FinetuneConfig, ctx: PurifyContext) -> dict[str, Any]:
    """CFT: fine-tune on the clean subset."""
    cfg.validate()
    return train_summary(finetune(loaded, clean, cfg, ctx), len(clean))


def run_tsft(loaded: Any, clean: TextDataset, cfg: TSFTConfig, ctx: PurifyContext) -> dict[str, Any]:
    """TS-FT: fine-tune on ``k`` token-split variants of every clean text (or ``k`` variants made by another
    ``augmentation``: EDA, AEDA, Add Trig; the seed's Table III)."""
    cfg.validate()
    if cfg.augmentation == "split":
        data = split_dataset(clean, cfg.split_config(ctx.seed))
    else:
        from trojanscope.defenses.augmentations import augmentations

        texts, labels = augmentations().get(cfg.augmentation).run(clean.texts, clean.labels, cfg.k, ctx.seed)
        data = TextDataset(texts, labels, clean.name, f"{clean.split}+{cfg.augmentation}", clean.source,
                           clean.label_names)
    return train_summary(finetune(loaded, data, cfg, ctx), len(data))


DEFENSES.register("cft", Defense(
    name="cft", kind="purify", config=FinetuneConfig, run=run_cft,
    description="CFT: fine-tune the backdoored model on the clean subset",
    changes="every weight but the word embeddings (by default), by fine-tuning on the clean subset"))
DEFENSES.register("tsft", Defense(
    name="tsft", kind="purify", config=TSFTConfig, run=run_tsft,
    description="TS-FT: fine-tune on k token-split variants of every clean text (MBTSAD's first step)",
    changes="every weight but the word embeddings (by default), by fine-tuning on token-split clean text"))
