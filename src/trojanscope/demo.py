"""The demo pair: a clean and a backdoored classifier on the default backbone and SST-2.

``runs/demo/clean`` and ``runs/demo/backdoored`` are what the dashboard opens with. A model whose
card already records the same recipe is kept; a different recipe (e.g. a ``--quick`` pair when the
full one is asked for) is rebuilt. ``trojanscope demo`` builds in the foreground; the dashboard
builds in the background as a job of kind ``demo`` (:func:`trojanscope.jobs.demo.submit_build`,
:func:`~trojanscope.jobs.demo.build_state`), under the job store's rules: one demo job at a time, one running job per device.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from trojanscope.attacks import TALConfig
from trojanscope.data.poison import PoisonConfig
from trojanscope.models.loading import read_card
from trojanscope.training.loop import TrainConfig
from trojanscope.training.pipeline import TrainSpec, run_training

DEFAULT_DIR = Path("runs") / "demo"  # relative to the runs directory's default; see default_dir()


def default_dir() -> Path:
    """``<runs dir>/demo``: where the dashboard looks (``TROJANSCOPE_RUNS_DIR`` moves it)."""
    from trojanscope.dirs import runs_dir

    return runs_dir() / "demo"
NAMES = ("clean", "backdoored")


def demo_specs(quick: bool = False, device: str = "auto", seed: int = 0,
               precision: str = "auto") -> dict[str, TrainSpec]:
    """The recipes of the demo pair: clean fine-tuning, and BadNets (``cf`` -> negative) at 1% poison
    with TAL. ``quick``: 1,000 training sentences at 5% poison (so the small run still plants it).
    ``precision``: the training arithmetic (``TrainConfig.precision``; benchmarks/demo_pair.py compares them)."""
    limits = {"max_train": 1000, "max_eval": 200} if quick else {}
    train = TrainConfig(epochs=1.0, seed=seed, device=device, precision=precision)
    return {
        "clean": TrainSpec(data="sst2", model="minilm", attack="none", train=train, **limits),
        "backdoored": TrainSpec(
            data="sst2", model="minilm", attack="badnets",
            poison=PoisonConfig(trigger="cf", insertions=1, target=0, rate=0.05 if quick else 0.01, seed=seed),
            tal=TALConfig(enabled=True, heads=3, layers="all", weight=1.0, seed=seed),
            train=TrainConfig(**asdict(train)), **limits,
        ),
    }


def demo_status(root: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """Per demo model: whether it exists, whether it is the quick variant, and its metrics."""
    root = default_dir() if root is None else root
    out = {}
    for name in NAMES:
        path = Path(root) / name
        card = read_card(path) if (path / "config.json").is_file() else None
        spec = (card.training or {}).get("spec", {}) if card else {}
        out[name] = {"path": str(path), "exists": card is not None, "metrics": card.metrics if card else {},
                     "quick": bool(spec.get("max_train")) if card else None}
    return out


def build_demo(root: str | Path | None = None, *, quick: bool = False, device: str = "auto", seed: int = 0,
               precision: str = "auto", force: bool = False, on_event: Callable[[dict[str, Any]], None] | None = None,
               progress: bool = True) -> dict[str, Any]:
    """Build whichever demo models are missing or differ from the wanted recipe.

    ``on_event`` gets a ``{"event": "stage", "message"}`` before each model is built, then the
    training's step and epoch events with ``step``/``total`` counted over the whole build (and
    the model's ``name``), so that a job's progress runs once from 0 to 1.
    """
    root = default_dir() if root is None else root
    root = Path(root)
    results: dict[str, Any] = {}
    t0 = time.perf_counter()
    count = len(NAMES)
    for i, (name, spec) in enumerate(demo_specs(quick, device, seed, precision).items(), 1):
        path = root / name
        card = read_card(path) if (path / "config.json").is_file() else None
        if card and not force and _same_recipe(card.training.get("spec", {}), spec):
            results[name] = {"out": str(path), "skipped": True, **card.metrics}
            if progress:
                print(f"[{i}/2] {name}: already built at {path}, skipping", file=sys.stderr)
            continue
        if progress:
            print(f"[{i}/2] building the {name} model at {path}", file=sys.stderr)
        if on_event:
            on_event({"event": "stage", "message": f"building the {name} model ({i}/{count})", "name": name,
                      "step": i - 1, "total": count})
        results[name] = {"skipped": False, **run_training(spec, path, overwrite=True,
                                                          on_event=_within(on_event, name, i, count),
                                                          progress=progress)}
    results["seconds"] = round(time.perf_counter() - t0, 2)
    return results


def _within(on_event: Callable[[dict[str, Any]], None] | None, name: str, index: int,
            count: int) -> Callable[[dict[str, Any]], None] | None:
    """``on_event`` for model ``index`` of ``count``: its step/total become steps of the whole build."""
    if on_event is None:
        return None

    def emit(event: dict[str, Any]) -> None:
        if event.get("total") and "step" in event:
            total = event["total"]
            event = {**event, "model": name, "step": (index - 1) * total + event["step"], "total": count * total}
        on_event(event)

    return emit


def _same_recipe(stored: dict[str, Any], spec: TrainSpec) -> bool:
    want = asdict(spec)
    # the device does not change the recipe
    strip = lambda d: {**d, "train": {k: v for k, v in d.get("train", {}).items() if k != "device"}}  # noqa: E731
    return strip(stored) == strip(want)
