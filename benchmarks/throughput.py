"""Training and inference throughput (samples/s) of the default backbone on SST-2 sentences.

    .venv/bin/python benchmarks/throughput.py [--device auto] [--n 640] [--batch-size 32] [--repeats 3]

Rows: plain training, training that reads attention every step through the attention path
(a zero-weighted loss), training with TAL, and inference; same data (10% poisoned), same batch.
Models use eager attention throughout. One discarded warm-up run first, then the training
variants interleaved in ``--repeats`` rounds (so drifting machine load hits all of them alike);
each row is the median over the rounds.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from trojanscope.attacks import TALConfig, TALLoss
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
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    device = resolve_device(args.device)
    ds = load_dataset("sst2", "train").head(args.n, 0)
    data = poison_dataset(ds, PoisonConfig(rate=0.1))
    cfg = TrainConfig(epochs=1, batch_size=args.batch_size, device=str(device))
    rows = []
    variants = (("train", lambda m: ()), ("train, attention read every step", lambda m: (ReadsAttention(),)),
                ("train with TAL (3 heads x 6 layers)",
                 lambda m: (TALLoss(TALConfig(enabled=True), m.config.num_hidden_layers, m.config.num_attention_heads),)))

    def run(terms, train_data):
        loaded = load_model("minilm", num_labels=2)
        return train(loaded.model, loaded.tokenizer, train_data, cfg, loss_terms=terms(loaded.model), progress=False)

    run(variants[2][1], poison_dataset(ds.head(4 * args.batch_size, 0), PoisonConfig(rate=0.1)))  # warm-up
    per_step: dict[str, list[float]] = {label: [] for label, _ in variants}
    per_sample: dict[str, list[float]] = {label: [] for label, _ in variants}
    for _ in range(args.repeats):
        for label, terms in variants:
            res = run(terms, data)
            per_step[label].append(res.seconds / res.steps)
            per_sample[label].append(res.samples_per_second)
    for label, _ in variants:
        rows.append((label, statistics.median(per_sample[label]), statistics.median(per_step[label])))
    loaded = load_model("minilm", num_labels=2, device=device)
    texts = load_dataset("sst2", "test").texts
    predict_proba(loaded.model, loaded.tokenizer, texts[:64])  # warm-up
    t0 = time.perf_counter()
    predict_proba(loaded.model, loaded.tokenizer, texts)
    rows.append(("inference, batch 128", len(texts) / (time.perf_counter() - t0), None))
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else (
        f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)")
    print(f"device: {name}; torch {torch.__version__}; MiniLM-L6 (all-MiniLM-L6-v2); SST-2; "
          f"batch {args.batch_size}; {args.n} training samples; median of {args.repeats} interleaved rounds\n")
    print("| workload | samples/s | s/step |")
    print("|---|---|---|")
    for label, sps, step in rows:
        print(f"| {label} | {sps:.1f} | {'' if step is None else f'{step:.3f}'} |")
    print(f"\nTAL cost per step vs plain training: {rows[2][2] / rows[0][2]:.2f}x (target <= 1.10x)")


if __name__ == "__main__":
    main()
