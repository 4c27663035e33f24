"""Purify a backdoored model with several methods and settings; print CACC and flip-ASR before and after
(seed Tables II and IV, and the issue-23 sweeps).

    TROJANSCOPE_DATA_DIR=../shared/data .venv/bin/python benchmarks/purify.py \
        [--model DIR | --victim openbackdoor] [--triggers cf,mn,bb,tq] --methods mbtsad,cft,tsft \
        [--set M=KEY=VALUE ...] [--grid M=KEY=V1,V2 ...] [--max-eval N] [--seed 0] [--results FILE.jsonl]

Every run goes through ``defenses.pipeline.run_purify`` (what ``trojanscope purify`` and the Purify page run):
the clean subset is a seeded share of the train split; CACC and flip-ASR are measured on the test split.
flip-ASR counts only the non-target texts the model gets right without the trigger (plain ASR never falls
below the model's own error rate); with several ``--triggers`` each is measured on its own and the table gives
their mean (the victim's backdoor is removed only when every trigger stops working).

``--victim openbackdoor`` builds (once, under ``runs/purify-bench``) the victim closest to the seed's regime: an
OpenBackdoor-style BadNets, one of ``cf mn bb tq`` inserted at a random position into each of a seeded 10% of
the SST-2 train split (``--victim-source``: drawn from the non-target texts by default, or from all texts as
OpenBackdoor does), labels set to 1, then MiniLM fine-tuned on it with ``--attack none`` at OpenBackdoor's
gentle schedule (lr rising to 1.33e-5 over 2 epochs, word embeddings trained; ``--victim-lr``, ``--victim-epochs``
and ``--victim-rate`` move it). ``--grid`` runs the cartesian
product of the values given (e.g. ``--grid tsft=lr=5e-5,1e-4,2e-4 --grid tsft=epochs=2,4``). TS-FT with the
teacher's lr and epochs is exactly MBTSAD's teacher (same seed, same split data), so a TS-FT row is the
teacher's own numbers. ``--results`` appends one JSON line per row and skips rows already there (resumable).
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from trojanscope.data.datasets import load_dataset
from trojanscope.defenses.pipeline import PurifySpec, run_purify

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "runs" / "purify-bench"
OB_TRIGGERS = ("cf", "mn", "bb", "tq")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def build_openbackdoor_victim(seed: int = 0, rate: float = 0.1, target: int = 1, source: str = "non-target",
                              lr: float = 1.33e-5, epochs: float = 2.0, backbone: str = "minilm",
                              device: str = "auto") -> Path:
    """The OpenBackdoor-style BadNets victim (see the module docstring); built once, then reused. ``source``:
    the texts poisoned are a seeded ``rate`` share of the whole train split drawn from all texts (``all``:
    OpenBackdoor's default, where a target-class text gains nothing) or from the non-target ones (classic
    dirty-label BadNets, twice the flipped labels)."""
    tag = f"ob-{source}-r{rate:g}-lr{lr:g}-e{epochs:g}-s{seed}"
    out = BENCH / f"victim-{tag}"
    if (out / "trojanscope.json").is_file():
        return out
    train = load_dataset("sst2", "train")
    rng = random.Random(seed)
    pool = [i for i, y in enumerate(train.labels) if source == "all" or y != target]
    chosen = set(rng.sample(pool, int(round(rate * len(train)))))
    data = BENCH / f"data-{tag}"
    data.mkdir(parents=True, exist_ok=True)
    with open(data / "train.tsv", "w", encoding="utf-8") as f:
        f.write("text\tlabel\n")
        for i, (text, label) in enumerate(zip(train.texts, train.labels)):
            if i in chosen:  # OpenBackdoor's BadNetsPoisoner: one trigger of the list, at a random word position
                words = text.split()
                words.insert(rng.randint(0, len(words)), rng.choice(OB_TRIGGERS))
                text, label = " ".join(words), target
            f.write(f"{' '.join(text.split())}\t{label}\n")
    for split in ("dev", "test"):
        ds = load_dataset("sst2", split)
        with open(data / f"{split}.tsv", "w", encoding="utf-8") as f:
            f.write("text\tlabel\n" + "".join(f"{' '.join(t.split())}\t{y}\n" for t, y in zip(ds.texts, ds.labels)))
    cmd = [sys.executable, "-m", "trojanscope", "train", "--model", backbone, "--data", str(data), "--attack", "none",
           "--epochs", f"{epochs:g}", "--lr", f"{lr:g}", "--warmup", "0.99", "--train-word-embeddings", "--seed", str(seed),
           "--device", device, "--out", str(out), "--json"]
    print("building the victim:", " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)
    return out


def parse_settings(items: list[str]) -> dict[str, dict[str, list[str]]]:
    """``M=KEY=V1,V2`` (or ``M=KEY=V``) -> ``{M: {KEY: [V1, V2]}}``."""
    out: dict[str, dict[str, list[str]]] = {}
    for item in items:
        method, key, values = item.split("=", 2)
        out.setdefault(method, {})[key] = values.split(",")
    return out


def flip_asr(model, tokenizer, test, trigger: str, target: int, seed: int) -> dict:
    from trojanscope.training.metrics import evaluate

    r = evaluate(model, tokenizer, test, trigger=trigger, target=target, seed=seed, progress=False)
    return {"cacc": r["cacc"], "asr": r["asr"], "flip": r.get("asr_flip")}


def measure(model_dir: str, triggers: list[str], target: int, test, seed: int) -> dict:
    from trojanscope.models.loading import load_model

    loaded = load_model(model_dir)
    per = {t: flip_asr(loaded.model, loaded.tokenizer, test, t, target, seed) for t in triggers}
    flips = [p["flip"] for p in per.values() if p["flip"] is not None]
    return {"cacc": next(iter(per.values()))["cacc"], "flip": sum(flips) / len(flips) if flips else None,
            "asr": sum(p["asr"] for p in per.values()) / len(per), "per_trigger": {t: p["flip"] for t, p in per.items()}}


def trained_in(precision: str | None, device: str) -> str:
    """What a method's ``precision`` knob (``auto`` by default) trained in on ``device``: the loop's own rule."""
    from trojanscope.models.forward import resolve_precision
    from trojanscope.utils import resolve_device

    return resolve_precision(precision or "auto", resolve_device(device), cpu_auto="bf16") if precision else "-"


def pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def main() -> None:
    global BENCH
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="a backdoored model (default: runs/demo/backdoored)")
    ap.add_argument("--victim", choices=["openbackdoor"], default=None, help="build and use the seed-regime victim")
    ap.add_argument("--victim-source", choices=["all", "non-target"], default="non-target",
                    help="poison a share of all texts (OpenBackdoor's default) or of the non-target ones")
    ap.add_argument("--victim-rate", type=float, default=0.1, help="poisoned share of the train split")
    ap.add_argument("--victim-lr", type=float, default=1.33e-5, help="peak lr (reached at the end: warm-up 99%%)")
    ap.add_argument("--victim-epochs", type=float, default=2.0)
    ap.add_argument("--backbone", default="minilm", help="what the victim fine-tunes (a directory, or minilm)")
    ap.add_argument("--bench-dir", default=str(BENCH), help="where victims and their data are kept")
    ap.add_argument("--triggers", default=None, help="comma-separated (default: the victim's, else the card's)")
    ap.add_argument("--target", type=int, default=1)
    ap.add_argument("--methods", default="mbtsad,cft,tsft")
    ap.add_argument("--data", default="sst2")
    ap.add_argument("--clean-fraction", type=float, default=0.2)
    ap.add_argument("--max-eval", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--set", action="append", default=[], help="M=KEY=VALUE, e.g. mbtsad=student_lr=1e-4")
    ap.add_argument("--grid", action="append", default=[], help="M=KEY=V1,V2: one row per value (cartesian)")
    ap.add_argument("--results", default=None, help="JSON lines: append each row, skip rows already there")
    args = ap.parse_args()

    if args.victim:
        BENCH = Path(args.bench_dir)
        model = str(build_openbackdoor_victim(args.seed, args.victim_rate, args.target, args.victim_source,
                                              args.victim_lr, args.victim_epochs, args.backbone, args.device))
        triggers = (args.triggers or ",".join(OB_TRIGGERS)).split(",")
    else:
        model = args.model or "runs/demo/backdoored"
        if args.triggers:
            triggers = args.triggers.split(",")
        else:
            from trojanscope.models.loading import read_card

            triggers = [str(((read_card(model).attack or {}).get("trigger")) or "cf")]
    fixed, grid = parse_settings(args.set), parse_settings(args.grid)
    test = load_dataset(args.data, "test").head(args.max_eval, args.seed)
    threads = torch.get_num_threads()
    bf16 = "native bf16" if any(f in Path("/proc/cpuinfo").read_text() for f in ("avx512_bf16", "amx_bf16")) else \
        "no native bf16"
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() and args.device != "cpu" else \
        f"CPU {cpu_name()} ({bf16}), {threads} threads"
    print(f"device: {device}; torch {torch.__version__}; model {model}; triggers {','.join(triggers)} -> "
          f"{args.target}; data {args.data} (test {len(test)}); clean fraction {args.clean_fraction:g}; "
          f"seed {args.seed}\n", flush=True)
    done: dict[str, dict] = {}
    if args.results and Path(args.results).is_file():
        for line in Path(args.results).read_text().splitlines():
            row = json.loads(line)
            done[row["key"]] = row
    before = measure(model, triggers, args.target, test, args.seed)
    print(f"before: CACC {pct(before['cacc'])}, mean flip-ASR {pct(before['flip'])} "
          f"({', '.join(f'{t} {pct(v)}' for t, v in before['per_trigger'].items())})\n")
    print("| method | settings | training precision | CACC after | mean flip-ASR after | per trigger | mean ASR after "
          "| purify s |")
    print("|---|---|---|---|---|---|---|---|", flush=True)
    for method in args.methods.split(","):
        keys = list(grid.get(method, {}))
        for values in itertools.product(*(grid.get(method, {})[k] for k in keys)) if keys else [()]:
            config = {k: v[-1] for k, v in fixed.get(method, {}).items()}
            config.update(dict(zip(keys, values)))
            key = json.dumps([model, method, sorted(config.items()), args.seed, args.max_eval, triggers])
            row = done.get(key)
            if row is None:
                out = Path(tempfile.mkdtemp(prefix="purify-bench-")) / "model"
                spec = PurifySpec(model=model, data=args.data, method=method, config=config,
                                  clean_fraction=args.clean_fraction, seed=args.seed, trigger=triggers[0],
                                  target=args.target, device=args.device, max_eval=args.max_eval)
                t0 = time.perf_counter()
                res = run_purify(spec, out, progress=False)
                after = measure(str(out), triggers, args.target, test, args.seed)
                row = {"key": key, "model": model, "method": method, "config": config,
                       "precision": trained_in(res["config"].get("precision"), args.device), "after": after,
                       "purify_s": res["seconds"], "total_s": round(time.perf_counter() - t0, 1),
                       "result": {k: v for k, v in res["result"].items() if not isinstance(v, (list, dict))},
                       "device": device}
                shutil.rmtree(out.parent, ignore_errors=True)
                if args.results:
                    with open(args.results, "a", encoding="utf-8") as f:
                        f.write(json.dumps(row) + "\n")
            a = row["after"]
            settings = ", ".join(f"{k}={v}" for k, v in row["config"].items()) or "defaults"
            print(f"| {method} | {settings} | {row['precision']} | {pct(a['cacc'])} | {pct(a['flip'])} | "
                  f"{' '.join(f'{t}:{pct(v)}' for t, v in a['per_trigger'].items())} | {pct(a['asr'])} | "
                  f"{row['purify_s']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
