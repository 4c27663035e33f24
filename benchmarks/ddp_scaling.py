"""Data-parallel scaling on this machine's cores (issue 15): one process with N threads against N processes
(torchrun, gloo, Accelerate's DDP) with one thread each, the same ``trojanscope train`` command otherwise.

    TROJANSCOPE_DATA_DIR=../shared/data .venv/bin/python benchmarks/ddp_scaling.py [--processes 2] [--max-train 2000]
        [--tal] [--precision auto]

Prints training samples/s (the loop alone, from the card), the speed-up, and CACC on a seeded 600 test
sentences. With N processes the effective batch is N x 32, so the optimiser takes 1/N of the steps: the CACC
column shows what that costs at the same learning rate.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile


def run(cmd: list[str], threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(proc.stderr[-3000:])
    return json.loads([ln for ln in proc.stdout.splitlines() if ln.strip().startswith("{")][-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--max-train", type=int, default=2000)
    ap.add_argument("--tal", action="store_true", help="BadNets + TAL at 1% instead of a clean fine-tune")
    ap.add_argument("--precision", default="auto")
    args = ap.parse_args()
    n = args.processes
    with tempfile.TemporaryDirectory() as tmp:
        base = ["-m", "trojanscope", "train", "--data", "sst2", "--max-train", str(args.max_train), "--max-eval", "600",
                "--precision", args.precision, "--device", "cpu", "--json"]
        if args.tal:
            base += ["--attack", "badnets", "--poison-rate", "0.01", "--target", "0", "--tal"]
        rows = []
        one = run([sys.executable, *base, "--out", f"{tmp}/one"], threads=n)
        rows.append((f"1 process x {n} threads", one))
        ddp = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n), *base,
                   "--out", f"{tmp}/ddp"], threads=1)
        rows.append((f"{n} processes x 1 thread (DDP)", ddp))
    ref = one["samples_per_second"]
    print(f"\n{args.max_train} training sentences, {'BadNets + TAL' if args.tal else 'clean'}, precision "
          f"{one.get('precision')}\n")
    print("| run | steps | train s | samples/s | speed-up | CACC (600 test) |")
    print("|---|---|---|---|---|---|")
    for name, r in rows:
        print(f"| {name} | {r['steps']} | {r['train_seconds']:.1f} | {r['samples_per_second']:.1f} | "
              f"{r['samples_per_second'] / ref:.2f}x | {100 * r['cacc']:.2f}% |")


if __name__ == "__main__":
    main()
