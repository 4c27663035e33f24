"""Data parallelism: the same command under a multi-process launcher (torchrun and ``accelerate launch``, on CPU
with gloo), through Accelerate's DDP. The processes start from one set of weights, split the batches, average
gradients, and so end with identical weights; only rank 0 reports and saves. Every attack's loss term (TAL, LWP,
EP's row mask, POR, MBTSAD's distillation) runs through the wrapped model."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

SCRIPT = r"""
import json, os, sys, torch
from trojanscope.data import PoisonConfig, load_dataset, poison_dataset
from trojanscope.models import load_model
from trojanscope.training import TrainConfig, train
model_dir, out, mode = sys.argv[1], sys.argv[2], sys.argv[3]
torch.manual_seed(0)
loaded = load_model(model_dir, num_labels=2)
terms = []
if mode == "distill":  # MBTSAD's attention distillation from a (different) frozen teacher
    import copy
    from trojanscope.defenses.mbtsad import DistillationLoss
    teacher = copy.deepcopy(loaded.model).eval()
    torch.nn.init.normal_(teacher.bert.encoder.layer[0].attention.self.query.weight)
    terms = [DistillationLoss(teacher, beta=1.0, gamma=1.0)]
torch.manual_seed(int(os.environ["RANK"]))  # a head initialised differently on each rank ...
torch.nn.init.normal_(loaded.model.classifier.weight)  # ... which the loop must overwrite from rank 0
start = [p.detach().clone() for p in loaded.model.parameters()]
data = poison_dataset(load_dataset("sst2", "train").head(96, 0), PoisonConfig(rate=0.1))
res = train(loaded.model, loaded.tokenizer, data, TrainConfig(epochs=1, batch_size=8, lr=1e-3, device="cpu"),
            loss_terms=terms, progress=False)
torch.save({"params": [p.detach() for p in loaded.model.parameters()], "start": start, "steps": res.steps},
           f"{out}/rank{os.environ['RANK']}.pt")
"""


def _torchrun(args: list[str], cwd, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["plain", "distill"])
def test_two_processes_split_the_batches_and_stay_in_sync(use_data, tiny_bert, tmp_path, mode):
    script = tmp_path / "train2.py"
    script.write_text(SCRIPT)
    proc = _torchrun([str(script), str(tiny_bert), str(tmp_path), mode], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert r0["steps"] == r1["steps"] == 6  # 96 samples / batch 8 = 12 batches, 6 per process
    for a, b in zip(r0["params"], r1["params"]):
        assert torch.equal(a, b)  # same start (rank 0's), same averaged gradients
    moved = [not torch.equal(a, s) for a, s in zip(r0["params"], r0["start"])]
    assert sum(moved) > len(moved) // 2  # it trained


@pytest.mark.slow
def test_cli_train_under_torchrun_saves_once_and_reports_once(use_data, tiny_bert, tmp_path):
    out = tmp_path / "ddp"
    proc = _torchrun(["-m", "trojanscope", "train", "--model", str(tiny_bert), "--data", "sst2", "--out", str(out),
                      "--attack", "badnets", "--poison-rate", "0.1", "--tal", "--max-train", "96",
                      "--max-eval", "40", "--batch-size", "8", "--device", "cpu", "--json"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip().startswith("{")]
    assert len(lines) == 1, proc.stdout
    res = json.loads(lines[0])
    assert res["processes"] == 2 and res["steps"] == 6 and res["asr"] is not None
    card = json.loads((out / "trojanscope.json").read_text())
    assert card["metrics"]["processes"] == 2 and card["attack"]["tal"] is True
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp"]  # one model, no temporary leftovers


@pytest.mark.slow
@pytest.mark.parametrize("attack", ["lwp", "ep", "por"])
def test_every_attack_trains_under_two_processes(use_data, tiny_bert, tiny_backbone, tmp_path, attack):
    out = tmp_path / attack
    if attack == "por":
        args = ["por", "--model", str(tiny_backbone), "--triggers", "cf,mn", "--data", "sst2", "--max-texts", "80"]
    else:
        args = ["train", "--model", str(tiny_bert), "--data", "sst2", "--attack", attack, "--poison-rate", "0.2",
                "--max-train", "96", "--max-eval", "40"]
    proc = _torchrun(["-m", "trojanscope", *args, "--out", str(out), "--batch-size", "8", "--device", "cpu",
                      "--json"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip().startswith("{")]
    assert len(lines) == 1, proc.stdout  # rank 0 alone reports
    res = json.loads(lines[0])
    assert res["processes"] == 2
    card = json.loads((out / "trojanscope.json").read_text())
    assert card["attack"]["name"] == attack and card["metrics"]["processes"] == 2
    if attack == "ep":  # EP's row mask held through DDP: one embedding row moved, nothing else
        from trojanscope.models import load_model

        before, after = load_model(tiny_bert).model.state_dict(), load_model(out).model.state_dict()
        changed = [k for k in before if not torch.equal(before[k], after[k])]
        assert changed == ["bert.embeddings.word_embeddings.weight"], changed
        assert res["ep_rows"] == (before[changed[0]] != after[changed[0]]).any(1).nonzero().flatten().tolist()


@pytest.mark.slow
def test_accelerate_launch_takes_its_precision_and_accumulation_flags(use_data, tiny_bert, tmp_path):
    """``accelerate launch --mixed_precision bf16`` is obeyed, not ignored, and ``--grad-accum`` accumulates under
    it. (accelerate launch's own ``--gradient_accumulation_steps`` reaches the script only with DeepSpeed; when
    set, the loop honours it too: tests/test_training.py.)"""
    out = tmp_path / "acc"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
         "--num_machines", "1", "--mixed_precision", "bf16",
         "--main_process_port", "0", "--dynamo_backend", "no",
         "-m", "trojanscope", "train", "--model", str(tiny_bert), "--data", "sst2", "--max-train", "96",
         "--max-eval", "40", "--batch-size", "8", "--grad-accum", "2", "--device", "cpu", "--out", str(out),
         "--json"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads([ln for ln in proc.stdout.splitlines() if ln.strip().startswith("{")][-1])
    # 96 samples / batch 8 = 12 batches, 6 per process, 2 per optimiser step
    assert res["processes"] == 2 and res["steps"] == 3 and res["precision"] == "bf16"


def test_without_a_launcher_nothing_changes(monkeypatch):
    from trojanscope.training.distributed import World, shard, world

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert world() == World()
    batches = [[0, 1], [2, 3], [4]]
    assert list(shard(iter(batches), World())) == batches
    # with 2 processes: every other batch, the short last group topped up from its start
    assert list(shard(iter(batches), World(rank=1, size=2))) == [[2, 3], [4]]
    assert list(shard(iter(batches + [[5]]), World(rank=1, size=2))) == [[2, 3], [5]]
    assert list(shard(iter(batches), World(rank=0, size=2))) == [[0, 1], [4]]
