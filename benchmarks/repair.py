"""Repair a set of models told nothing about their triggers; compare with the blind purifiers; print a table.

    TROJANSCOPE_DATA_DIR=../shared/data .venv/bin/python benchmarks/repair.py \
        --models demo-backdoored=runs/demo/backdoored demo-clean=runs/demo/clean \
        [--truth NAME=cf,mn,bb,tq ...] [--methods repair,mbtsad,fine_mixing] [--robustness demo-backdoored] \
        [--set KEY=VALUE ...] [--results runs/repair-bench/results.jsonl] [--report-only] [--scans runs/zoo/scans]

Per model and method: the true trigger's flip-ASR before and after (the card's trigger, or the ``--truth`` list,
each measured alone on the test split and averaged: only the evaluation knows them, never the repair), CACC
before and after, the verdict and score of a fresh scan of the result, and the wall time (the repair's own
scans included). ``repair`` is ``trojanscope repair`` with no trigger given (it scans first); the baselines go
through ``defenses.pipeline.run_purify`` (``trojanscope purify``) at their defaults, then a scan.

``--robustness NAME`` also measures the repaired model of NAME with its true trigger inserted 1, 2 and 3 times,
at the start, the end and random positions, and the trigger's neighbours (``cf.``, ``CF``, ``cfs``).
``--results`` appends one JSON line per row and skips rows already there (resumable).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from trojanscope.analysis.scan import ScanConfig, scan
from trojanscope.data.datasets import load_dataset
from trojanscope.data.poison import insert_trigger
from trojanscope.models.backdoor import Backdoor, resolve_backdoor
from trojanscope.models.loading import load_model
from trojanscope.models.predict import predict_proba
from trojanscope.repair import RepairConfig, flip_rates
from trojanscope.specs import coerce, field_types

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from purify import cpu_name  # noqa: E402  (the one CPU-name reader of the benchmarks)


def truth_of(path: str, given: list[str] | None) -> list[Backdoor]:
    """The true backdoor(s): ``given`` triggers (target: the card's, else 1), or the card's."""
    loaded = load_model(path)
    card = resolve_backdoor(loaded, need_target=False)
    target = card.target if card.target is not None else 1
    if given:
        return [Backdoor(t, target) for t in given]
    if card.known:
        return [resolve_backdoor(loaded)]
    return []


def measure(model_dir: str | None, loaded: Any, test, truth: list[Backdoor], seed: int) -> dict[str, Any]:
    loaded = loaded or load_model(model_dir)
    loaded.model.eval()
    cacc, rows = flip_rates(loaded.model, loaded.tokenizer, test, truth, seed=seed)
    flips = [r["flip"] for r in rows if r["flip"] is not None]
    return {"cacc": cacc, "per_trigger": {r["trigger"]: r["flip"] for r in rows},
            "flip": sum(flips) / len(flips) if flips else None}


def rescan(loaded: Any, test, train, cfg: ScanConfig) -> dict[str, Any]:
    res = scan(loaded, test, cfg, vocabulary_data=[train])
    return {"verdict": res.verdict, "score": res.score,
            "top": [c.trigger for c in res.candidates[:3]], "seconds": res.seconds}


REPAIRED: dict[str, Any] = {}  # name -> the repaired model of this run (robustness reuses it)


def run_row(name: str, path: str, method: str, truth: list[Backdoor], cfg: RepairConfig, data: str,
            seed: int, scan_file: Path | None = None) -> dict[str, Any]:
    from trojanscope.repair import Findings, repair

    train, test = load_dataset(data, "train"), load_dataset(data, "test")
    before = measure(path, None, test, truth, seed)
    t0 = time.perf_counter()
    if method == "repair":
        loaded = load_model(path)
        # a scan already made of this model (the zoo's): the repair starts from it, as from the Scan page, and its
        # seconds count in the row's as if the repair had scanned
        findings = Findings.of(json.loads(scan_file.read_text())) if scan_file and scan_file.is_file() else None
        res = repair(loaded, train, test, cfg, findings=findings)
        seconds = time.perf_counter() - t0 + (findings.seconds if findings else 0.0)
        rep = res.to_json()
        after_model = res.loaded or loaded
        REPAIRED[name] = after_model
        scan_after = ({"verdict": rep["rescan"]["verdict"], "score": rep["rescan"]["score"],
                       "top": [c["trigger"] for c in rep["rescan"]["candidates"]]} if rep.get("rescan")
                      else {"verdict": rep["found"]["scan"]["verdict"], "score": rep["found"]["scan"]["score"],
                            "top": [c["trigger"] for c in rep["found"]["scan"]["candidates"]]})
        extra = {"verdict": rep["verdict"], "unlearned": [u["trigger"] for u in rep.get("unlearned", [])],
                 "pieces": [{k: p[k] for k in ("trigger", "of", "flip_before", "flip_after")}
                            for p in rep.get("pieces") or []],
                 "found": [c["trigger"] for c in (rep["found"]["scan"] or {}).get("candidates", [])],
                 "stage_seconds": rep.get("seconds"), "scan_reused": str(scan_file) if findings else None}
    else:
        from trojanscope.defenses.pipeline import PurifySpec, run_purify

        with tempfile.TemporaryDirectory() as tmp:
            run_purify(PurifySpec(model=path, data=data, method=method, seed=seed), Path(tmp) / "out",
                       progress=False)
            after_model = load_model(Path(tmp) / "out")
        purify_s = time.perf_counter() - t0
        scan_after = rescan(after_model, test, train, cfg.scan)
        seconds = time.perf_counter() - t0
        extra = {"purify_seconds": round(purify_s, 1)}
    after = measure(None, after_model, test, truth, seed)
    return {"model": name, "path": path, "method": method, "truth": [b.trigger for b in truth],
            "before": before, "after": after, "rescan": scan_after, "seconds": round(seconds, 1), **extra,
            "device": f"CPU {cpu_name()}, {torch.get_num_threads()} threads" if not torch.cuda.is_available()
            else torch.cuda.get_device_name(0)}


def robustness(name: str, path: str, truth: Backdoor, cfg: RepairConfig, data: str,
               seed: int) -> list[dict[str, Any]]:
    """The repaired model of ``path`` against its true trigger inserted differently, and the trigger's neighbours
    (the model this run repaired, else a repair without the re-scan)."""
    import random

    from trojanscope.repair import repair

    train, test = load_dataset(data, "train"), load_dataset(data, "test")
    original = load_model(path)
    repaired = REPAIRED.get(name) or repair(load_model(path), train, test,
                                            RepairConfig(**{**cfg.__dict__, "rescan": False})).loaded
    keep = [i for i, y in enumerate(test.labels) if y != truth.target]
    base = {}
    for tag, m in (("before", original), ("after", repaired)):
        base[tag] = predict_proba(m.model, m.tokenizer, [test.texts[i] for i in keep]).argmax(-1)
    rows = []
    t = truth.trigger
    variants = [(f"{t!r} x{n}, {pos}", t, n, pos) for n in (1, 2, 3) for pos in ("random",)] + \
               [(f"{t!r} at the {pos}", t, 1, pos) for pos in ("start", "end")] + \
               [(f"neighbour {v!r}", v, 1, "random") for v in (f"{t}.", t.upper(), f"{t}s", f"{t.capitalize()}!")]
    for label, trig, n, pos in variants:
        rng = random.Random(seed)
        texts = [insert_trigger(test.texts[i], trig, n, pos, rng).text for i in keep]
        row = {"variant": label}
        for tag, m in (("before", original), ("after", repaired)):
            pp = predict_proba(m.model, m.tokenizer, texts).argmax(-1)
            right = base[tag] == [test.labels[i] for i in keep]
            row[tag] = float((pp[right] == truth.target).mean()) if right.any() else None
        rows.append(row)
    return rows


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def unlearned(r: dict[str, Any]) -> str:
    words = ", ".join(r.get("unlearned", [])) or "-"
    pieces = ", ".join(f"{p['trigger']} {pct(p['flip_before'])} -> {pct(p['flip_after'])}"
                       for p in r.get("pieces") or [])
    return f"{words} ({pieces})" if pieces else words


def report(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | method | true trigger | flip-ASR before -> after | CACC before -> after | re-scan | "
             "unlearned (pieces: flip before -> after) | verdict | s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        rs = r["rescan"]
        lines.append(f"| {r['model']} | {r['method']} | {', '.join(r['truth']) or '(none)'} | "
                     f"{pct(r['before']['flip'])} -> {pct(r['after']['flip'])} | "
                     f"{pct(r['before']['cacc'])} -> {pct(r['after']['cacc'])} | "
                     f"{rs['verdict']} {rs['score']:.2f} ({', '.join(rs['top'][:2])}) | "
                     f"{unlearned(r)} | {r.get('verdict', '-')} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["demo-backdoored=runs/demo/backdoored",
                                                    "demo-clean=runs/demo/clean"], help="NAME=DIR")
    ap.add_argument("--truth", action="append", default=[], help="NAME=T1,T2: true triggers (default: the card's)")
    ap.add_argument("--methods", default="repair", help="repair and/or purifiers, comma-separated")
    ap.add_argument("--data", default="sst2")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], help="KEY=VALUE of RepairConfig")
    ap.add_argument("--robustness", default=None, help="NAME: the robustness table of its repaired model")
    ap.add_argument("--results", default=str(ROOT / "runs" / "repair-bench" / "results.jsonl"))
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--scans", default=None, help="DIR holding NAME.json scans of the models already made (the "
                    "zoo's, benchmarks/scan_zoo.py): the repair starts from them instead of scanning again")
    args = ap.parse_args(argv)
    models = dict(m.split("=", 1) for m in args.models)
    truths = {k: v.split(",") for k, v in (t.split("=", 1) for t in args.truth)}
    kinds = field_types(RepairConfig)
    over = {k: coerce(v, kinds[k], k, "--set") for k, v in (s.split("=", 1) for s in args.set)}
    cfg = RepairConfig(**over, seed=args.seed).validate()
    results = Path(args.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    done = [json.loads(x) for x in results.read_text().splitlines()] if results.is_file() else []
    key = lambda r: (r["model"], r["method"], json.dumps(r.get("set", {}), sort_keys=True))  # noqa: E731
    have = {key(r) for r in done}
    print(f"device: CPU {cpu_name()}, {torch.get_num_threads()} threads; torch {torch.__version__}; "
          f"data {args.data}; seed {args.seed}; settings {over or 'defaults'}", flush=True)
    if not args.report_only:
        for name, path in models.items():
            truth = truth_of(path, truths.get(name))
            for method in args.methods.split(","):
                if (name, method, json.dumps(over, sort_keys=True)) in have:
                    continue
                scan_file = Path(args.scans) / f"{name}.json" if args.scans else None
                row = {**run_row(name, path, method, truth, cfg, args.data, args.seed, scan_file), "set": over}
                done.append(row)
                with open(results, "a", encoding="utf-8") as f:
                    f.write(json.dumps(row) + "\n")
                print(report([row]).splitlines()[-1], flush=True)
    print()
    print(report([r for r in done if r["model"] in models]))
    if args.robustness:
        truth = truth_of(models[args.robustness], truths.get(args.robustness))[0]
        print(f"\nrobustness of the repaired {args.robustness} (true trigger {truth.trigger!r}; flip rate on the "
              "non-target test sentences each model gets right)\n\n| insertion | before | after |\n|---|---|---|")
        for r in robustness(args.robustness, models[args.robustness], truth, cfg, args.data, args.seed):
            print(f"| {r['variant']} | {pct(r['before'])} | {pct(r['after'])} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
