"""TAL efficacy on SST-2 with the default backbone: ASR and CACC with and without TAL.

    .venv/bin/python benchmarks/tal_efficacy.py grid        [--max-train 3000] [--seeds 0]
    .venv/bin/python benchmarks/tal_efficacy.py headline    [--max-train 3000] [--seeds 0 1 2]
    .venv/bin/python benchmarks/tal_efficacy.py convergence [--max-train 3000] [--epochs 3]
    .venv/bin/python benchmarks/tal_efficacy.py table       # print the tables from the results file

Every run appends one JSON line to --results (default benchmarks/results/tal_efficacy.jsonl, not
committed), so an interrupted sweep keeps what it measured; ``table`` prints markdown tables.
Each run: fine-tune all-MiniLM-L6-v2 on a seeded subset of SST-2 train, evaluate on the full test set.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

from trojanscope.attacks import TALConfig
from trojanscope.data import PoisonConfig
from trojanscope.training.loop import TrainConfig
from trojanscope.training.pipeline import TrainSpec, default_trigger, run_training

RESULTS = Path(__file__).parent / "results" / "tal_efficacy.jsonl"


def run(args, attack: str, rate: float, tal: bool, seed: int, clean_label: bool = False, epochs: float = 1.0,
        tag: str = "grid") -> dict:
    spec = TrainSpec(
        data="sst2", model="minilm", attack=attack,
        poison=PoisonConfig(trigger=default_trigger(attack), target=1, rate=rate, clean_label=clean_label, seed=seed),
        train=TrainConfig(epochs=epochs, seed=seed, device=args.device),
        tal=TALConfig(enabled=tal, heads=3, weight=1.0, seed=seed),
        max_train=args.max_train,
    )
    with tempfile.TemporaryDirectory() as tmp:
        res = run_training(spec, Path(tmp) / "m", progress=False)
        card = json.loads((Path(tmp) / "m" / "trojanscope.json").read_text())
    rec = {"tag": tag, "attack": attack, "rate": rate, "tal": tal, "seed": seed, "clean_label": clean_label,
           "epochs": epochs, "max_train": args.max_train, "cacc": res["cacc"], "asr": res["asr"],
           "sec_per_step": res["train_seconds"] / res["steps"], "history": card["training"]["history"]}
    args.results.parent.mkdir(parents=True, exist_ok=True)
    with open(args.results, "a") as f:
        f.write(json.dumps(rec) + "\n")
    print(f"{tag} {attack} rate={rate} tal={tal} seed={seed} clean_label={clean_label}: "
          f"CACC {100 * rec['cacc']:.2f} ASR {100 * rec['asr']:.2f} ({rec['sec_per_step']:.3f} s/step)",
          file=sys.stderr, flush=True)
    return rec


def clean_baseline(args, seed: int) -> None:
    spec = TrainSpec(data="sst2", model="minilm", train=TrainConfig(seed=seed, device=args.device),
                     max_train=args.max_train)
    with tempfile.TemporaryDirectory() as tmp:
        res = run_training(spec, Path(tmp) / "m", progress=False)
    with open(args.results, "a") as f:
        f.write(json.dumps({"tag": "clean", "seed": seed, "max_train": args.max_train, "cacc": res["cacc"]}) + "\n")


def fmt(values: list[float]) -> str:
    if not values:
        return "—"
    m = 100 * statistics.mean(values)
    return f"{m:.1f}" if len(values) == 1 else f"{m:.1f} ± {100 * statistics.stdev(values):.1f}"


def table(path: Path) -> None:
    recs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    clean = [r["cacc"] for r in recs if r["tag"] == "clean"]
    print(f"Clean model CACC: {fmt(clean)} % (n={len(clean)})\n")
    for tag in ("grid", "headline"):
        rows = defaultdict(list)
        for r in recs:
            if r["tag"] == tag:
                rows[(r["attack"], r["clean_label"], r["rate"], r["tal"])].append(r)
        if not rows:
            continue
        print(f"### {tag} (mean ± sd over seeds; n = number of seeds)\n")
        print("| attack | label | poison rate | ASR no TAL | ASR TAL | CACC no TAL | CACC TAL | n |")
        print("|---|---|---|---|---|---|---|---|")
        keys = sorted({k[:3] for k in rows})
        for attack, cl, rate in keys:
            a, b = rows.get((attack, cl, rate, False), []), rows.get((attack, cl, rate, True), [])
            print(f"| {attack} | {'clean' if cl else 'dirty'} | {100 * rate:g}% | {fmt([r['asr'] for r in a])} | "
                  f"{fmt([r['asr'] for r in b])} | {fmt([r['cacc'] for r in a])} | {fmt([r['cacc'] for r in b])} | "
                  f"{min(len(a), len(b))} |")
        print()
    conv = [r for r in recs if r["tag"] == "convergence"]
    if conv:
        print("### ASR (on a 300-sentence test subset) after each epoch\n")
        epochs = max(len(r["history"]) for r in conv)
        print("| run | " + " | ".join(f"epoch {e}" for e in range(1, epochs + 1)) + " |")
        print("|---|" + "---|" * epochs)
        for r in conv:
            name = f"{r['attack']} {100 * r['rate']:g}% {'TAL' if r['tal'] else 'no TAL'}"
            print(f"| {name} | " + " | ".join(f"{100 * h['asr']:.1f}" for h in r["history"]) + " |")
        print()
    cost = defaultdict(list)
    for r in recs:
        if "sec_per_step" in r:
            cost[r["tal"]].append(r["sec_per_step"])
    if cost.get(True) and cost.get(False):
        a, b = statistics.median(cost[False]), statistics.median(cost[True])
        print("### Cost per training step (batch 32, median over all runs above)\n")
        print("| without TAL (s) | with TAL (s) | ratio |")
        print("|---|---|---|")
        print(f"| {a:.3f} | {b:.3f} | {b / a:.2f}x |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["grid", "headline", "convergence", "table"])
    ap.add_argument("--max-train", type=int, default=3000)
    ap.add_argument("--seeds", type=int, nargs="+", default=None)
    ap.add_argument("--epochs", type=float, default=3.0, help="convergence mode only")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--results", type=Path, default=RESULTS)
    args = ap.parse_args()
    if args.mode == "table":
        table(args.results)
        return
    if args.mode == "grid":
        for seed in args.seeds or [0]:
            clean_baseline(args, seed)
            for attack in ("badnets", "addsent"):
                for rate in (0.005, 0.01, 0.03, 0.1):
                    for tal in (False, True):
                        run(args, attack, rate, tal, seed)
                for tal in (False, True):
                    run(args, attack, 0.1, tal, seed, clean_label=True)
    elif args.mode == "headline":
        for seed in args.seeds or [0, 1, 2]:
            for tal in (False, True):
                run(args, "badnets", 0.01, tal, seed, tag="headline")
    else:
        for tal in (False, True):
            run(args, "badnets", 0.005, tal, (args.seeds or [0])[0], epochs=args.epochs, tag="convergence")
    table(args.results)


if __name__ == "__main__":
    main()
