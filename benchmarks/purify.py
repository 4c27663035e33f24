"""Purify a backdoored model with several methods and print CACC/ASR before and after (seed Table II).

    .venv/bin/python benchmarks/purify.py --model runs/demo/backdoored --methods mbtsad,cft,tsft \
        [--data sst2] [--clean-fraction 0.2] [--max-eval N] [--seed 0] [--set key=value ...]

Every run goes through ``defenses.pipeline.run_purify`` (what the CLI and the Purify page run): the
clean subset is a seeded share of the train split, CACC/ASR are measured on the test split with the
model card's trigger and target. flip-ASR counts only the non-target texts the model gets right without the
trigger (training.metrics.evaluate): plain ASR never falls below the model's own error rate. Targets (issue 12): MBTSAD ASR <= 10% with a CACC drop <= 1.5
points, below CFT and TS-FT; one MBTSAD run on the demo model within 10 minutes on the 2-core CPU.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch

from trojanscope.data.datasets import load_dataset
from trojanscope.defenses.pipeline import PurifySpec, run_purify


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="runs/demo/backdoored")
    ap.add_argument("--methods", default="mbtsad,cft,tsft")
    ap.add_argument("--data", default="sst2")
    ap.add_argument("--clean-fraction", type=float, default=0.2)
    ap.add_argument("--max-eval", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--set", action="append", default=[], help="method=key=value, e.g. mbtsad=student_lr=1e-4")
    args = ap.parse_args()
    overrides: dict[str, dict[str, str]] = {}
    for item in args.set:
        method, key, value = item.split("=", 2)
        overrides.setdefault(method, {})[key] = value
    sizes = {s: len(load_dataset(args.data, s)) for s in ("train", "test")}
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() and args.device != "cpu" else (
        f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)")
    print(f"device: {device}; torch {torch.__version__}; model {args.model}; data {args.data} "
          f"(train {sizes['train']}, test {sizes['test']}{f', eval subset {args.max_eval}' if args.max_eval else ''}); "
          f"clean fraction {args.clean_fraction:g}; seed {args.seed}\n")
    print("| method | settings | clean texts | CACC before | CACC after | ASR before | ASR after | flip-ASR before "
          "| flip-ASR after | purify s | total s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    root = Path(tempfile.mkdtemp(prefix="trojanscope-purify-bench-"))
    try:
        for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
            spec = PurifySpec(model=args.model, data=args.data, method=method, config=overrides.get(method, {}),
                              clean_fraction=args.clean_fraction, seed=args.seed, device=args.device,
                              max_eval=args.max_eval)
            t0 = time.perf_counter()
            r = run_purify(spec, root / method, progress=False)
            total = time.perf_counter() - t0
            pct = lambda x: "—" if x is None else f"{100 * x:.2f}%"  # noqa: E731
            settings = ", ".join(f"{k}={v}" for k, v in overrides.get(method, {}).items()) or "defaults"
            print(f"| {method} | {settings} | {r['n_clean']} | {pct(r['before']['cacc'])} | {pct(r['after']['cacc'])} "
                  f"| {pct(r['before']['asr'])} | {pct(r['after']['asr'])} | {pct(r['before'].get('asr_flip'))} "
                  f"| {pct(r['after'].get('asr_flip'))} | {r['seconds']:.0f} | {total:.0f} |",
                  flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
