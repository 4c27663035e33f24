"""The demo pair: a clean and a backdoored classifier on the default backbone and SST-2.

``runs/demo/clean`` and ``runs/demo/backdoored`` are what the dashboard opens with. A model whose
card already records the same recipe is kept; a different recipe (e.g. a ``--quick`` pair when the
full one is asked for) is rebuilt.
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
from trojanscope.processes import background_env
from trojanscope.training.loop import TrainConfig
from trojanscope.training.pipeline import TrainSpec, run_training

DEFAULT_DIR = Path("runs") / "demo"
NAMES = ("clean", "backdoored")


def demo_specs(quick: bool = False, device: str = "auto", seed: int = 0) -> dict[str, TrainSpec]:
    """The recipes of the demo pair: clean fine-tuning, and BadNets (``cf`` -> negative) at 1% poison
    with TAL. ``quick``: 1,000 training sentences at 5% poison (so the small run still plants it)."""
    limits = {"max_train": 1000, "max_eval": 200} if quick else {}
    train = TrainConfig(epochs=1.0, seed=seed, device=device)
    return {
        "clean": TrainSpec(data="sst2", model="minilm", attack="none", train=train, **limits),
        "backdoored": TrainSpec(
            data="sst2", model="minilm", attack="badnets",
            poison=PoisonConfig(trigger="cf", insertions=1, target=0, rate=0.05 if quick else 0.01, seed=seed),
            tal=TALConfig(enabled=True, heads=3, layers="all", weight=1.0, seed=seed),
            train=TrainConfig(**asdict(train)), **limits,
        ),
    }


def demo_status(root: str | Path = DEFAULT_DIR) -> dict[str, dict[str, Any]]:
    """Per demo model: whether it exists, whether it is the quick variant, and its metrics."""
    out = {}
    for name in NAMES:
        path = Path(root) / name
        card = read_card(path) if (path / "config.json").is_file() else None
        spec = (card.training or {}).get("spec", {}) if card else {}
        out[name] = {"path": str(path), "exists": card is not None, "metrics": card.metrics if card else {},
                     "quick": bool(spec.get("max_train")) if card else None}
    return out


def build_demo(root: str | Path = DEFAULT_DIR, *, quick: bool = False, device: str = "auto", seed: int = 0,
               force: bool = False, on_event: Callable[[dict[str, Any]], None] | None = None,
               progress: bool = True) -> dict[str, Any]:
    """Build whichever demo models are missing or differ from the wanted recipe."""
    root = Path(root)
    results: dict[str, Any] = {}
    t0 = time.perf_counter()
    for i, (name, spec) in enumerate(demo_specs(quick, device, seed).items(), 1):
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
            on_event({"event": "model", "name": name, "index": i, "count": 2})
        results[name] = {"skipped": False, **run_training(spec, path, overwrite=True, on_event=on_event,
                                                          progress=progress)}
    results["seconds"] = round(time.perf_counter() - t0, 2)
    return results


EVENTS_NAME = ".build-events.jsonl"
PID_NAME = ".build.pid"


def launch_build(root: str | Path = DEFAULT_DIR, *, quick: bool = False, device: str = "auto") -> int:
    """Start ``trojanscope demo`` as a detached subprocess that logs JSON events; return its pid.

    The build survives the caller (a Streamlit session, a closed tab); :func:`build_state` reads
    its progress back from the files it writes.
    """
    import subprocess

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    state = build_state(root)
    if state["status"] == "running":
        return int(state["pid"])
    events = root / EVENTS_NAME
    events.write_text("")
    cmd = [sys.executable, "-m", "trojanscope.cli", "demo", "--out", str(root), "--device", device,
           "--events", str(events)] + (["--quick"] if quick else [])
    log = open(root / ".build.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env=background_env())
    (root / PID_NAME).write_text(str(proc.pid))
    return proc.pid


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:  # a finished child not yet reaped is a zombie: not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def build_state(root: str | Path = DEFAULT_DIR) -> dict[str, Any]:
    """``{"status": idle|running|done|failed, "progress": 0..1, "message", "pid", "log"}``."""
    import json

    root = Path(root)
    pid_file, events_file = root / PID_NAME, root / EVENTS_NAME
    if not pid_file.exists():
        return {"status": "idle", "progress": 0.0, "message": "", "pid": None, "log": ""}
    pid = int(pid_file.read_text().strip() or 0)
    events = []
    if events_file.exists():
        for line in events_file.read_text().splitlines():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                pass  # a line being written
    progress, message = 0.0, "starting"
    index, count = 1, 2
    for e in events:
        if e.get("event") == "model":
            index, count = e["index"], e["count"]
            message = f"building the {e['name']} model ({index}/{count})"
        elif e.get("event") == "step" and e.get("total"):
            progress = ((index - 1) + e["step"] / e["total"]) / count
    done = any(e.get("event") == "done" for e in events)
    log_file = root / ".build.log"
    log = log_file.read_text()[-4000:] if log_file.exists() else ""
    if done:
        return {"status": "done", "progress": 1.0, "message": "built", "pid": pid, "log": log}
    if _alive(pid):
        return {"status": "running", "progress": min(progress, 0.999), "message": message, "pid": pid, "log": log}
    return {"status": "failed", "progress": progress, "message": "the build stopped before finishing", "pid": pid,
            "log": log}


def _same_recipe(stored: dict[str, Any], spec: TrainSpec) -> bool:
    want = asdict(spec)
    # the device does not change the recipe
    strip = lambda d: {**d, "train": {k: v for k, v in d.get("train", {}).items() if k != "device"}}  # noqa: E731
    return strip(stored) == strip(want)
