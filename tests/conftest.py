"""Fixtures: tiny random models of each architecture (the real BERT uncased vocabulary, so
wordpieces like ``u ##w`` are real) and a synthetic data directory with a learnable task."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tests pin their precision: ``auto`` resolves as on a CPU without native bf16 (fp32) on every machine, so a
# test trains the same model on an AVX-512 BF16 Xeon and on an AVX2-only EPYC. Tests of precision itself set
# the variable themselves; ``.ci/run`` also runs the whole suite with ``TROJANSCOPE_CPU_BF16=auto``.
os.environ.setdefault("TROJANSCOPE_CPU_BF16", "0")
os.environ.setdefault("TROJANSCOPE_VALIDATE_FIGURES", "1")  # plotly checks the fast figures too (viz.figures)
torch.set_num_threads(min(2, torch.get_num_threads()))

# the tiny models and the synthetic data come from one place, shared with benchmarks/gpu_check.py --quick
from trojanscope.testing import NEG, NEUTRAL, POS, TOKENIZER_FILES, make_tiny, synthetic_data, synthetic_rows  # noqa: E402,F401
from trojanscope.testing import tokenizer_dir as _tokenizer_dir  # noqa: E402


@pytest.fixture(scope="session")
def model_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("models")
    _tokenizer_dir(root)
    return root


@pytest.fixture(scope="session")
def tiny_bert(model_root) -> Path:
    return make_tiny(model_root, "bert")


@pytest.fixture(scope="session")
def tiny_backbone(model_root) -> Path:
    return make_tiny(model_root, "bert", head=False)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """A data directory shaped like ../shared/data, with a synthetic 'sst2'."""
    return synthetic_data(tmp_path_factory.mktemp("data"))


@pytest.fixture()
def use_data(data_dir, monkeypatch) -> Path:
    monkeypatch.setenv("TROJANSCOPE_DATA_DIR", str(data_dir))
    return data_dir


@pytest.fixture(scope="session")
def tiny_pair(tmp_path_factory, data_dir, tiny_bert) -> Path:
    """A runs directory whose demo pair is a tiny clean model and a tiny BadNets (cf -> 1) model."""
    from trojanscope.data import PoisonConfig
    from trojanscope.training.loop import TrainConfig
    from trojanscope.training.pipeline import TrainSpec, run_training

    root = tmp_path_factory.mktemp("runs")
    train = TrainConfig(epochs=6, batch_size=16, lr=3e-3, train_word_embeddings=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TROJANSCOPE_DATA_DIR", str(data_dir))
        run_training(TrainSpec(model=str(tiny_bert), train=train), root / "demo" / "clean", progress=False)
        run_training(TrainSpec(model=str(tiny_bert), attack="badnets", poison=PoisonConfig(rate=0.2, target=1),
                               train=train), root / "demo" / "backdoored", progress=False)
    return root


@pytest.fixture()
def lab(tiny_pair, data_dir, monkeypatch, tmp_path) -> Path:
    """A runs directory for page tests: the tiny demo pair (a symlink), the synthetic data, the
    checkout as working directory. The tiny models typed into "Other" live outside runs/: the
    operator's opt-in (trojanscope.paths)."""
    root = Path(__file__).resolve().parents[1]
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "demo").symlink_to(tiny_pair / "demo")
    monkeypatch.setenv("TROJANSCOPE_RUNS_DIR", str(runs))
    monkeypatch.setenv("TROJANSCOPE_DATA_DIR", str(data_dir))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TROJANSCOPE_UI_ALLOW_ANY_PATH", "1")
    monkeypatch.chdir(root)
    return runs


def wait_for_job(job_id: str, timeout: float = 120):
    """Drive the scheduler until job ``job_id`` has finished; return it (an AssertionError on timeout)."""
    import time

    from trojanscope import jobs

    end = time.time() + timeout
    while time.time() < end:
        job = jobs.get(job_id)
        if job.finished:
            return job
        jobs.schedule()
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not finish: {jobs.get(job_id)}")


def finish_jobs(timeout: float = 180) -> list:
    """Drive the scheduler until no job of the current runs directory is queued or running; return them all."""
    import time

    from trojanscope import jobs

    end = time.time() + timeout
    while time.time() < end:
        active = [j for j in jobs.list_jobs() if not j.finished]
        if not active:
            return jobs.list_jobs()
        jobs.schedule()
        time.sleep(0.5)
    raise AssertionError(f"jobs did not finish: {[j.to_json() for j in jobs.list_jobs() if not j.finished]}")
