"""One MiniLM training step (batch 32, 32 tokens, attention returned, AdamW) and one inference batch, in fp32 and
under bf16 autocast, against the machine's own matmul peak in the same precision (issue 15).

    .venv/bin/python benchmarks/precision.py [--model runs/demo/backdoored] [--threads 1] [--steps 6]

Prints the median step time of each precision (alternating, twice each), the speed-up, and the model FLOP/s as a
share of a 2048x2048 matmul's FLOP/s in that precision. Model FLOPs are counted analytically: 2 per weight of
every linear layer per token, plus the two attention products (4 x batch x tokens^2 x hidden per layer) for a
forward; a training step counts 3 forwards (the backward computes gradients for inputs and weights). The
training loop's ``--precision bf16`` runs this autocast.
"""

from __future__ import annotations

import argparse
import time

import torch

from trojanscope.models.forward import cpu_has_fast_bf16, precision_context
from trojanscope.models.loading import load_model


def matmul_gflops(dtype: torch.dtype, n: int = 2048, reps: int = 5) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm-up
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n ** 3 / sorted(times)[reps // 2] / 1e9


def forward_flops(model: torch.nn.Module, batch: int, tokens: int) -> float:
    linear = sum(mod.weight.numel() for mod in model.modules() if isinstance(mod, torch.nn.Linear))
    cfg = model.config
    return 2 * batch * tokens * linear + 4 * cfg.num_hidden_layers * batch * tokens ** 2 * cfg.hidden_size


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
    infer: dict[str, list[float]] = {"fp32": [], "bf16": []}
    m.eval()
    xi = torch.randint(2000, 8000, (128, 32), generator=g)
    for prec in ("fp32", "bf16", "fp32", "bf16"):
        for _ in range(args.steps):
            t = time.perf_counter()
            with torch.inference_mode(), precision_context(torch.device("cpu"), prec):
                m(input_ids=xi, attention_mask=torch.ones_like(xi))
            infer[prec].append(time.perf_counter() - t)
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    med_i = {k: sorted(v)[len(v) // 2] for k, v in infer.items()}
    peak = {"fp32": matmul_gflops(torch.float32), "bf16": matmul_gflops(torch.bfloat16)}
    train_f, infer_f = 3 * forward_flops(m, 32, 32), forward_flops(m, 128, 32)
    print(f"CPU native bf16: {cpu_has_fast_bf16()}; threads {args.threads}; model {args.model}")
    print("| precision | matmul peak GFLOP/s | training step s | training GFLOP/s | share of peak "
          "| inference batch (128) s | inference GFLOP/s | share of peak |")
    print("|---|---|---|---|---|---|---|---|")
    for k in ("fp32", "bf16"):
        tg, ig = train_f / med[k] / 1e9, infer_f / med_i[k] / 1e9
        print(f"| {k} | {peak[k]:.0f} | {med[k]:.3f} | {tg:.0f} | {100 * tg / peak[k]:.0f}% | {med_i[k]:.3f} "
              f"| {ig:.0f} | {100 * ig / peak[k]:.0f}% |")
    print(f"\nbf16 speed-up: training {med['fp32'] / med['bf16']:.2f}x, inference {med_i['fp32'] / med_i['bf16']:.2f}x")


if __name__ == "__main__":
    main()
