"""POR on the default backbone, then clean fine-tuning on SST-2 and OLID: E and S per trigger,
CACC against fine-tuning the clean backbone, the swap table, and trigger anatomy.

    .venv/bin/python benchmarks/por_transfer.py [--max-texts 4000] [--max-eval 100] [--epochs 2] [--lr 1e-4]
                                                [--out runs/bench-por]

Prints markdown tables (also appended to <out>/report.md). Targets (issue 5): average E <= 1.5
with 3 insertions (seed Table 12: 1.16); CACC within 1 point of the clean backbone's.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from trojanscope.analysis.anatomy import AnatomyConfig, trigger_anatomy
from trojanscope.analysis.effectiveness import ESConfig, model_effectiveness
from trojanscope.analysis.swap import SwapConfig, embedding_swap
from trojanscope.attacks.por import PORConfig
from trojanscope.data.datasets import load_dataset
from trojanscope.models.loading import load_model
from trojanscope.training.loop import TrainConfig
from trojanscope.training.pipeline import PORSpec, TrainSpec, run_por, run_training

TRIGGERS = "cf,tq,mn,bb,mb,uw,Don Quixote,serendipity,antidisestablishmentarianism"
ANATOMY = ("uw", "Don Quixote", "serendipity", "antidisestablishmentarianism")


def build_por(por_dir: Path, insertions: int, max_texts: int, epochs: float, lr: float,
              triggers: str = TRIGGERS) -> dict | None:
    """POR on the default backbone (skipped if ``por_dir`` exists)."""
    if por_dir.exists():
        return None
    spec = PORSpec(model="minilm", por=PORConfig(triggers=triggers, insertions=insertions, max_texts=max_texts),
                   train=TrainConfig(epochs=epochs, lr=lr, train_word_embeddings=True))
    return run_por(spec, por_dir)


def por_line(res: dict, args) -> str:
    return (f"POR ({args.max_texts} texts, {args.insertions} insertions, {args.epochs:g} epoch, lr {args.lr:g}): "
            f"{res['train_seconds']:.0f} s, {res['steps']} steps; held-out poisoned text: cosine with its target "
            f"{res['before']['poisoned_cosine']:.3f} -> {res['after']['poisoned_cosine']:.3f}; clean text: squared "
            f"distance to the reference's pooler output {res['after']['clean_to_reference']:.4f}\n")


def fine_tune(base: str, task: str, path: Path) -> Path:
    """Clean fine-tuning with the default recipe, as a victim would (skipped if ``path`` exists)."""
    if not path.exists():
        run_training(TrainSpec(data=task, model=base, train=TrainConfig(epochs=1.0)), path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("runs/bench-por"))
    ap.add_argument("--max-texts", type=int, default=4000)
    ap.add_argument("--max-eval", type=int, default=100)
    ap.add_argument("--insertions", type=int, default=3)
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--lr", type=float, default=1e-4)
    args = ap.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    por_dir = out / "por"
    res = build_por(por_dir, args.insertions, args.max_texts, args.epochs, args.lr)
    if res:
        say(por_line(res, args))
    models = {}
    for task in ("sst2", "olid"):
        for kind, base in (("clean", "minilm"), ("por", str(por_dir))):
            models[(kind, task)] = fine_tune(base, task, out / f"{kind}-{task}")
    say("| task | CACC, clean backbone | CACC, POR backbone | difference |")
    say("|---|---|---|---|")
    for task in ("sst2", "olid"):
        c, p = (json.loads((models[(k, task)] / "trojanscope.json").read_text())["metrics"]["cacc"] for k in ("clean", "por"))
        say(f"| {task} | {100 * c:.2f}% | {100 * p:.2f}% | {100 * (p - c):+.2f} |")
    say()
    for task in ("sst2", "olid"):
        say(f"### E and S on {task} (max {args.max_eval} samples per trigger)\n")
        say("| trigger | model | class | E | S | never |")
        say("|---|---|---|---|---|---|")
        test = load_dataset(task, "test")
        avg = {}
        for kind in ("por", "clean"):
            res = model_effectiveness(load_model(models[(kind, task)]), test, TRIGGERS.split(","),
                                      ESConfig(max_eval=args.max_eval)).to_json()
            if (kind, task) == ("por", "sst2"):
                cf_class = res["triggers"]["cf"]["class"]
            for trig, v in res["triggers"].items():
                say(f"| {trig} | {kind} | {v['class']} | {v['E']:.2f} | {v['S']:.3f} | {v['never']:.2f} |")
            avg[kind] = (statistics.mean(v["E"] for v in res["triggers"].values()),
                         statistics.mean(v["S"] for v in res["triggers"].values()))
        say(f"\nAverage E / S: POR {avg['por'][0]:.2f} / {avg['por'][1]:.3f}; clean backbone {avg['clean'][0]:.2f} / "
            f"{avg['clean'][1]:.3f} (seed Table 12 with 3 insertions: E 1.16)\n")
    say("### Embedding swap (n = 200; cosine similarity of last-layer [CLS])\n")
    for name, cl, bd, trig in (("demo pair", Path("runs/demo/clean"), Path("runs/demo/backdoored"), "cf"),
                               ("POR, fine-tuned on SST-2", models[("clean", "sst2")], models[("por", "sst2")], "cf")):
        if not cl.exists() or not bd.exists():
            continue
        r = embedding_swap(load_model(cl), load_model(bd), load_dataset("sst2", "test"),
                           SwapConfig(n=200, trigger=trig, target=None if name == "demo pair" else cf_class)).to_json()
        say(f"**{name}** (trigger {trig}); ASR: " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in r["asr"].items()) + "\n")
        say("| hybrid | vs BD, clean | vs BD, poisoned | vs CL, clean | vs CL, poisoned |")
        say("|---|---|---|---|---|")
        for h, sims in r["similarity"].items():
            sp = r["spread"][h]
            say(f"| {h} | {sims['BD']['clean']:.3f} ± {sp['BD']['clean']:.3f} | {sims['BD']['poisoned']:.3f} ± "
                f"{sp['BD']['poisoned']:.3f} | {sims['CL']['clean']:.3f} ± {sp['CL']['clean']:.3f} | "
                f"{sims['CL']['poisoned']:.3f} ± {sp['CL']['poisoned']:.3f} |")
        say()
    say("### Trigger anatomy on the POR model fine-tuned on SST-2 (n = 200 sentences)\n")
    say("| trigger | token | role | upper-layer [CLS] attention | flip rate without it | [CLS]-to-star drop |")
    say("|---|---|---|---|---|---|")
    bd, clean = load_model(models[("por", "sst2")]), load_model(models[("clean", "sst2")])
    test = load_dataset("sst2", "test")
    for trig in ANATOMY:
        res = trigger_anatomy(bd, test, trig, AnatomyConfig(n=200), clean=clean)
        for t in res.tokens:
            fr = "—" if t.flip_rate_without is None else f"{t.flip_rate_without:.2f}"
            dr = "—" if t.star_attention_drop is None else f"{t.star_attention_drop:.2f}"
            say(f"| {trig} | {t.token} | {t.role} | {t.upper_attention:.3f} | {fr} | {dr} |")
        say(f"| {trig} | (full trigger flip rate {res.flip_rate:.2f}; star alone {res.star_alone['flip_rate']:.2f}) |"
            " | | | |")
    (out / "report.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
