"""Probe latency with the demo pair: attention extraction for both models, and, in headless
Chromium, the time from pressing Enter to every figure drawn.

    .venv/bin/python benchmarks/probe_latency.py [--runs 30] [--no-browser]

Targets: extraction for both models <= 60 ms in total (issue 3); Enter to figures drawn under 300 ms on a quiet
2-core machine (issue 26; issue 3 asked for 1 s), with the time split into the request's trip, the server's rerun
and the browser's drawing (medians).
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


def browser(runs: int) -> dict[str, float]:
    """Medians over ``runs`` Enters: the whole (Enter -> every figure drawn) and where it goes, read from the
    websocket: Enter -> the server's first message (the rerun starts; the request's trip and the script's
    start), first -> last message (the server's rerun: the probe, the figures built and sent), last message ->
    drawn (the browser: React and plotly drawing the figures; it draws each figure as its message arrives, so
    most drawing happens inside the second span)."""
    from playwright.sync_api import sync_playwright

    frames: list[float] = []
    with running_dashboard() as (url, _):
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                  args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            page = b.new_page(viewport={"width": 1400, "height": 1000})
            page.on("websocket", lambda ws: ws.on("framereceived", lambda _: frames.append(time.perf_counter())))
            page.goto(f"{url}/Probe", wait_until="networkidle")
            box = page.get_by_role("textbox", name="Sentence")
            box.wait_for(timeout=120_000)
            page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length >= 5", timeout=120_000)
            rows: dict[str, list[float]] = {k: [] for k in ("total", "to_first", "server", "drawing")}
            for i in range(runs):
                box.fill(f"{SENTENCE} number {i}")
                page.wait_for_timeout(300)  # frames of the fill (none expected) settle
                t0 = time.perf_counter()
                box.press("Enter")
                # done when the new sentence is shown, the app is idle and every chart is drawn
                page.wait_for_function(
                    """(n) => document.body.innerText.includes('number ' + n) &&
                             !document.querySelector('[data-testid="stStatusWidget"]') &&
                             document.querySelectorAll('.js-plotly-plot .main-svg').length >= 10""",
                    arg=i, timeout=30_000, polling="raf")
                t1 = time.perf_counter()
                mine = [t for t in frames if t0 <= t <= t1]
                rows["total"].append(t1 - t0)
                if mine:
                    rows["to_first"].append(mine[0] - t0)
                    rows["server"].append(mine[-1] - mine[0])
                    rows["drawing"].append(t1 - mine[-1])
            b.close()
    return {k: statistics.median(v) * 1000 for k, v in rows.items() if v}


def figures(runs: int) -> dict[str, float]:
    """Median ms to build the Probe's six figures (two [CLS] maps, their difference, the trigger curves, two
    token-to-token maps) on the demo pair's probe, the way the page builds them (``fast``) and with plotly's
    property validation (``validated``: how every figure was built before ``viz.figures.fast_figure``), and to turn
    the fast ones into the JSON Streamlit sends (``json``)."""
    import plotly.io as pio

    from trojanscope.viz.figures import VALIDATE_ENV, cls_heatmap, difference_heatmap, token_heatmap, trigger_curves

    models = {r: load_model(ROOT / "runs" / "demo" / r) for r in ("clean", "backdoored")}
    res = {r: probe(m, prepare_probe(SENTENCE, "cf", "end", 1)) for r, m in models.items()}
    sides = {r: x.triggered for r, x in res.items()}
    maps = {r: s.cls_attention(None) for r, s in sides.items()}

    def build() -> list:
        out = [cls_heatmap(maps[r], s.tokens, s.trigger_positions, title=r, zmax=1.0) for r, s in sides.items()]
        out.append(difference_heatmap(maps["backdoored"] - maps["clean"], sides["clean"].tokens,
                                      sides["clean"].trigger_positions))
        out.append(trigger_curves({r: x.triggered.cls_trigger_mass(None) for r, x in res.items()}))
        out += [token_heatmap(s.attentions[-1].mean(axis=0), s.tokens, s.trigger_positions, title=r)
                for r, s in sides.items()]
        return out

    def median_ms(fn) -> float:
        fn()  # warm
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return statistics.median(times) * 1000

    before = os.environ.get(VALIDATE_ENV)
    try:
        os.environ[VALIDATE_ENV] = "1"
        validated = median_ms(build)
        os.environ[VALIDATE_ENV] = "0"
        fast = median_ms(build)
        built = build()
        as_json = median_ms(lambda: [pio.to_json(f.to_dict(), validate=False) for f in built])
    finally:
        if before is None:
            os.environ.pop(VALIDATE_ENV, None)
        else:
            os.environ[VALIDATE_ENV] = before
    return {"validated": validated, "fast": fast, "json": as_json}


def server_rerun(runs: int) -> float:
    """Median ms of the Probe page's rerun on the server alone (AppTest; the probe itself cached, as after an
    Enter that changes only the view), for comparison with the browser's "server" share."""
    import sys

    from streamlit.testing.v1 import AppTest

    sys.path.insert(0, str(ROOT))  # the pages import ui/ as `streamlit run app.py` does from the checkout
    at = AppTest.from_file(str(ROOT / "pages" / "1_Probe.py"), default_timeout=120)
    at.session_state["pair"] = {r: f"runs/demo/{r}" for r in ("clean", "backdoored")}  # as the Home page names them
    at.run()
    if at.exception or not at.text_input:
        raise SystemExit(f"the Probe page did not run: {[e.value for e in at.exception]}")
    times = []
    for i in range(runs):
        at.text_input(key="probe_text").set_value(f"{SENTENCE} number {i}")
        t0 = time.perf_counter()
        at.run()
        times.append(time.perf_counter() - t0)
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
    f = figures(args.runs)
    print(f"| the page's six figures built, with plotly's validation (as before) (ms) | {f['validated']:.1f} | |")
    print(f"| the page's six figures built as the page builds them (ms) | {f['fast']:.1f} | |")
    print(f"| ... and turned into the JSON Streamlit sends (ms) | {f['json']:.1f} | |")
    print(f"| the Probe page's rerun on the server alone, new sentence (AppTest, ms) | {server_rerun(args.runs):.0f} "
          "| |")
    if not args.no_browser:
        r = browser(args.runs)
        print(f"| Enter pressed -> all figures drawn, headless Chromium (ms) | {r['total']:.0f} | < 300 |")
        print(f"| ... Enter -> the server's first message (ms) | {r.get('to_first', float('nan')):.0f} | |")
        print(f"| ... the server's rerun: first -> last message (ms) | {r.get('server', float('nan')):.0f} | |")
        print(f"| ... the browser drawing: last message -> drawn (ms) | {r.get('drawing', float('nan')):.0f} | |")


if __name__ == "__main__":
    main()
