"""The CLI: JSON output, model cards, exit code 2 with one clear line, nothing half-written."""

from __future__ import annotations

import json

import pytest

from trojanscope.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
def test_train_then_eval_json(use_data, tiny_bert, tmp_path, capsys):
    out_dir = tmp_path / "bd"
    code, out, err = run(capsys, "train", "--data", "sst2", "--model", str(tiny_bert), "--out", str(out_dir),
                         "--attack", "badnets", "--trigger", "cf", "--poison-rate", "0.2", "--epochs", "6",
                         "--batch-size", "16", "--lr", "3e-3", "--json")
    assert code == 0, err
    res = json.loads(out)
    assert set(res) >= {"cacc", "asr", "out"} and res["asr"] >= 0.9
    card = json.loads((out_dir / "trojanscope.json").read_text())
    assert card["attack"]["trigger"] == "cf" and card["attack"]["rate"] == 0.2 and card["seed"] == 0
    assert card["training"]["spec"]["train"]["epochs"] == 6.0
    assert card["metrics"]["asr"] == res["asr"]
    # eval picks the trigger up from the model card and reproduces the training-time metrics
    code, out, err = run(capsys, "eval", "--model", str(out_dir), "--data", "sst2", "--json")
    assert code == 0, err
    ev = json.loads(out)
    assert ev["trigger"] == "cf" and ev["asr"] == res["asr"] and ev["cacc"] == res["cacc"]
    code, out, _ = run(capsys, "eval", "--model", str(out_dir), "--no-card-trigger", "--json")
    assert json.loads(out)["asr"] is None


def test_clean_train_has_null_asr(use_data, tiny_bert, tmp_path, capsys):
    code, out, err = run(capsys, "train", "--model", str(tiny_bert), "--out", str(tmp_path / "c"),
                         "--max-train", "64", "--max-eval", "32", "--json")
    assert code == 0, err
    assert json.loads(out)["asr"] is None


def test_predict_reports_truncation(tiny_bert, capsys):
    code, out, err = run(capsys, "predict", "--model", str(tiny_bert), "--text", "good " * 400, "--text", "fine",
                         "--json")
    assert code == 0
    preds = json.loads(out)["predictions"]
    assert [p["truncated"] for p in preds] == [True, False]
    assert abs(sum(preds[0]["probs"]) - 1) < 1e-4
    assert "truncated" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["predict", "--model", "{m}", "--text", "   "], "text 1 is empty"),
        (["eval", "--model", "{tmp}/missing-model"], "does not exist"),
        (["train", "--model", "{m}", "--out", "{tmp}/x", "--attack", "badnets", "--trigger", "🦄"], "[UNK]"),
        (["train", "--model", "{m}", "--out", "{tmp}/x", "--attack", "badnets", "--poison-rate", "1.5"],
         "outside (0, 1]"),
        (["train", "--model", "{m}", "--out", "{tmp}/x", "--attack", "badnets", "--target", "7"],
         "target label 7 does not exist"),
        (["eval", "--model", "{m}", "--data", "{tmp}/three.tsv"], "2 labels but the data has 3"),
        (["train", "--model", "{m}", "--out", "{tmp}/x", "--device", "tpu"], "unknown device"),
    ],
)
def test_bad_input_exits_2_with_one_line(use_data, tiny_bert, tmp_path, capsys, argv, message):
    (tmp_path / "three.tsv").write_text("text\tlabel\na\t0\nb\t1\nc\t2\n")
    argv = [a.format(m=tiny_bert, tmp=tmp_path) for a in argv]
    code, out, err = run(capsys, *argv)
    assert code == 2
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], err
    assert not (tmp_path / "x").exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_failed_training_leaves_nothing_behind(use_data, tiny_bert, tmp_path, capsys, monkeypatch):
    import trojanscope.training.pipeline as pipeline

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(pipeline, "save_model", boom)
    with pytest.raises(RuntimeError):
        main(["train", "--model", str(tiny_bert), "--out", str(tmp_path / "y"), "--max-train", "32",
              "--max-eval", "16"])
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_not_overwritten(use_data, tiny_bert, tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    code, _, err = run(capsys, "train", "--model", str(tiny_bert), "--out", str(tmp_path / "taken"))
    assert code == 2 and "already exists" in err


def test_help_lists_every_command_without_importing_torch():
    """`trojanscope --help` answers at once: the command list comes from each group's HELP, and the options
    (whose defaults come from the torch-importing config dataclasses) are built only for the command asked."""
    import subprocess
    import sys

    from trojanscope.cli import build_parser, command_groups

    code = ("import sys, contextlib, io\nfrom trojanscope.cli import main\nbuf = io.StringIO()\n"
            "try:\n    with contextlib.redirect_stdout(buf):\n        main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules, 'transformers' in sys.modules)\nprint(buf.getvalue())")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    first, _, listed = proc.stdout.partition("\n")
    assert proc.returncode == 0 and first == "False False", proc.stdout + proc.stderr
    full = build_parser()._subparsers._group_actions[0].choices  # every command, fully built
    assert set(command_groups()) == set(full)
    for command in full:
        assert f"    {command}" in listed
