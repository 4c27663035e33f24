"""The demo pair's recipes and the background build's progress, read back from its files."""

from __future__ import annotations

import json
import subprocess
import sys

from trojanscope.demo import EVENTS_NAME, PID_NAME, _same_recipe, build_state, demo_specs


def test_demo_recipes():
    specs = demo_specs()
    assert specs["clean"].attack == "none" and specs["clean"].model == "minilm" and specs["clean"].data == "sst2"
    bd = specs["backdoored"]
    assert (bd.attack, bd.poison.trigger, bd.poison.target) == ("badnets", "cf", 0)
    assert demo_specs(quick=True)["clean"].max_train and not specs["clean"].max_train
    from dataclasses import asdict

    stored = asdict(demo_specs(device="cpu")["backdoored"])
    assert _same_recipe(stored, demo_specs(device="cuda")["backdoored"])  # the device is not the recipe
    assert not _same_recipe(stored, demo_specs(quick=True)["backdoored"])


def _write(root, events, pid):
    root.mkdir(parents=True, exist_ok=True)
    (root / PID_NAME).write_text(str(pid))
    (root / EVENTS_NAME).write_text("".join(json.dumps(e) + "\n" for e in events))


def test_build_state_progress_done_and_dead_process(tmp_path):
    assert build_state(tmp_path / "none")["status"] == "idle"
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        events = [{"event": "model", "name": "clean", "index": 1, "count": 2},
                  {"event": "step", "step": 50, "total": 100},
                  {"event": "model", "name": "backdoored", "index": 2, "count": 2},
                  {"event": "step", "step": 25, "total": 100}]
        _write(tmp_path / "run", events, alive.pid)
        state = build_state(tmp_path / "run")
        assert state["status"] == "running" and abs(state["progress"] - 0.625) < 1e-9
        assert "backdoored" in state["message"]
    finally:
        alive.kill()
        alive.wait()
    # the process died without a "done" event: failed, progress and log kept
    (tmp_path / "run" / ".build.log").write_text("Traceback ... MemoryError")
    state = build_state(tmp_path / "run")
    assert state["status"] == "failed" and "MemoryError" in state["log"]
    _write(tmp_path / "ok", [{"event": "done"}], alive.pid)
    assert build_state(tmp_path / "ok")["status"] == "done"
