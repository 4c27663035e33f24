"""What an open, idle dashboard tab costs: the Streamlit server's CPU while a page sits open.

    .venv/bin/python benchmarks/idle_tab.py [--seconds 60] [--page Probe] [--watchers none,auto]

For each file-watcher setting, start the real dashboard (``streamlit run app.py --server.fileWatcherType W``)
with ``runs/`` as is, open the page in headless Chromium (playwright, ``scripts/install_chromium.sh``),
wait until it has loaded, then measure the server process's CPU time (``/proc/PID/stat``, user + system,
children included) over ``--seconds`` of doing nothing. The project's default is ``none``
(``.streamlit/config.toml``); ``auto`` is what Streamlit does without that setting.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

from dashboard import running_dashboard  # benchmarks/dashboard.py

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # utime, stime, cutime, cstime are fields 14-17 (1-based); after the ")" split they start at index 11
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def measure(watcher: str, page: str, seconds: float) -> dict[str, float]:
    from playwright.sync_api import sync_playwright

    with running_dashboard("--server.fileWatcherType", watcher) as (url, server):
        before_tab = _cpu_seconds(server.pid)
        time.sleep(5)
        no_tab = (_cpu_seconds(server.pid) - before_tab) / 5
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
            tab = browser.new_page()
            tab.goto(f"{url}/{page}", wait_until="networkidle", timeout=180_000)
            tab.wait_for_selector('[data-testid="stApp"]', timeout=180_000)
            time.sleep(10)  # let the page settle (models load, charts draw)
            start = _cpu_seconds(server.pid)
            time.sleep(seconds)
            idle = (_cpu_seconds(server.pid) - start) / seconds
            browser.close()
        return {"no_tab": no_tab, "idle_tab": idle}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--page", default="Probe")
    ap.add_argument("--watchers", default="none,auto")
    args = ap.parse_args()
    print(f"page /{args.page}; idle window {args.seconds:g} s; server CPU as a share of one core\n")
    print("| file watcher | no tab (5 s) | one idle tab |")
    print("|---|---|---|")
    for w in [x.strip() for x in args.watchers.split(",") if x.strip()]:
        r = measure(w, args.page, args.seconds)
        print(f"| {w} | {100 * r['no_tab']:.1f}% | {100 * r['idle_tab']:.1f}% |", flush=True)


if __name__ == "__main__":
    main()
