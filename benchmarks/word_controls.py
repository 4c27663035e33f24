"""Two measurements behind docs/benchmarks.md's round-7 notes (issue 24), on zoo models:

- ``rank MODEL DATA WORD [--reference CLEAN]``: where one gradient (``inversion.gradient_words``) ranks WORD among
  every whole word of the vocabulary, over the scan's own search sentences (``clean_sets``, the scan's defaults), for
  each target class; with ``--reference``, by how much more it pulls MODEL than the clean model;
- ``glued MODEL DATA``: how surely 30 random made-up words shaped as the word-level inversion's (a meaningless short
  head, ``vocabulary.swap_heads``, and two ``##`` pieces of 2+ letters, seeded) flip the model's held-out sentences: the
  control that tells a clean model's adversarial inverted word from a random one;
- ``transfer DATA WORD,WORD,... MODEL...``: each word's target, flip and sure flip on each model's own held-out
  sentences (``clean_sets`` of that model): whether a word inverted on one model flips another clean model of the
  task too (a universal adversarial word) or only its own (a planted trigger), the reference model's rationale.

    TROJANSCOPE_DATA_DIR=../shared/data .venv/bin/python benchmarks/word_controls.py rank runs/zoo/badnets-obsidian-1pct sst2 obsidian
    TROJANSCOPE_DATA_DIR=../shared/data .venv/bin/python benchmarks/word_controls.py glued runs/zoo/clean-olid-s6 olid
    TROJANSCOPE_DATA_DIR=../shared/data .venv/bin/python benchmarks/word_controls.py movers sst2 runs/zoo/clean-sst2-s7 \
        runs/zoo/lwp cf,mn,bb
    TROJANSCOPE_DATA_DIR=../shared/data .venv/bin/python benchmarks/word_controls.py transfer olid slfuards,bracken \
        runs/zoo/clean-olid-s5 runs/zoo/badnets-olid-brackenfold

OLID's scans use 20 search and 30 held-out sentences per class (``scan_zoo.SCAN_ARGS``); so does this for ``olid``.
Deterministic (seed 0); fp32.
"""

from __future__ import annotations

import argparse
import random
import sys

import numpy as np
import torch

from trojanscope.analysis.scan import ScanConfig, flip_stats, gradient_words
from trojanscope.analysis.scan.sentences import clean_sets
from trojanscope.analysis.scan.vocabulary import polar_words, swap_heads, task_words
from trojanscope.data.datasets import load_dataset
from trojanscope.models.loading import load_model


def main() -> None:
    ap = argparse.ArgumentParser()
    if sys.argv[1:2] == ["transfer"]:
        return transfer(sys.argv[2], sys.argv[3].split(","), sys.argv[4:])
    if sys.argv[1:2] == ["movers"]:
        return movers(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5].split(",") if sys.argv[5:] else [])
    ap.add_argument("what", choices=["rank", "glued"])
    ap.add_argument("model")
    ap.add_argument("data")
    ap.add_argument("word", nargs="?")
    ap.add_argument("--reference", default=None, help="rank: by how much more WORD pulls MODEL than this clean model")
    args = ap.parse_args()
    loaded = load_model(args.model)
    data = load_dataset(args.data, "test")
    cfg = ScanConfig(precision="fp32", **({"n_search": 20, "n_verify": 30} if args.data == "olid" else {}))
    sets = clean_sets(loaded, data, cfg)
    if args.what == "rank":
        natural = task_words(data) | task_words(load_dataset(args.data, "train")) | polar_words()
        reference = load_model(args.reference) if args.reference else None
        ref_sets = clean_sets(reference, data, cfg) if reference is not None else None
        for t in range(sets.num_labels):
            others = [s for c, ss in sets.search.items() if c != t for s in ss]
            ref_others = [s for c, ss in ref_sets.search.items() if c != t for s in ss] if ref_sets else []
            ranked = gradient_words(loaded, others, t, 10**6, torch.device("cpu"), natural, reference, ref_others)
            rank = ranked.index(args.word) + 1 if args.word in ranked else None
            print(f"target {t}: {args.word} ranks {rank} of {len(ranked)}; first ten {ranked[:10]}")
        return
    tok = loaded.tokenizer
    heads = swap_heads(tok, polar_words())
    tails = sorted(p[2:] for p in tok.get_vocab() if p.startswith("##") and p[2:].isalpha() and len(p) >= 4)
    rng = random.Random(0)
    words = [rng.choice(heads) + rng.choice(tails) + rng.choice(tails) for _ in range(30)]
    res = flip_stats(loaded, sets.verify, [(w, False) for w in words], cfg, "fp32")
    sure = [r[3] for r in res]
    print(f"{len(words)} random glued words: sure flip median {np.median(sure):.3f}, max {max(sure):.3f}; "
          f"flip median {np.median([r[1] for r in res]):.3f}")


def transfer(data_name: str, words: list[str], models: list[str]) -> None:
    data = load_dataset(data_name, "test")
    cfg = ScanConfig(precision="fp32", **({"n_search": 20, "n_verify": 30} if data_name == "olid" else {}))
    print("| model | " + " | ".join(words) + " |\n|---|" + "---|" * len(words))
    for m in models:
        loaded = load_model(m)
        res = flip_stats(loaded, clean_sets(loaded, data, cfg).verify, [(w, False) for w in words], cfg, "fp32")
        print(f"| {m.rstrip('/').split('/')[-1]} | "
              + " | ".join(f"class {t}: flip {100 * f:.0f}%, sure {100 * s:.0f}%" for t, f, _, s in res) + " |")


def movers(data_name: str, reference: str, model: str, words: list[str]) -> None:
    from trojanscope.analysis.scan.sentences import _subsets
    from trojanscope.analysis.scan.vocabulary import candidate_words

    data = load_dataset(data_name, "test")
    cfg = ScanConfig(precision="fp32", **({"n_search": 20, "n_verify": 30} if data_name == "olid" else {}))
    natural = task_words(data) | task_words(load_dataset(data_name, "train")) | polar_words()
    z = {}
    for m in (model, reference):
        loaded = load_model(m)
        cand = [w for w, _ in candidate_words(loaded.tokenizer, cfg, loaded.model, natural)] if m == model else cand
        cand += [w for w in words if w not in cand] if m == model else []
        shifts: list[np.ndarray] = []
        sets = clean_sets(loaded, data, cfg)
        flip_stats(loaded, _subsets(sets.search, cfg.n_screen), [(w, False) for w in cand], cfg, "fp32",
                   cls_shift=shifts)
        S = np.stack(shifts)
        med = np.median(S, 0)
        z[m] = (S - med) / (np.median(np.abs(S - med), 0) + 1e-9)  # [words, layers]
    own = z[model].max(1)
    diff = (z[model] - z[reference]).max(1)
    for name, score in (("suspect alone", own), ("suspect less reference", diff)):
        order = list(np.argsort(-score, kind="stable"))
        ranks = {w: order.index(cand.index(w)) + 1 for w in words}
        print(f"{name}: " + ", ".join(f"{w} ranks {r} (z {score[cand.index(w)]:.1f})" for w, r in ranks.items())
              + f" of {len(cand)}; first ten " + ", ".join(f"{cand[i]} {score[i]:.1f}" for i in order[:10]))


if __name__ == "__main__":
    main()
