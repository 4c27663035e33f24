"""One MiniLM training step (batch 32, 32 tokens, attention returned, AdamW) in fp32 and under bf16 autocast.

    .venv/bin/python benchmarks/precision.py [--model runs/demo/backdoored] [--threads 1] [--steps 6]

Prints the median step time of each precision (alternating, twice each) and the speed-up; the training loop's
``--precision bf16`` runs this autocast (models.forward.precision_context).
"""

from __future__ import annotations

import argparse
import time

import torch

from trojanscope.models.forward import cpu_has_fast_bf16, precision_context
from trojanscope.models.loading import load_model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--steps", type=int, default=6)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    m = load_model(args.model).model
    g = torch.Generator().manual_seed(0)
    x = torch.randint(2000, 8000, (32, 32), generator=g)
    mask, y = torch.ones_like(x), torch.randint(0, 2, (32,), generator=g)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-5)
    m.train()
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for prec in ("fp32", "bf16", "fp32", "bf16"):
        for _ in range(args.steps):
            t = time.perf_counter()
            with precision_context(torch.device("cpu"), prec):
                out = m(input_ids=x, attention_mask=mask, output_attentions=True)
                loss = torch.nn.functional.cross_entropy(out.logits.float(), y)
            loss.backward()
            opt.step()
            opt.zero_grad()
            times[prec].append(time.perf_counter() - t)
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    print(f"CPU native bf16: {cpu_has_fast_bf16()}; threads {args.threads}; model {args.model}")
    print("| precision | median step s |\n|---|---|")
    for k, v in med.items():
        print(f"| {k} | {v:.3f} |")
    print(f"\nbf16 speed-up: {med['fp32'] / med['bf16']:.2f}x")


if __name__ == "__main__":
    main()
