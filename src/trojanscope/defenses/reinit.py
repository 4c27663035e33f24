"""Re-initialisation: re-initialise the last transformer layer(s), then fine-tune on the clean subset.

The seed's baseline (methods.md section 4, 4b): the last transformer layer is where a backdoor's
shortcut to the label is most concentrated, so throwing it away and relearning it from clean data
removes part of the backdoor while the lower layers keep the task's features.

"Re-initialise" means the model's own initialisation (``PreTrainedModel._init_weights``: normal
weights with the config's ``initializer_range``, zero biases, unit LayerNorms), applied to every
module of the chosen layer unit(s) under a seeded generator that leaves the process's random state
alone. Transformers 5 marks loaded parameters as initialised (``_is_hf_initialized``) and its
``init`` functions then skip them, so the marks are lifted for exactly those modules while they are
re-initialised, and put back afterwards.

Layer units come from ``models.arch`` (``Arch.units``): BERT/RoBERTa/DistilBERT layers; for ALBERT the
shared layer *groups* (one group is every layer at once, so ``layers=1`` re-initialises the whole
shared transformer of a one-group ALBERT).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from trojanscope.data.datasets import TextDataset
from trojanscope.defenses import DEFENSES, Defense, PurifyContext
from trojanscope.defenses.finetune import FinetuneConfig, finetune, train_summary
from trojanscope.errors import TrojanScopeError
from trojanscope.models.arch import architecture


@dataclass
class ReinitConfig(FinetuneConfig):
    """Re-initialise the last ``layers`` layer unit(s) (the seed: 1), then fine-tune (the
    :class:`FinetuneConfig` knobs; ``epochs=0`` stops after the re-initialisation)."""

    layers: int = 1

    def validate(self) -> "ReinitConfig":
        if self.layers < 1:
            raise TrojanScopeError(f"layers to re-initialise must be at least 1, got {self.layers}")
        if self.epochs < 0:
            raise TrojanScopeError(f"epochs must be non-negative, got {self.epochs}")
        if self.epochs > 0:
            super().validate()
        return self


def last_units(model: torch.nn.Module, layers: int) -> list[tuple[int, torch.nn.Module]]:
    """The last ``layers`` layer units as ``(0-based index, module)``, refusing more than the model has."""
    arch = architecture(model)
    units = arch.units
    if layers > len(units):
        what = arch.unit_name
        raise TrojanScopeError(f"cannot take the last {layers} {what}s: the model has {len(units)} {what}"
                               f"{'' if len(units) == 1 else 's'}")
    return [(i, units[i]) for i in range(len(units) - layers, len(units))]


def unit_prefix(model: torch.nn.Module, index: int) -> str:
    """The parameter-name prefix of layer unit ``index`` (e.g. ``bert.encoder.layer.5.``)."""
    target = architecture(model).units[index]
    for name, module in model.named_modules():
        if module is target:
            return name + "."
    raise TrojanScopeError(f"layer unit {index} is not a submodule of the model")  # pragma: no cover


def reinitialize(model: torch.nn.Module, layers: int = 1, seed: int = 0) -> list[str]:
    """Re-initialise the last ``layers`` layer units of ``model`` in place with its own
    ``_init_weights``, seeded by ``seed`` (the global random state is left untouched).

    Returns the names of the parameters it re-initialised (every parameter of those units).
    """
    init = getattr(model, "_init_weights", None)
    if not callable(init):
        raise TrojanScopeError(f"{type(model).__name__} has no _init_weights; re-initialisation needs a "
                               "transformers model")
    chosen = last_units(model, layers)
    names: list[str] = []
    with torch.random.fork_rng(devices=[model.device] if model.device.type == "cuda" else []), torch.no_grad():
        torch.manual_seed(seed)
        for index, unit in chosen:
            prefix = unit_prefix(model, index)
            names += [prefix + n for n, _ in unit.named_parameters()]
            marked = [t for t in (*unit.modules(), *unit.parameters(), *unit.buffers())
                      if getattr(t, "_is_hf_initialized", False)]
            for t in marked:
                t._is_hf_initialized = False
            try:
                for module in unit.modules():
                    init(module)
            finally:
                for t in marked:
                    t._is_hf_initialized = True
    return names


def run_reinit(loaded: Any, clean: TextDataset, cfg: ReinitConfig, ctx: PurifyContext) -> dict[str, Any]:
    """Re-initialise the last ``cfg.layers`` layer unit(s), then fine-tune on ``clean``."""
    cfg.validate()
    model = loaded.model
    names = reinitialize(model, cfg.layers, ctx.seed)
    arch = architecture(model)
    n_units = len(arch.units)
    record: dict[str, Any] = {
        "reinitialized_layers": [i + 1 for i, _ in last_units(model, cfg.layers)],  # 1-based, as TAL's heads
        "reinitialized_parameters": len(names),
        "layer_unit": arch.unit_name,
        "num_layer_units": n_units,
        "n_clean": len(clean),
    }
    if cfg.epochs > 0:
        record.update(train_summary(finetune(loaded, clean, cfg, ctx), len(clean)))
    return record


DEFENSES.register("reinit", Defense(
    name="reinit", kind="purify", config=ReinitConfig, run=run_reinit,
    description="Re-initialisation: re-initialise the last transformer layer(s), then fine-tune on the clean subset",
    changes="every weight of the last `layers` transformer layer(s) (re-initialised), then every weight but the "
            "word embeddings (by default) by fine-tuning"))
