"""benchmarks/gpu_check.py's quick CPU mode, run in this process, so the GPU check cannot rot between GPU sessions.

No GPU here: the step-loss comparison is CPU fp32 against a second CPU fp32 run (tolerance 1e-6: the same
arithmetic) and CPU bf16 against CPU fp32 (the looser 5e-2); the CUDA rows are what a GPU session adds."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_quick_mode_measures_every_section(tmp_path, data_dir, capsys):
    gc = _load()
    out = tmp_path / "out"
    report = gc.main(["--quick", "--device", "cpu", "--out", str(out), "--data-dir", str(data_dir),
                      "--work", str(tmp_path / "work")])
    printed = capsys.readouterr().out

    stored = json.loads((out / "gpu_check.json").read_text())
    assert stored["sections"].keys() == set(gc.SECTIONS) == report["sections"].keys()
    for name, sec in stored["sections"].items():
        assert sec["status"] == "ok", (name, sec.get("error") or sec)
        assert sec["rows"] and all(r["status"] == "ok" for r in sec["rows"]), (name, sec["rows"])
        assert all(r["precision"] for r in sec["rows"])  # every row says its precision
    env = stored["env"]
    for key in ("torch", "transformers", "cpu_model", "device"):
        assert env[key], key
    assert env["device"] == "cpu" and stored["mode"].startswith("quick")
    assert stored["total_seconds"] < stored["budget_seconds"]

    # the loss comparison: CPU fp32 against itself and bf16 against fp32, each within its stated tolerance
    steps = {r["name"]: r for r in stored["sections"]["step_loss"]["rows"]}
    ref = steps["cpu fp32 (reference)"]
    assert len(ref["losses"]) == ref["steps"] and all(math.isfinite(x) and x > 0 for x in ref["losses"])
    same = steps["cpu fp32 vs cpu fp32 (rerun)"]
    assert same["tolerance"] == gc.SAME_REL_TOL and same["max_rel_diff"] <= same["tolerance"]
    assert same["reference_losses"] == ref["losses"]
    bf16 = steps["cpu bf16 vs cpu fp32"]
    assert bf16["precision"] == "bf16" and bf16["tolerance"] == gc.BF16_REL_TOL
    assert bf16["within_tolerance"] and bf16["max_rel_diff"] <= gc.BF16_REL_TOL

    # the demo pair in bf16 plants the backdoor (tiny model, synthetic task)
    demo = {r["name"]: r for r in stored["sections"]["demo_pair"]["rows"]}
    assert set(demo) == {"clean", "backdoored"}
    assert all(r["precision"] == "bf16" and r["wall_seconds"] > 0 for r in demo.values())
    assert demo["backdoored"]["asr"] >= 0.8 and demo["clean"]["cacc"] >= 0.8

    # throughput: plain, TAL and the Trainer, each a positive number of samples per second
    tp = {r["name"]: r for r in stored["sections"]["throughput"]["rows"]}
    assert set(tp) == {"trojanscope train (BadNets, no TAL)", "trojanscope train + TAL", "HF Trainer (clean)"}
    for r in tp.values():
        assert isinstance(r["samples_per_second"], float) and r["samples_per_second"] > 0, r
    assert tp["trojanscope train + TAL"]["tal"] is True and tp["trojanscope train (BadNets, no TAL)"]["tal"] is False
    assert tp["trojanscope train + TAL"]["ratios"]["tal_vs_plain"] > 0

    # MBTSAD and the scan: wall times and their results
    (mb,) = stored["sections"]["mbtsad"]["rows"]
    assert mb["wall_seconds"] > 0 and mb["purify_seconds"] >= 0 and 0 <= mb["after"]["cacc"] <= 1
    (sc,) = stored["sections"]["scan"]["rows"]
    assert sc["wall_seconds"] > 0 and sc["verdict"] in ("backdoored", "clean") and sc["planted"] == "cf"

    # the dashboard's device: CPU here, with or without the override
    ui = {r["name"]: r for r in stored["sections"]["ui_device"]["rows"]}
    assert ui["TROJANSCOPE_UI_DEVICE unset"]["device"] == "cpu" and ui["TROJANSCOPE_UI_DEVICE=cpu"]["device"] == "cpu"

    # the markdown table, written and printed, names every section
    table = (out / "gpu_check.md").read_text()
    assert table in printed
    for title in gc.TITLES.values():
        assert f"| {title} |" in table
    assert "| section | run | device | precision | result | samples/s | wall s | status |" in table
    assert not (out / "demo").exists()  # models go to the working directory, never to --out


def test_a_failing_section_keeps_the_others(tmp_path, data_dir, monkeypatch):
    """One section raising is recorded as failed (with its error) and the rest still run and are written."""
    gc = _load()

    def boom(ctx, rows):
        rows.append(gc.row("first", "cpu", "fp32", wall=0.1, result="kept"))
        raise RuntimeError("planted failure")

    monkeypatch.setitem(gc.RUNNERS, "step_loss", boom)
    monkeypatch.setitem(gc.RUNNERS, "ui_device", lambda ctx, rows: rows.append(gc.row("dev", "cpu", "-")))
    out = tmp_path / "out"
    report = gc.main(["--quick", "--device", "cpu", "--out", str(out), "--data-dir", str(data_dir),
                      "--only", "step_loss,ui_device"])
    stored = json.loads((out / "gpu_check.json").read_text())
    assert stored["sections"].keys() == report["sections"].keys() == set(gc.SECTIONS)
    failed = stored["sections"]["step_loss"]
    assert failed["status"] == "failed" and "planted failure" in failed["error_line"]
    assert [r["name"] for r in failed["rows"]] == ["first"]  # the rows made before the failure survive
    assert stored["sections"]["ui_device"]["status"] == "ok"
    assert stored["sections"]["scan"]["status"] == "not run"
    table = (out / "gpu_check.md").read_text()
    assert "planted failure" in table and "| scan |" in table


def test_sections_past_the_budget_are_skipped_with_a_note(tmp_path, data_dir):
    gc = _load()
    out = tmp_path / "out"
    gc.main(["--quick", "--device", "cpu", "--out", str(out), "--data-dir", str(data_dir), "--budget", "0"])
    stored = json.loads((out / "gpu_check.json").read_text())
    for name in gc.SECTIONS:
        sec = stored["sections"][name]
        assert sec["status"] == "skipped" and "budget" in sec["note"], (name, sec)
