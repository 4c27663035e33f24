"""Two PyTorch processes on a small CPU: what OpenMP's wait policy does to training speed.

    .venv/bin/python benchmarks/contention.py [--steps 12] [--variants default OMP_WAIT_POLICY=PASSIVE ...]

A background job (training) and the dashboard (or a second job) share the machine's cores. Each
process starts as many OpenMP threads as there are cores, and with the default wait policy an idle
thread spins for a while before it sleeps, so two busy processes on 2 cores keep preempting each
other's spinning threads. For each variant of the OpenMP environment (read when a process starts;
``default`` sets nothing) this times MiniLM training steps (batch 32, SST-2 sentences, padded to
the longest) in one process alone and in two processes at once, and prints seconds per step
(median over the steps after one warm-up step).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def worker(steps: int) -> None:
    import torch

    from trojanscope.data.datasets import load_dataset
    from trojanscope.models.loading import load_model
    from trojanscope.models.tokens import encode

    loaded = load_model("minilm", num_labels=2)
    model, tok = loaded.model, loaded.tokenizer
    data = load_dataset("sst2", "train").head(32, 0)
    batch = encode(tok, data.texts, None, 128)
    labels = torch.tensor(data.labels)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    model.train()
    times = []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        out = model(**batch.model_inputs(), labels=labels)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    print(json.dumps({"s_per_step": statistics.median(times[1:]), "threads": torch.get_num_threads()}))


def run(n: int, variant: str, steps: int) -> list[float]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    if variant != "default":
        key, _, value = variant.partition("=")
        env[key] = value
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", "--steps", str(steps)], env=env,
                              stdout=subprocess.PIPE, text=True) for _ in range(n)]
    return [json.loads(p.communicate()[0].strip().splitlines()[-1])["s_per_step"] for p in procs]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--variants", nargs="+",
                    default=["default", "OMP_WAIT_POLICY=ACTIVE", "OMP_WAIT_POLICY=PASSIVE", "GOMP_SPINCOUNT=10000"])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.steps)
        return
    print(f"cores: {os.cpu_count()}; {args.steps} timed steps per process (median), batch 32, MiniLM-L6\n")
    print("| OpenMP environment | one process alone (s/step) | two processes at once (s/step, each) | slowdown |")
    print("|---|---|---|---|")
    for variant in args.variants:
        alone = run(1, variant, args.steps)[0]
        both = run(2, variant, args.steps)
        print(f"| {variant} | {alone:.3f} | {' / '.join(f'{t:.3f}' for t in both)} | "
              f"{statistics.mean(both) / alone:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
