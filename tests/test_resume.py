"""Resumable long work (issue 15 item 2): a training run killed after a checkpoint and resumed ends with the same
weights as an uninterrupted run; a resume with another recipe is refused; jobs resume from the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from trojanscope.data import PoisonConfig
from trojanscope.errors import TrojanScopeError
from trojanscope.training.loop import TrainConfig
from trojanscope.training.pipeline import TrainSpec, run_training


class Killed(Exception):
    pass


def _spec(model: Path, seed: int = 0) -> TrainSpec:
    # epochs 2 with 400 samples at batch 16: 50 steps; dropout on (the RNG state must come back too)
    return TrainSpec(model=str(model), attack="badnets", poison=PoisonConfig(rate=0.1, target=1),
                     train=TrainConfig(epochs=2, batch_size=16, lr=1e-3, seed=seed), max_eval=40)


def _kill_at(step: int):
    """An on_event that kills the run (as a dead process would stop it) once it reports ``step``."""
    def kill(event):
        if event.get("event") == "step" and event["step"] == step:
            raise Killed()
    return kill


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "model.safetensors"))


def test_a_killed_run_resumes_to_the_same_weights(use_data, tiny_bert, tmp_path):
    straight = tmp_path / "straight"
    run_training(_spec(tiny_bert), straight, progress=False)

    out = tmp_path / "resumed"
    with pytest.raises(Killed):
        run_training(_spec(tiny_bert), out, progress=False, checkpoint_every=5, on_event=_kill_at(37))
    assert not out.exists()
    ck = tmp_path / ".resumed.checkpoint" / "checkpoint.pt"
    assert ck.is_file()
    assert torch.load(ck, weights_only=True)["step"] == 35  # mid-epoch 2 (25 steps per epoch)
    run_training(_spec(tiny_bert), out, progress=False, checkpoint_every=5, resume=True)
    a, b = _weights(straight), _weights(out)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    assert not ck.parent.exists()  # cleared once the model is saved


def test_a_resume_with_another_recipe_is_refused(use_data, tiny_bert, tmp_path):
    out = tmp_path / "m"
    with pytest.raises(Killed):
        run_training(_spec(tiny_bert), out, progress=False, checkpoint_every=5, on_event=_kill_at(12))
    with pytest.raises(TrojanScopeError, match="another recipe"):
        run_training(_spec(tiny_bert, seed=1), out, progress=False, resume=True)


def test_only_failed_or_cancelled_train_jobs_resume(lab):
    from trojanscope import jobs
    from trojanscope.jobs.store import Job, JobStore
    import time

    store = JobStore()
    with store.transaction() as conn:
        for jid, kind, status in (("jdone", "train", "done"), ("jscan", "scan", "failed")):
            store.insert(conn, Job(id=jid, kind=kind, status=status, created=time.time(), argv=["--data", "sst2"],
                                   config={}, device="cpu", log_path=str(store.log_path(jid)), cwd=".",
                                   dedupe_key=jid, out_dir=None))
    with pytest.raises(TrojanScopeError, match="only a failed or cancelled job resumes"):
        jobs.resume("jdone")
    with pytest.raises(TrojanScopeError, match="only train and por jobs resume"):
        jobs.resume("jscan")
