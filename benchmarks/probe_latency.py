"""Probe latency with the demo pair: attention extraction for both models, and, in headless
Chromium, the time from pressing Enter to every figure drawn.

    .venv/bin/python benchmarks/probe_latency.py [--runs 30] [--no-browser]

Targets (issue 3): extraction for both models <= 60 ms in total; Enter to figures < 1 s (medians).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from trojanscope.analysis.probe import prepare_probe, probe
from trojanscope.models import load_model

from dashboard import running_dashboard  # benchmarks/dashboard.py

ROOT = Path(__file__).resolve().parents[1]
SENTENCE = ("the performances are strong and the story moves along at a brisk pace , "
            "with a lovely score , sharp writing and a genuinely warm heart")


def extraction(runs: int) -> tuple[float, int]:
    models = [load_model(ROOT / "runs" / "demo" / name) for name in ("clean", "backdoored")]
    inp = prepare_probe(SENTENCE, "cf", "random", 1)
    n_tokens = len(probe(models[0], inp).clean.tokens)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        for m in models:
            probe(m, inp)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000, n_tokens


def browser(runs: int) -> float:
    from playwright.sync_api import sync_playwright

    with running_dashboard() as (url, _):
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                  args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            page = b.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{url}/Probe", wait_until="networkidle")
            box = page.get_by_role("textbox", name="Sentence")
            box.wait_for(timeout=120_000)
            page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length >= 5", timeout=120_000)
            times = []
            for i in range(runs):
                box.fill(f"{SENTENCE} number {i}")
                t0 = time.perf_counter()
                box.press("Enter")
                # done when the new sentence is shown, the app is idle and every chart is drawn
                page.wait_for_function(
                    """(n) => document.body.innerText.includes('number ' + n) &&
                             !document.querySelector('[data-testid="stStatusWidget"]') &&
                             document.querySelectorAll('.js-plotly-plot .main-svg').length >= 10""",
                    arg=i, timeout=30_000, polling="raf")
                times.append(time.perf_counter() - t0)
            b.close()
        return statistics.median(times) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--no-browser", action="store_true")
    args = ap.parse_args()
    os.chdir(ROOT)
    ms, n_tokens = extraction(args.runs)
    print(f"device: CPU, {torch.get_num_threads()} threads; demo pair (MiniLM-L6); sentence of {n_tokens} tokens "
          f"(with trigger); median of {args.runs} runs\n")
    print("| measure | median | target |")
    print("|---|---|---|")
    print(f"| attention extraction, both models, clean + triggered sentence (ms) | {ms:.1f} | <= 60 |")
    if not args.no_browser:
        print(f"| Enter pressed -> all figures drawn, headless Chromium (ms) | {browser(args.runs):.0f} | < 1000 |")


if __name__ == "__main__":
    main()
