"""RoBERTa (``RobertaModel``, ``RobertaForSequenceClassification``): BERT's layers (``encoder.layer``); a bare
encoder has a pooler, a classifier none: its head (``RobertaClassificationHead``: dense, tanh, out_proj) reads
the sequence's first position itself. Positions start after ``padding_idx``, so two rows of the position
table are never used."""

from __future__ import annotations

import torch

from trojanscope.models.arch.bert import BertArch


class RobertaArch(BertArch):
    model_type = "roberta"
    name = "RoBERTa"
    position_offset = 2

    @property
    def head(self) -> list[torch.nn.Module]:
        return [self.model.classifier] if self.has_head else []

    def head_input(self, hidden: torch.Tensor) -> torch.Tensor:
        """The whole sequence: ``RobertaClassificationHead`` takes ``hidden[:, 0]`` itself."""
        return hidden
