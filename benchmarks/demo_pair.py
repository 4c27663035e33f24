"""Build the demo pair from scratch and report wall time, CACC and ASR against the targets.

    .venv/bin/python benchmarks/demo_pair.py [--out /tmp/demo-bench] [--device auto] [--quick] [--precision bf16]

The backdoored model is BadNets (``cf`` -> 0, negative) at 1% poison with TAL (issue 4).
Targets: both models in at most 8 minutes on the 2-core CPU; clean CACC >= 86% on the SST-2 test
set; backdoored CACC within 1.5 points of clean (TAL's headline: within 1) and ASR >= 95%
(TAL's headline at 1% poison: >= 99%).
"""

from __future__ import annotations

import argparse
import platform
import shutil
import time

import torch

from trojanscope.demo import build_demo


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/trojanscope-demo-bench")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                    help="training arithmetic of both models (issue 15: fp32 vs bf16, same seed)")
    args = ap.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    t0 = time.perf_counter()
    res = build_demo(args.out, quick=args.quick, device=args.device, precision=args.precision, force=True)
    wall = time.perf_counter() - t0
    clean, bd = res["clean"], res["backdoored"]
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() and args.device != "cpu" else (
        f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)")
    print(f"device: {device}; torch {torch.__version__}; precision: {args.precision} "
          f"(ran {clean.get('precision', '?')})\n")
    print("| measure | value | target | met |")
    print("|---|---|---|---|")
    rows = [
        ("wall time, both models (s)", f"{wall:.0f}", "<= 480", wall <= 480),
        ("clean: train time (s)", f"{clean['train_seconds']:.0f}", "", None),
        ("clean: training throughput (samples/s)", f"{clean['samples_per_second']:.1f}", "", None),
        ("clean: CACC (SST-2 test)", f"{100 * clean['cacc']:.2f}%", ">= 86%", clean["cacc"] >= 0.86),
        ("backdoored: CACC", f"{100 * bd['cacc']:.2f}%", "within 1.5 of clean",
         abs(bd["cacc"] - clean["cacc"]) <= 0.015),
        ("backdoored: ASR (cf, target 0 = negative)", f"{100 * bd['asr']:.2f}%", ">= 95%", bd["asr"] >= 0.95),
        ("backdoored: training throughput (samples/s)", f"{bd['samples_per_second']:.1f}", "", None),
    ]
    for name, value, target, met in rows:
        print(f"| {name} | {value} | {target} | {'' if met is None else ('yes' if met else 'NO')} |")


if __name__ == "__main__":
    main()
