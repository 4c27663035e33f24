"""Real-browser smoke test: the app on localhost, headless Debian Chromium, the Probe page.

Types a sentence, and checks that the heatmaps and the BertViz view rendered (no blank iframe)
with no console errors about missing scripts. Chromium comes from Debian's package, installed
by ``scripts/install_chromium.sh`` (``make test`` runs it). Where Chromium cannot be installed
the test is skipped, except under ``TROJANSCOPE_REQUIRE_BROWSER=1`` (CI), where it fails.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a real browser against a real server: tens of seconds

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def _require() -> None:
    problems = []
    if not Path(CHROMIUM).exists():
        problems.append("Debian's chromium is not installed (scripts/install_chromium.sh)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        problems.append("the playwright package is not installed")
    from trojanscope.viz.bertviz_offline import vendor_missing

    if vendor_missing():
        problems.append(f"static/vendor lacks {vendor_missing()} (scripts/fetch_js.sh)")
    if problems:
        if os.environ.get("TROJANSCOPE_REQUIRE_BROWSER") == "1":
            pytest.fail("; ".join(problems))
        pytest.skip("; ".join(problems))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def server(tiny_pair, data_dir):
    _require()
    port = _free_port()
    env = {**os.environ, "TROJANSCOPE_RUNS_DIR": str(tiny_pair), "TROJANSCOPE_DATA_DIR": str(data_dir)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port), "--server.headless", "true",
         "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=1).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.5)
        else:
            raise RuntimeError("streamlit did not start")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_probe_page_in_chromium(server, tmp_path):
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    bad_responses: list[str] = []
    outside: list[str] = []  # offline product: nothing may be fetched from beyond localhost (CDNs, fonts)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: outside.append(r.url)
                if r.url.startswith(("http:", "https:")) and not r.url.startswith(server) else None)
        page.on("response", lambda r: bad_responses.append(f"{r.status} {r.url}") if r.status >= 400 else None)
        page.goto(server, wait_until="networkidle")  # home first: the router names it and its favicon is local
        page.get_by_text("Model pair").first.wait_for(timeout=60_000)
        page.goto(f"{server}/Probe", wait_until="networkidle")
        box = page.get_by_role("textbox", name="Sentence")
        box.wait_for(timeout=60_000)
        box.fill("the film was awful and dull")
        box.press("Enter")
        page.wait_for_timeout(500)
        page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length >= 4", timeout=60_000)
        page.get_by_text("flips from").first.wait_for(timeout=30_000)
        # the [CLS] heatmaps were drawn: plotly put heatmap layers in them
        assert page.locator(".js-plotly-plot .heatmaplayer image, .js-plotly-plot .hm image").count() >= 2
        # BertViz: its iframe loads the local require.js / d3 / jQuery and draws the tokens
        page.get_by_text("Show BertViz").click()
        frame = None
        for _ in range(60):
            frame = next((f for f in page.frames if f.query_selector("[id^=bertviz]")), None)
            if frame is not None and frame.query_selector_all("svg text"):
                break
            page.wait_for_timeout(500)
        assert frame is not None, "no BertViz iframe"
        texts = [t.text_content() for t in frame.query_selector_all("svg text")]
        assert "cf" in texts and "[CLS]" in texts, texts[:20]
        # layers numbered 1-6 as in the other charts (issue 26)
        layers = [o.text_content() for o in frame.query_selector_all("#layer option")]
        assert layers and layers[0] == "1", layers
        # the model view: every head's column inside the frame (it was cut off at head 11)
        page.set_viewport_size({"width": 900, "height": 1000})  # a frame narrower than BertViz's 970-px SVG
        page.get_by_label("View", exact=True).click()
        page.get_by_role("option", name="model").click()
        model = None
        for _ in range(60):
            model = next((f for f in page.frames if "Layers" in [t.text_content() for t in f.query_selector_all("svg text")]),
                         None)
            if model is not None:
                break
            page.wait_for_timeout(500)
        assert model is not None, "no model view"
        # every label (the last head's number included) lies inside the frame, and heads count from 1
        outside = model.evaluate("() => [...document.querySelectorAll('svg text')]"
                                 ".filter(t => t.getBoundingClientRect().right > document.documentElement.clientWidth + 1)"
                                 ".map(t => t.textContent)")
        assert not outside, outside
        labels = [t.text_content() for t in model.query_selector_all("svg text")]
        assert "1" in labels and "0" not in labels, labels[:30]
        assert page.get_by_text("Deploy", exact=True).count() == 0  # no Deploy button (toolbarMode)
        page.screenshot(path=str(tmp_path / "probe.png"), full_page=True)
        browser.close()
    # Streamlit itself probes /<page>/_stcore/... before falling back to /_stcore/...: not ours
    missing = [r for r in bad_responses if "/_stcore/" not in r]
    assert not missing, missing
    assert not outside, outside
    script_errors = [e for e in errors if "Failed to load resource" not in e
                     and any(k in e.lower() for k in ("require", "d3", "jquery", "script", "define"))]
    assert not script_errors, script_errors


def test_purify_and_scan_pages_in_chromium(server, tmp_path):
    """Both pages render in a real browser with the pair's backdoored model preselected, their forms and their
    empty-state notices, with no script errors and nothing fetched from beyond localhost."""
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    outside: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: outside.append(r.url)
                if r.url.startswith(("http:", "https:")) and not r.url.startswith(server) else None)
        page.goto(f"{server}/Purify", wait_until="networkidle")
        page.get_by_text("Token splitting preview").first.wait_for(timeout=60_000)
        page.get_by_text("No finished purification of this model yet").first.wait_for(timeout=60_000)
        page.get_by_role("button", name="Purify", exact=True).first.wait_for(timeout=60_000)
        page.screenshot(path=str(tmp_path / "purify.png"), full_page=True)
        page.goto(f"{server}/Scan", wait_until="networkidle")
        page.get_by_text("Suspect model").first.wait_for(timeout=60_000)
        page.get_by_text("No finished scan of this model yet").first.wait_for(timeout=60_000)
        page.get_by_role("button", name="Scan", exact=True).first.wait_for(timeout=60_000)
        page.screenshot(path=str(tmp_path / "scan.png"), full_page=True)
        browser.close()
    assert not errors, errors
    assert not outside, outside


@pytest.fixture()
def lab_server(tiny_pair, data_dir, tmp_path):
    """The app on its own runs directory (the tiny demo pair linked in), so the jobs it launches stay in tmp_path."""
    _require()
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "demo").symlink_to(tiny_pair / "demo")
    port = _free_port()
    env = {**os.environ, "TROJANSCOPE_RUNS_DIR": str(runs), "TROJANSCOPE_DATA_DIR": str(data_dir),
           "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port), "--server.headless", "true",
         "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=1).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.5)
        else:
            raise RuntimeError("streamlit did not start")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_a_finished_scan_shows_its_verdict_without_a_reload(lab_server, tmp_path):
    """Issue 26, item 1: the idle Scan page polls nothing (no websocket traffic); a scan launched from it shows a
    bar with a percentage while it runs, and when it ends the verdict replaces it with a notice, in the same page
    (no reload, no navigation)."""
    from playwright.sync_api import sync_playwright

    frames: list[float] = []
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("websocket", lambda ws: ws.on("framereceived", lambda _: frames.append(time.time())))
        page.goto(f"{lab_server}/Scan", wait_until="networkidle")
        page.get_by_text("No finished scan of this model yet").first.wait_for(timeout=90_000)
        page.wait_for_timeout(2_000)
        idle_from = time.time()
        page.wait_for_timeout(7_000)
        idle = [t for t in frames if t >= idle_from]
        assert len(idle) <= 1, f"an idle Scan page received {len(idle)} websocket frames in 7 s: it polls"
        page.evaluate("window.__same_page = 'yes'")  # gone if the page were reloaded
        navigations: list[str] = []
        page.on("framenavigated", lambda f: navigations.append(f.url) if f == page.main_frame else None)

        def set_number(label: str, value: int) -> None:
            box = page.get_by_label(label, exact=True)
            box.fill(str(value))
            box.press("Enter")
            page.wait_for_timeout(700)

        set_number("Budget (candidate words)", 200)
        page.get_by_text("Advanced").first.click()
        set_number("Search sentences per class", 20)
        set_number("Held-out sentences per class", 30)
        set_number("Inversion steps", 40)
        page.get_by_role("button", name="Scan", exact=True).first.click()
        page.get_by_text("submitted").first.wait_for(timeout=60_000)
        bar = page.locator("[data-testid='stProgress']")
        bar.first.wait_for(timeout=60_000)
        texts = bar.first.inner_text()
        assert "%" in texts, texts  # the bar says how far it is
        page.get_by_text("its verdict is below").first.wait_for(timeout=400_000)
        page.get_by_test_id("stMetricValue").first.wait_for(timeout=60_000)
        verdict = page.get_by_test_id("stMetricValue").first.inner_text()
        assert verdict.strip() == "backdoored", verdict
        assert page.evaluate("window.__same_page") == "yes", "the page was reloaded"
        assert not navigations, navigations
        # the bar is gone, the verdict took its place (Streamlit drops the fragment's stale bar at the end of the
        # rerun that drew the verdict: wait for it rather than race it)
        page.wait_for_function("document.querySelectorAll(\"[data-testid='stProgress']\").length === 0",
                               timeout=30_000)
        page.screenshot(path=str(tmp_path / "scan-done.png"), full_page=True)
        browser.close()
    assert not errors, errors


def test_an_analysis_runs_as_a_job_and_its_result_replaces_the_bar(lab_server, tmp_path):
    """Issue 26, item 2: the anatomy no longer holds the page behind a spinner: it is a job with a bar and a Cancel
    button, and when it ends its table replaces both, with a notice, in the same page (no reload)."""
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{lab_server}/Trigger_Anatomy", wait_until="networkidle")
        page.get_by_role("button", name="Analyse the trigger").first.wait_for(timeout=90_000)
        page.evaluate("window.__same_page = 'yes'")
        box = page.get_by_label("Sentences", exact=True)
        box.fill("40")
        box.press("Enter")
        page.wait_for_timeout(700)
        page.get_by_role("button", name="Analyse the trigger").first.click()
        page.get_by_role("button", name="Cancel").first.wait_for(timeout=60_000)  # the job's bar and its Cancel
        page.get_by_text("its result is below").first.wait_for(timeout=180_000)
        page.get_by_text("Computed by job").first.wait_for(timeout=60_000)
        assert page.evaluate("window.__same_page") == "yes", "the page was reloaded"
        page.wait_for_function("document.querySelectorAll(\"[data-testid='stProgress']\").length === 0",
                               timeout=30_000)
        assert page.get_by_role("button", name="Cancel").count() == 0  # no stale Cancel
        page.screenshot(path=str(tmp_path / "anatomy-done.png"), full_page=True)
        browser.close()
    assert not errors, errors
