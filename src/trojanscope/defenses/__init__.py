"""Defenses: purification (a backdoored model in, a cleaner model out) and detection of poisoned
inputs, one module per method, all registered in :data:`DEFENSES` (``trojanscope.registry``), which
the CLI's choices, the Purify page and the benchmarks read.

A *purifier* takes the backdoored classifier and a small clean labelled subset and returns the
purified model (``PurifyMethod.run``); the shared pipeline (``defenses.pipeline.run_purify``)
measures CACC/ASR before and after with the one planted-attack answer and saves a model card. A
*detector* scores inputs (higher: more likely poisoned) with a threshold set from clean data only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from trojanscope.registry import Registry


@dataclass(frozen=True)
class Defense:
    """One defense. ``kind``: ``purify`` or ``detect``; ``config``: its config dataclass (every knob,
    with the defaults of methods.md); ``run``: the method (signature depends on ``kind``);
    ``changes``: what it modifies, in words; ``needs_pretrained``: it needs the pre-trained weights
    of the backdoored model's architecture (Fine-mixing)."""

    name: str
    description: str
    kind: str
    config: type
    run: Callable[..., Any]
    changes: str = ""
    needs_pretrained: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class PurifyContext:
    """What every purifier gets besides the model, the clean subset and its config.

    ``dev``: clean held-out data (PURE's accuracy floor), ``pretrained``: the pre-trained model the
    backdoored one was fine-tuned from, where known (Fine-mixing), ``seed``/``device`` for every
    random choice and the training loop, ``on_event``/``progress`` as in ``training.loop.train``.
    """

    seed: int = 0
    device: str = "auto"
    dev: Any = None
    pretrained: str | None = None
    on_event: Callable[[dict[str, Any]], None] | None = None
    progress: bool = False


# A purifier: ``run(loaded, clean, cfg, ctx) -> dict`` modifies ``loaded.model`` in place (the pipeline
# hands it a fresh copy of the backdoored model) and returns what its card should record (e.g. the
# pruned heads). A detector: ``run(loaded, clean_dev, cfg, ctx) -> Detector`` fitted on clean data only.
DEFENSES: Registry[Defense] = Registry("defense")


def purifiers() -> list[str]:
    _load_all()
    return DEFENSES.names(lambda d: d.kind == "purify")


def detectors() -> list[str]:
    _load_all()
    return DEFENSES.names(lambda d: d.kind == "detect")


def get_defense(name: str) -> Defense:
    _load_all()
    return DEFENSES.get(name)


_LOADED = False


def _load_all() -> None:
    """Import every defense module once, so each registers itself (modules register at import)."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    import importlib
    import pkgutil

    for mod in pkgutil.iter_modules(__path__):
        if not mod.name.startswith("_") and mod.name not in ("pipeline",):
            importlib.import_module(f"{__name__}.{mod.name}")
