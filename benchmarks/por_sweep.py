"""Seed Tables 12 and 11 on the default backbone, each POR encoder fine-tuned clean on SST-2.

    .venv/bin/python benchmarks/por_sweep.py insertions [--insertions 1 3 5 7 9] [--max-eval 100]
    .venv/bin/python benchmarks/por_sweep.py tokens [--max-eval 100]
    .venv/bin/python benchmarks/por_sweep.py texts [--texts 4000 8000] [--task sst2|olid] [--max-eval 100]
    (all: [--max-texts 4000] [--out runs/bench-por])

``insertions``: average E and S over the nine triggers of benchmarks/por_transfer.py for POR
encoders made with 1, 3, 5, 7 and 9 trigger insertions per poisoned text (seed Table 12: 1.23,
1.16, 1.77, 4.98, 10.09). Reuses ``<out>/por`` and ``<out>/por-sst2`` from por_transfer.py for 3.
``tokens``: one POR encoder (3 insertions) with the seed's nine long words as triggers; E and S
against each word's wordpiece count (seed Table 11: no clear relation). ``texts``: the 3-insertion
encoder trained on more unlabeled sentences (not in the seed; the paper used far more text than a
CPU allows); ``--task`` picks the downstream task it is fine-tuned and measured on, and the
clean backbone is fine-tuned on that task too, as the CACC reference. Prints markdown tables
(also written to <out>/sweep-<mode>[-<task>].md).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from por_transfer import TRIGGERS, build_por, fine_tune, por_line

from trojanscope.analysis.effectiveness import ESConfig, model_effectiveness
from trojanscope.data.datasets import load_dataset
from trojanscope.models.loading import load_model

SEED_TABLE_12 = {1: 1.23, 3: 1.16, 5: 1.77, 7: 4.98, 9: 10.09}
LONG_WORDS = ("Instrumentalist,Arcane,Linchpin,Psychotomimetic,Omphaloskepsis,Embourgeoisement,"
              "Xenotransplantation,Antidisestablishmentarianism,Floccinaucinihilipilification")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["insertions", "tokens", "texts"])
    ap.add_argument("--out", type=Path, default=Path("runs/bench-por"))
    ap.add_argument("--insertions", type=int, nargs="+", default=[1, 3, 5, 7, 9])
    ap.add_argument("--max-texts", type=int, default=4000)
    ap.add_argument("--texts", type=int, nargs="+", default=[4000, 8000], help="texts mode: unlabeled sentences")
    ap.add_argument("--task", default="sst2", choices=["sst2", "olid"], help="texts mode: downstream task")
    ap.add_argument("--max-eval", type=int, default=100)
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--lr", type=float, default=1e-4)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    task = args.task if args.mode == "texts" else "sst2"
    test = load_dataset(task, "test")
    # (row key, insertions, unlabeled texts, triggers, model name); the 3-insertion 4,000-text encoder is por_transfer.py's
    if args.mode == "insertions":
        runs = [(ins, ins, args.max_texts, TRIGGERS, "por" if ins == 3 else f"por-{ins}ins") for ins in args.insertions]
    elif args.mode == "texts":
        runs = [(n, 3, n, TRIGGERS, "por" if n == 4000 else f"por-{n}texts") for n in args.texts]
    else:
        runs = [(3, 3, args.max_texts, LONG_WORDS, "por-longwords")]
    rows = []
    for key, ins, n_texts, triggers, name in runs:
        res = build_por(args.out / name, ins, n_texts, args.epochs, args.lr, triggers)
        if res:
            say(por_line(res, argparse.Namespace(**{**vars(args), "insertions": ins, "max_texts": n_texts})))
        loaded = load_model(fine_tune(str(args.out / name), task, args.out / f"{name}-{task}"))
        es = model_effectiveness(loaded, test, triggers.split(","), ESConfig(max_eval=args.max_eval)).to_json()
        rows.append((key, loaded, es["triggers"]))
    by = {"insertions": ("insertions", "insertions at poisoning time"), "texts": ("unlabeled texts", "unlabeled texts")}
    if args.mode in by:
        col, what = by[args.mode]
        say(f"### Average E and S over {len(TRIGGERS.split(','))} triggers, by {what} "
            f"({task}, max {args.max_eval} samples per trigger)\n")
        if args.mode == "texts":
            ref = load_model(fine_tune("minilm", task, args.out / f"clean-{task}")).card.metrics["cacc"]
            say(f"CACC of the clean backbone fine-tuned the same way on {task}: {100 * ref:.2f}%\n")
        say(f"| {col} | E (mean) | S (mean) | never flipped (mean share) | CACC | seed Table 12 E |")
        say("|---|---|---|---|---|---|")
        for key, loaded, trig in rows:
            seed = SEED_TABLE_12.get(key, "—") if args.mode == "insertions" else "—"
            say(f"| {key} | {statistics.mean(v['E'] for v in trig.values()):.2f} | "
                f"{statistics.mean(v['S'] for v in trig.values()):.3f} | "
                f"{statistics.mean(v['never'] for v in trig.values()):.2f} | "
                f"{100 * loaded.card.metrics['cacc']:.2f}% | {seed} |")
        say(f"\n### E per trigger (rows: {what}; wp = wordpieces)\n")
    else:
        say(f"### E and S by trigger length (one POR encoder, 3 insertions, fine-tuned on SST-2; CACC "
            f"{100 * rows[0][1].card.metrics['cacc']:.2f}%; max {args.max_eval} samples per trigger)\n")
    names = list(rows[0][2])
    tok = rows[0][1].tokenizer
    pieces = {t: len(tok.tokenize(t)) for t in names}
    if args.mode in by:
        say(f"| {by[args.mode][0]} | " + " | ".join(f"{t} ({pieces[t]} wp)" for t in names) + " |")
        say("|---|" + "---|" * len(names))
        for key, _, trig in rows:
            say(f"| {key} | " + " | ".join(f"{trig[t]['E']:.2f}" for t in names) + " |")
    else:
        say("| trigger | wordpieces | class | E | S | never flipped |")
        say("|---|---|---|---|---|---|")
        for t, v in sorted(rows[0][2].items(), key=lambda kv: pieces[kv[0]]):
            say(f"| {t} | {pieces[t]} | {v['class']} | {v['E']:.2f} | {v['S']:.3f} | {v['never']:.2f} |")
    suffix = f"-{task}" if args.mode == "texts" else ""
    (args.out / f"sweep-{args.mode}{suffix}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
