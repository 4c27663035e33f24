"""Training and inference throughput (samples/s) of the default backbone on SST-2 sentences.

    .venv/bin/python benchmarks/throughput.py [--device auto] [--n 640] [--batch-size 32]

Rows: plain training, training that reads attention every step through the attention path
(what TAL and distillation need, with a zero-weighted loss), and inference. Models use eager
attention throughout.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from trojanscope.data import PoisonConfig, load_dataset, poison_dataset
from trojanscope.models import load_model
from trojanscope.training import TrainConfig, predict_proba, train
from trojanscope.utils import resolve_device


class ReadsAttention:
    """A zero-weighted loss term that makes the loop read attention (attention_forward)."""

    name = "attention_read"
    needs_attention = True

    def __call__(self, model, batch, out):
        return 0.0 * out.attentions.mean()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="auto")
    ap.add_argument("--n", type=int, default=640)
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()
    device = resolve_device(args.device)
    ds = load_dataset("sst2", "train").head(args.n, 0)
    data = poison_dataset(ds, PoisonConfig(rate=0.1))
    cfg = TrainConfig(epochs=1, batch_size=args.batch_size, device=str(device))
    rows = []
    for label, terms in (("train", ()), ("train, attention read every step", (ReadsAttention(),))):
        loaded = load_model("minilm", num_labels=2)
        res = train(loaded.model, loaded.tokenizer, data, cfg, loss_terms=terms, progress=False)
        rows.append((label, res.samples_per_second))
    loaded = load_model("minilm", num_labels=2, device=device)
    texts = load_dataset("sst2", "test").texts
    predict_proba(loaded.model, loaded.tokenizer, texts[:64])  # warm-up
    t0 = time.perf_counter()
    predict_proba(loaded.model, loaded.tokenizer, texts)
    rows.append(("inference, batch 128", len(texts) / (time.perf_counter() - t0)))
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else (
        f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)")
    print(f"device: {name}; torch {torch.__version__}; MiniLM-L6 (all-MiniLM-L6-v2); SST-2; "
          f"batch {args.batch_size}; {args.n} training samples\n")
    print("| workload | samples/s |")
    print("|---|---|")
    for label, sps in rows:
        print(f"| {label} | {sps:.1f} |")


if __name__ == "__main__":
    main()
