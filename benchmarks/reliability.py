"""Reliability: the dashboard and the job system under load, under SIGKILL, and against bad input.

    .venv/bin/python benchmarks/reliability.py [--parts load,server-kill,job-kill,bad-inputs]
        [--sessions 5] [--min-probes 3] [--max-probes 12] [--baseline-probes 10] [--max-train 1500] [--max-eval 500]
        [--workdir DIR] [--keep]

Everything runs against a fresh runs directory in a temporary folder (``TROJANSCOPE_RUNS_DIR``)
holding a demo pair: a copy of ``runs/demo`` when it exists, else ``trojanscope demo --quick``.
The dashboard is the real one (``streamlit run app.py``), driven by headless Chromium (playwright,
``scripts/install_chromium.sh``); jobs go through the CLI (``trojanscope jobs ...``) or the Attack
Lab, exactly as a user's would. Parts (markdown tables on stdout, also written to
``<workdir>/reliability.md``):

``load``
    A training job (``jobs submit -- --data sst2 --max-train N ...``) runs while ``--sessions``
    browser sessions probe at once on the Probe page; each probe is timed from pressing Enter to
    the new sentence shown, the app idle and every chart drawn. p50/p95 latency and errors (error
    boxes, exceptions, page errors, timeouts). A one-session baseline without a job comes first.
``server-kill``
    A job launched from the Attack Lab (the CLI if that fails); the Streamlit server's process
    group is killed with SIGKILL mid-job and the server restarted: is the job alive, does it
    finish, and do ``jobs list``/``show``, the model card and the Runs page report it truthfully.
``job-kill``
    A job fine-tuning (EP) a copy of the demo's clean model is killed with SIGKILL: is it
    reported failed with its log, is its output directory absent, is the source model untouched
    (SHA-256 of its files before and after).
``bad-inputs``
    CLI commands (and the dashboard's path checks) with bad input: exit code and what the user
    reads on stderr. Expected: exit code 2 and one line, no traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
SENTENCE = "the performances are strong and the story moves along at a brisk pace"
ERROR_SELECTOR = '[data-testid="stAlertContentError"], [data-testid="stException"]'
# done: the new sentence is shown, the app is idle, every chart is drawn (as benchmarks/probe_latency.py)
DONE_JS = """(marker) => document.body.innerText.includes(marker) &&
    !document.querySelector('[data-testid="stStatusWidget"]') &&
    document.querySelectorAll('.js-plotly-plot .main-svg').length >= 10"""
PROBE_TIMEOUT_MS = 120_000


# --- small helpers ---------------------------------------------------------------------------------
def cli_prefix() -> list[str]:
    script = Path(sys.executable).parent / "trojanscope"
    return [str(script)] if script.exists() else [sys.executable, "-m", "trojanscope"]


def run_cli(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 600) -> dict[str, Any]:
    t0 = time.perf_counter()
    p = subprocess.run(cli_prefix() + args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    return {"rc": p.returncode, "stdout": p.stdout, "stderr": p.stderr, "seconds": time.perf_counter() - t0}


def cli_json(args: list[str], env: dict[str, str], cwd: Path) -> dict[str, Any]:
    cut = args.index("--") if "--" in args else len(args)  # `jobs submit --json -- ARGS`
    r = run_cli(args[:cut] + ["--json"] + args[cut:], env, cwd)
    if r["rc"] != 0:
        raise RuntimeError(f"trojanscope {' '.join(args)} exited {r['rc']}: {r['stderr'].strip()}")
    return json.loads(r["stdout"])


def job_row(job_id: str, env: dict[str, str], cwd: Path) -> dict[str, Any]:
    """The job as `trojanscope jobs list --json` reports it (what a user sees)."""
    for j in cli_json(["jobs", "list"], env, cwd)["jobs"]:
        if j["id"] == job_id:
            return j
    raise RuntimeError(f"job {job_id} not listed")


def pid_alive(pid: int | None, job_id: str) -> bool:
    """The job runner's own liveness check (a live, non-zombie process running this job)."""
    from trojanscope.jobs.runner import alive

    return bool(pid) and alive(int(pid), job_id)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_hash(path: Path) -> tuple[str, int]:
    """SHA-256 over every file's relative path and bytes (sorted), and the number of files."""
    h, n = hashlib.sha256(), 0
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        n += 1
    return h.hexdigest(), n


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default)."""
    s = sorted(values)
    if len(s) == 1:
        return s[0]
    k = (len(s) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def one_line(text: str) -> str:
    return " ".join(text.split())


def md_cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


class Server:
    """`streamlit run app.py` in its own process group (so SIGKILL can take the whole group)."""

    def __init__(self, env: dict[str, str], log: Path, port: int | None = None) -> None:
        self.env, self.log, self.port = env, log, port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180) -> float:
        t0 = time.perf_counter()
        streamlit = Path(sys.executable).parent / "streamlit"
        cmd = ([str(streamlit)] if streamlit.exists() else [sys.executable, "-m", "streamlit"]) + [
            "run", "app.py", "--server.port", str(self.port), "--server.headless", "true",
            "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"]
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        while time.perf_counter() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with {self.proc.returncode}; see {self.log}")
            try:
                if urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=1).read() == b"ok":
                    return time.perf_counter() - t0
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"streamlit did not answer within {timeout:.0f} s; see {self.log}")

    def sigkill_group(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


class Report:
    def __init__(self, path: Path) -> None:
        self.path, self.lines = path, []

    def __call__(self, text: str = "") -> None:
        print(text, flush=True)
        self.lines.append(text)
        self.path.write_text("\n".join(self.lines) + "\n")


def wait_for(predicate, timeout: float, interval: float = 0.5, what: str = "condition"):
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")


def store_job(job_id: str):
    from trojanscope import jobs  # reads TROJANSCOPE_RUNS_DIR (set in main) at call time

    return jobs.get(job_id)


# --- part a: browsers probing while a job trains ----------------------------------------------------
async def _session(browser, url: str, s: int, stop: asyncio.Event, min_probes: int, max_probes: int,
                   records: list[dict], loads: list[dict]) -> None:
    ctx = await browser.new_context(viewport={"width": 1400, "height": 1000})
    page = await ctx.new_page()
    page_errors: list[str] = []
    page.on("pageerror", lambda e: page_errors.append(str(e)))
    t0 = time.perf_counter()
    try:
        await page.goto(f"{url}/Probe", wait_until="domcontentloaded", timeout=PROBE_TIMEOUT_MS)
        box = page.get_by_role("textbox", name="Sentence")
        await box.wait_for(timeout=PROBE_TIMEOUT_MS)
        await page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length >= 10",
                                     timeout=PROBE_TIMEOUT_MS)
        loads.append({"session": s, "seconds": time.perf_counter() - t0, "error": None})
    except Exception as e:  # noqa: BLE001 - recorded, not raised: the table reports it
        loads.append({"session": s, "seconds": time.perf_counter() - t0, "error": f"{type(e).__name__}: {e}"})
        await ctx.close()
        return
    i = 0
    while i < max_probes and (i < min_probes or not stop.is_set()):
        marker = f"session {s} probe {i} end"
        await box.fill(f"{SENTENCE} {marker}")
        n_err_before = len(page_errors)
        start_wall, t0 = time.time(), time.perf_counter()
        await box.press("Enter")
        error = None
        try:
            await page.wait_for_function(DONE_JS, arg=marker, timeout=PROBE_TIMEOUT_MS, polling="raf")
        except Exception as e:  # noqa: BLE001
            error = f"timeout/no result: {type(e).__name__}"
        seconds = time.perf_counter() - t0
        boxes = await page.locator(ERROR_SELECTOR).all_inner_texts()
        if boxes:
            error = (error + "; " if error else "") + "error box: " + one_line(boxes[0])[:160]
        if len(page_errors) > n_err_before:
            error = (error + "; " if error else "") + "page error: " + one_line(page_errors[-1])[:160]
        records.append({"session": s, "probe": i, "start": start_wall, "end": start_wall + seconds,
                        "seconds": seconds, "error": error})
        i += 1
    await ctx.close()


async def _probe_sessions(url: str, sessions: int, min_probes: int, max_probes: int,
                          job_done=None) -> tuple[list[dict], list[dict]]:
    from playwright.async_api import async_playwright

    records: list[dict] = []
    loads: list[dict] = []
    stop = asyncio.Event()

    async def watch() -> None:
        while not stop.is_set():
            if job_done is None or await asyncio.to_thread(job_done):
                stop.set()
            await asyncio.sleep(1.0)

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        watcher = asyncio.create_task(watch())
        await asyncio.gather(*(_session(browser, url, s, stop, min_probes, max_probes, records, loads)
                               for s in range(sessions)))
        stop.set()
        await watcher
        await browser.close()
    return records, loads


def latency_row(label: str, recs: list[dict], sessions: int) -> str:
    ok = [r["seconds"] * 1000 for r in recs if not r["error"]]
    errors = sum(1 for r in recs if r["error"])
    if not ok:
        return f"| {label} | {sessions} | {len(recs)} | — | — | — | {errors} |"
    return (f"| {label} | {sessions} | {len(recs)} | {percentile(ok, 50):.0f} | {percentile(ok, 95):.0f} | "
            f"{max(ok):.0f} | {errors} |")


def part_load(args, env, work: Path, say: Report) -> None:
    say("## Probe latency: browser sessions at once while a training job runs\n")
    server = Server(env, work / "streamlit-load.log")
    boot = server.start()
    try:
        base, base_loads = asyncio.run(_probe_sessions(server.url, 1, args.baseline_probes, args.baseline_probes))
        out = Path(env["TROJANSCOPE_RUNS_DIR"]) / "load-job"
        train_args = ["--data", "sst2", "--max-train", str(args.max_train), "--max-eval", str(args.max_eval),
                      "--attack", "badnets", "--tal", "--out", str(out)]
        job_id = cli_json(["jobs", "submit", "--", *train_args], env, work)["id"]
        wait_for(lambda: store_job(job_id).status != "queued", 120, what="the job to start")
        t_start = time.time()
        recs, loads = asyncio.run(_probe_sessions(server.url, args.sessions, args.min_probes, args.max_probes,
                                                  job_done=lambda: store_job(job_id).finished))
        t_end = time.time()
        job = wait_for(lambda: (j := store_job(job_id)).finished and j, 900, 1.0, "the job to finish")
    finally:
        server.stop()
    during = [r for r in recs if job.started and r["start"] >= job.started and r["end"] <= (job.ended or t_end)]
    shown_args = " ".join(train_args).replace(env["TROJANSCOPE_RUNS_DIR"], "runs")
    say(f"Server started in {boot:.1f} s. Job `{job_id}`: `trojanscope jobs submit -- {shown_args}`; "
        f"status **{job.status}**"
        + (f", CACC {100 * job.result['cacc']:.2f}%, ASR {100 * job.result['asr']:.2f}%, "
           f"{job.result['samples_per_second']:.1f} training samples/s, {job.result['train_seconds']:.0f} s training"
           if job.status == "done" and job.result else f" ({job.error})")
        + f"; it ran {job.ended - job.started:.0f} s, the probing sessions {t_end - t_start:.0f} s.\n")
    say("| sessions probing | sessions | probes | p50 (ms) | p95 (ms) | max (ms) | errors |")
    say("|---|---|---|---|---|---|---|")
    say(latency_row("1, no job (baseline)", base, 1))
    say(latency_row(f"{args.sessions} at once, job running (all probes)", recs, args.sessions))
    say(latency_row(f"{args.sessions} at once, only probes entirely inside the job's run", during, args.sessions))
    ok_loads = [x["seconds"] for x in loads if not x["error"]]
    say(f"\nFirst load of the Probe page (open -> every chart drawn), {args.sessions} sessions at once: "
        + (f"median {statistics.median(ok_loads):.1f} s, max {max(ok_loads):.1f} s" if ok_loads else "none loaded")
        + f"; failed loads: {sum(1 for x in loads if x['error'])}"
        + (f" (baseline session: {base_loads[0]['seconds']:.1f} s)" if base_loads and not base_loads[0]['error'] else "")
        + ".")
    errs = [r for r in base + recs if r["error"]] + [x for x in base_loads + loads if x["error"]]
    for r in errs[:10]:
        say(f"- error, session {r['session']}{', probe ' + str(r['probe']) if 'probe' in r else ' (load)'}: "
            f"{md_cell(r['error'])}")
    say()


# --- part b: the server killed mid-job ----------------------------------------------------------------
def launch_from_attack_lab(url: str, max_train: int) -> str | None:
    """Launch a training job from the Attack Lab page (defaults; Training samples = max_train). None if it failed."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1400})
            page.goto(f"{url}/Attack_Lab", wait_until="domcontentloaded")
            field = page.get_by_label("Training samples (0 = all)")
            field.wait_for(timeout=PROBE_TIMEOUT_MS)
            field.fill(str(max_train))
            field.press("Enter")
            page.wait_for_function(f"document.body.innerText.includes('--max-train {max_train}')",
                                   timeout=PROBE_TIMEOUT_MS)
            page.get_by_role("button", name="Launch", exact=True).click()
            page.get_by_text("submitted").first.wait_for(timeout=PROBE_TIMEOUT_MS)
            text = page.get_by_text("submitted").first.inner_text()
            return text.split("Job", 1)[1].split("submitted", 1)[0].strip(" `") or None
        except Exception as e:  # noqa: BLE001
            print(f"(Attack Lab launch failed: {type(e).__name__}: {one_line(str(e))[:200]})", file=sys.stderr)
            return None
        finally:
            browser.close()


def runs_page_shows(url: str, job_id: str) -> str:
    """The status line the Runs page shows for ``job_id`` (picked in its "Job" box), read in Chromium."""
    from playwright.sync_api import sync_playwright

    idle = "!document.querySelector('[data-testid=\"stStatusWidget\"]')"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1400})
            page.goto(f"{url}/Runs", wait_until="domcontentloaded")
            page.get_by_text("A job").first.wait_for(timeout=PROBE_TIMEOUT_MS)
            page.wait_for_function(idle, timeout=PROBE_TIMEOUT_MS)
            box = page.get_by_role("combobox", name="Job")
            box.click()
            box.fill(job_id)
            page.keyboard.press("Enter")
            page.wait_for_timeout(1000)
            page.wait_for_function(idle, timeout=PROBE_TIMEOUT_MS)
            picked = box.input_value()
            text = page.locator("body").inner_text()
            after = text.split("A job", 1)[1].splitlines() if "A job" in text else []
            status = next((ln.strip() for ln in after if ln.strip().split(" ")[0] in
                           ("done", "failed", "running", "queued", "cancelled")), "?")
            return (f"job picked in its \"Job\" box: {'yes' if job_id in picked else 'NO'}; status line shown: "
                    f"\"{md_cell(status)[:120]}\"")
        finally:
            browser.close()


def part_server_kill(args, env, work: Path, say: Report) -> None:
    say("## The Streamlit server killed with SIGKILL mid-job, then restarted\n")
    server = Server(env, work / "streamlit-kill.log")
    server.start()
    rows: list[tuple[str, str]] = []
    try:
        job_id = launch_from_attack_lab(server.url, args.max_train)
        how = "Attack Lab (Launch button, defaults, Training samples = %d)" % args.max_train
        if job_id is None:
            out = Path(env["TROJANSCOPE_RUNS_DIR"]) / "server-kill-job"
            job_id = cli_json(["jobs", "submit", "--", "--data", "sst2", "--max-train", str(args.max_train),
                               "--attack", "badnets", "--tal", "--out", str(out)], env, work)["id"]
            how = "CLI (`jobs submit`; the Attack Lab launch failed)"
        rows.append(("launched from", how + f": job `{job_id}`"))
        job = wait_for(lambda: (j := store_job(job_id)).status == "running" and j.progress > 0.1 and j, 600, 0.5,
                       "the job to train")
        rows.append(("killed at", f"progress {100 * job.progress:.0f}%, job pid {job.pid}"))
        server_pid = server.proc.pid
        server.sigkill_group()
        time.sleep(1.0)
        rows.append(("server process after SIGKILL to its group", "gone" if server.proc.poll() is not None
                     else "STILL ALIVE"))
        rows.append(("job process 1 s later", "alive" if pid_alive(job.pid, job_id) else "DEAD"))
        down = job_row(job_id, env, work)
        rows.append(("`jobs list --json` while the server is down",
                     f"{down['status']}, progress {100 * down['progress']:.0f}%"))
        t0 = time.perf_counter()
        boot = server.start()
        rows.append(("server restarted (same port)", f"answering after {boot:.1f} s (pid {server_pid} -> "
                                                     f"{server.proc.pid})"))
        seen: list[str] = []
        lies = polls = 0
        while True:
            j = job_row(job_id, env, work)
            alive = pid_alive(j.get("pid"), job_id)
            polls += 1
            # a contradiction: "running" with no live process, or "failed" while the process still runs
            lies += (j["status"] == "running" and not alive) or (j["status"] == "failed" and alive)
            if not seen or seen[-1] != j["status"]:
                seen.append(j["status"])
            if j["status"] not in ("queued", "running"):
                break
            if time.perf_counter() - t0 > 900:
                raise RuntimeError("the job did not finish within 900 s of the restart")
            time.sleep(3)
        shown = cli_json(["jobs", "show", job_id], env, work)
        rows.append(("statuses seen by `jobs list --json` after the restart",
                     f"{' -> '.join(seen)} ({polls} polls; contradicting the process's state: {lies})"))
        res = shown.get("result") or {}
        out_dir = Path(shown.get("out_dir") or "")
        card = json.loads((out_dir / "trojanscope.json").read_text()) if (out_dir / "trojanscope.json").is_file() else None
        rows.append(("final `jobs show`", f"status {shown['status']}" + (f", error: {shown['error']}" if shown.get(
            "error") else "") + (f", CACC {100 * res['cacc']:.2f}%, ASR {100 * res['asr']:.2f}%" if res.get(
            "cacc") is not None and res.get("asr") is not None else "")))
        rows.append(("output directory", (f"present, with its card; card CACC {100 * card['metrics']['cacc']:.2f}% "
                                          f"(= the job's: {'yes' if card['metrics']['cacc'] == res.get('cacc') else 'NO'})")
                     if card else "ABSENT"))
        rows.append(("job process after it finished", "exited" if not pid_alive(shown.get("pid"), job_id) else
                     "STILL ALIVE"))
        rows.append(("Runs page on the restarted server", runs_page_shows(server.url, job_id)))
        log_tail = (shown.get("log") or "").strip().splitlines()
        rows.append(("its log (`jobs show`)", f"{len(log_tail)} lines; " + (
            f"the last but one: `{md_cell(log_tail[-2])[:140]}`" if len(log_tail) > 1 else "(too short)")))
    finally:
        server.stop()
    say("| check | observed |")
    say("|---|---|")
    for k, v in rows:
        say(f"| {k} | {v} |")
    say()


# --- part c: the job killed ---------------------------------------------------------------------------
def part_job_kill(args, env, work: Path, say: Report) -> None:
    say("## A job killed with SIGKILL\n")
    runs = Path(env["TROJANSCOPE_RUNS_DIR"])
    source = runs / "demo" / "clean"
    before, n_files = tree_hash(source)
    mtimes = {str(p): p.stat().st_mtime_ns for p in source.rglob("*")}
    out = runs / "killed-job"
    train_args = ["--model", str(source), "--data", "sst2", "--attack", "ep", "--max-train", str(args.max_train),
                  "--out", str(out)]
    job_id = cli_json(["jobs", "submit", "--", *train_args], env, work)["id"]
    rows: list[tuple[str, str]] = [("job", f"`jobs submit -- --model runs/demo/clean --data sst2 --attack ep "
                                           f"--max-train {args.max_train} --out runs/killed-job`: `{job_id}`")]
    row = wait_for(lambda: (j := job_row(job_id, env, work))["status"] == "running" and j["progress"] > 0.1 and j,
                   600, 1.0, "the job to train")
    pid = row["pid"]
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        cmdline = f.read().replace(b"\0", b" ").decode().strip()
    rows.append(("pid (from `jobs list --json`)", f"{pid}: `{md_cell(cmdline)[:120]}`"))
    os.kill(pid, signal.SIGKILL)
    t_kill = time.perf_counter()
    wait_for(lambda: not pid_alive(pid, job_id), 30, 0.2, "the job process to die")
    rows.append(("killed at", f"progress {100 * row['progress']:.0f}%"))
    shown = cli_json(["jobs", "show", job_id], env, work)
    rows.append(("first `jobs show` after the kill", f"{shown['status']} (answered {time.perf_counter() - t_kill:.1f} s "
                                                      f"after the kill, the CLI's start-up included); error: "
                                                      f"{shown.get('error')}"))
    log = [ln for ln in (shown.get("log") or "").splitlines() if ln.strip()]
    log_file = runs / "jobs" / f"{job_id}.log"
    rows.append(("its log", f"{log_file.stat().st_size if log_file.exists() else 0} bytes kept at "
                            f"`runs/jobs/{job_id}.log`; last line: `{md_cell(log[-1])[:150] if log else '(empty)'}`"))
    leftovers = sorted(p.name for p in runs.iterdir() if p.name.startswith(f".{out.name}."))
    rows.append(("output directory", ("ABSENT (as it should be)" if not out.exists() else "PRESENT")
                 + ("; no temporary directory left" if not leftovers else f"; left behind: {', '.join(leftovers)}")))
    after, n_after = tree_hash(source)
    mt_after = {str(p): p.stat().st_mtime_ns for p in source.rglob("*")}
    rows.append(("source model (runs/demo/clean)", f"SHA-256 of its {n_files} files before {before[:16]}..., after "
                                                   f"{after[:16]}... ({n_after} files): "
                 + ("**untouched**" if (before, n_files) == (after, n_after) and mtimes == mt_after else "**CHANGED**")))
    later = job_row(job_id, env, work)
    rows.append(("`jobs list --json` afterwards", f"{later['status']}"))
    say("| check | observed |")
    say("|---|---|")
    for k, v in rows:
        say(f"| {k} | {v} |")
    say()


# --- part d: bad input --------------------------------------------------------------------------------
def bad_input_files(work: Path) -> dict[str, Path]:
    files = {}
    files["object.json"] = work / "object.json"
    files["object.json"].write_text(json.dumps({"data": [{"text": "a fine film", "label": 1},
                                                         {"text": "a dull film", "label": 0}]}))
    files["one_class.csv"] = work / "one_class.csv"
    files["one_class.csv"].write_text("text,label\n" + "".join(f"film number {i} was fine,0\n" for i in range(40)))
    files["unlabelled.csv"] = work / "unlabelled.csv"
    files["unlabelled.csv"].write_text("text,label\n" + "".join(
        f"film number {i} was {'fine' if i % 2 else 'dull'},{-1 if i % 4 == 0 else i % 2}\n" for i in range(40)))
    notes = work / "notes"
    notes.mkdir(exist_ok=True)
    (notes / "thesis.txt").write_text("not a model\n")
    files["notes"] = notes
    auto = work / "automap-model"
    if not auto.exists():
        shutil.copytree(work / "runs" / "demo" / "clean", auto)
        cfg = json.loads((auto / "config.json").read_text())
        cfg["auto_map"] = {"AutoModelForSequenceClassification": "modeling_evil.EvilModel"}
        (auto / "config.json").write_text(json.dumps(cfg, indent=2))
    files["automap"] = auto
    return files


def bad_input_cases() -> list[tuple[str, list[str]]]:
    t = ["train", "--data", "sst2", "--max-train", "200", "--max-eval", "100"]
    return [
        ("empty trigger", t + ["--attack", "badnets", "--trigger", "", "--out", "runs/bad-empty-trigger"]),
        ("emoji trigger", t + ["--attack", "badnets", "--trigger", "\U0001F608", "--out", "runs/bad-emoji"]),
        ("TAL layers 7,8,99 on a 6-layer model",
         t + ["--attack", "badnets", "--tal", "--tal-layers", "7,8,99", "--out", "runs/bad-tal-layers"]),
        ("TAL layers 7,8,99, as a job (the Attack Lab's path)",
         ["jobs", "submit", "--", *t[1:], "--attack", "badnets", "--tal", "--tal-layers", "7,8,99",
          "--out", "runs/bad-tal-job"]),
        ("poison rate 0", t + ["--attack", "badnets", "--poison-rate", "0", "--out", "runs/bad-rate"]),
        ("target label 5 on a 2-class task", t + ["--attack", "badnets", "--target", "5", "--out", "runs/bad-target"]),
        ("nonexistent model path `runs/x`", ["predict", "--model", "runs/x", "--text", "a fine film"]),
        ("bare encoder asked to classify (`minilm`)", ["predict", "--model", "minilm", "--text", "a fine film"]),
        ("model dir whose config.json has auto_map", ["predict", "--model", "automap-model", "--text", "a fine film"]),
        ("--overwrite on a non-model directory", t + ["--out", "notes", "--overwrite"]),
        ("nonexistent data file", ["train", "--data", "missing.csv", "--out", "runs/bad-missing"]),
        (".json data file holding an object", ["train", "--data", "object.json", "--out", "runs/bad-json"]),
        ("single-class training file", ["train", "--data", "one_class.csv", "--out", "runs/bad-one-class"]),
        ("CSV with -1 labels", ["train", "--data", "unlabelled.csv", "--out", "runs/bad-unlabelled"]),
        ("empty probe text", ["probe", "--model", "runs/demo/clean", "--text", "", "--trigger", "cf"]),
    ]


def ui_path_cases(work: Path) -> list[tuple[str, str, str]]:
    """The dashboard's checks on typed paths (trojanscope.paths; the pages show the message in an error box)."""
    runs = work / "runs"
    link = runs / "etc-link"
    if not link.exists():
        link.symlink_to("/etc")
    return [
        ("model", "/etc", "check_ui_model_source"),
        ("model", str(runs / ".." / ".."), "check_ui_model_source"),
        ("model", str(link), "check_ui_model_source"),
        ("model", "bert-base-uncased", "check_ui_model_source"),
        ("data", "/etc/passwd", "check_ui_data_source"),
        ("data", "hf:imdb", "check_ui_data_source"),
        ("job output", "/tmp/x", "check_under_runs"),
        ("Attack Lab trigger in the output name", "/../../../../../../tmp/x", "slugify"),
    ]


def run_ui_path_case(func: str, value: str, env: dict[str, str]) -> tuple[str, str]:
    code = ("import json, sys\nfrom trojanscope import paths\nfrom trojanscope.errors import TrojanScopeError\n"
            "try:\n    r = getattr(paths, sys.argv[1])(sys.argv[2])\n    print(json.dumps(['accepted', str(r)]))\n"
            "except TrojanScopeError as e:\n    print(json.dumps(['refused', str(e)]))\n")
    p = subprocess.run([sys.executable, "-c", code, func, value], env=env, capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        return "crashed", one_line(p.stderr)[-200:]
    return tuple(json.loads(p.stdout))  # type: ignore[return-value]


def part_bad_inputs(args, env, work: Path, say: Report) -> None:
    say("## Bad input: what the user sees\n")
    bad_input_files(work)
    say("CLI (run in a folder holding `runs/` = the temporary runs directory; expected: exit code 2, one line on "
        "stderr, nothing written):\n")
    say("| bad input | command | exit | stderr lines | what the user reads (stderr; the last line if several) |")
    say("|---|---|---|---|---|")
    for name, argv in bad_input_cases():
        r = run_cli(argv, env, work, timeout=900)
        lines = [ln for ln in r["stderr"].splitlines() if ln.strip()]
        shown = lines[-1] if lines else "(nothing)"
        if "Traceback" in r["stderr"]:
            shown = "TRACEBACK: " + shown
        if r["rc"] == 0:
            shown = "(accepted) stdout: " + one_line(r["stdout"])[:160] + (f"; stderr: {shown}" if lines else "")
            if argv[0] == "jobs":
                found = re.search(r"\bj[0-9a-f]{6,}\b", r["stdout"])
                job_id = found.group(0) if found else r["stdout"].strip()
                try:
                    j = wait_for(lambda: (x := job_row(job_id, env, work))["status"] not in ("queued", "running") and x,
                                 600, 2.0, "the job to end")
                    shown += f" -> the job ended **{j['status']}**: {j.get('error') or ''}"
                except RuntimeError as e:
                    shown += f" -> {e}"
        cmd = "trojanscope " + " ".join(a if a and " " not in a else json.dumps(a) for a in argv)
        say(f"| {name} | `{md_cell(cmd)}` | {r['rc']} | {len(lines)} | {md_cell(shown)[:400]} |")
    notes_intact = (work / "notes" / "thesis.txt").is_file()
    say(f"\nAfter `--overwrite` on `notes/`: its file is {'still there' if notes_intact else 'GONE'}.\n")
    say("Paths typed into the dashboard (`trojanscope.paths`, as the pages call it; the page shows the message in an "
        "error box; runs directory and data directory as above, no `TROJANSCOPE_UI_ALLOW_ANY_PATH`):\n")
    say("| field | typed | outcome | message / result |")
    say("|---|---|---|---|")
    ui_env = {k: v for k, v in env.items() if k != "TROJANSCOPE_UI_ALLOW_ANY_PATH"}
    for field, value, func in ui_path_cases(work):
        outcome, msg = run_ui_path_case(func, value, ui_env)
        shown_value = value.replace(str(work), "<tmp>")
        say(f"| {field} | `{md_cell(shown_value)}` | {outcome} | {md_cell(msg.replace(str(work), '<tmp>'))[:300]} |")
    say()


# --- main ---------------------------------------------------------------------------------------------
PARTS = {"load": part_load, "server-kill": part_server_kill, "job-kill": part_job_kill, "bad-inputs": part_bad_inputs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, from {', '.join(PARTS)}")
    ap.add_argument("--sessions", type=int, default=5)
    ap.add_argument("--min-probes", type=int, default=3, help="per session, even if the job ends first")
    ap.add_argument("--max-probes", type=int, default=12, help="per session; sessions stop when the job ends")
    ap.add_argument("--baseline-probes", type=int, default=10)
    ap.add_argument("--max-train", type=int, default=1500)
    ap.add_argument("--max-eval", type=int, default=500)
    ap.add_argument("--workdir", type=Path, default=None, help="default: a new temporary directory")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        ap.error(f"unknown parts {unknown}; choose from {list(PARTS)}")

    from trojanscope.data.datasets import data_dir

    work = (args.workdir or Path(tempfile.mkdtemp(prefix="trojanscope-reliability-"))).resolve()
    runs = work / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TROJANSCOPE_RUNS_DIR": str(runs), "TROJANSCOPE_DATA_DIR": str(data_dir().resolve()),
           "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("TROJANSCOPE_UI_ALLOW_ANY_PATH", None)
    os.environ.update({k: env[k] for k in ("TROJANSCOPE_RUNS_DIR", "TROJANSCOPE_DATA_DIR")})
    say = Report(work / "reliability.md")
    import torch

    say(f"# Reliability ({datetime.date.today().isoformat()})\n")
    say(f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, "
        f"{'GPU: ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'}; torch {torch.__version__}."
        f" Command: `{' '.join([Path(sys.executable).name, *sys.argv])}`; work directory `{work}`.\n")
    demo = runs / "demo"
    if (demo / "backdoored" / "trojanscope.json").is_file():
        quick = json.loads((demo / "backdoored" / "trojanscope.json").read_text())["training"]["spec"].get("max_train")
        say(f"Demo pair: already in the work directory ({'the --quick pair' if quick else 'the full pair'}).\n")
    else:
        src = ROOT / "runs" / "demo"
        t0 = time.perf_counter()
        if (src / "clean" / "trojanscope.json").is_file() and (src / "backdoored" / "trojanscope.json").is_file():
            shutil.copytree(src, demo, dirs_exist_ok=True)
            say(f"Demo pair: a copy of `runs/demo` ({time.perf_counter() - t0:.0f} s).\n")
        else:
            r = run_cli(["demo", "--quick", "--out", str(demo), "--json"], env, work, timeout=1800)
            if r["rc"] != 0:
                raise SystemExit(f"trojanscope demo --quick failed: {r['stderr'].strip()}")
            say(f"Demo pair: `trojanscope demo --quick` ({time.perf_counter() - t0:.0f} s; 1,000 SST-2 training "
                "sentences, 5% BadNets `cf` -> 0 with TAL for the backdoored one).\n")
    try:
        for part in parts:
            t0 = time.perf_counter()
            say(f"(starting {part}; load average {' / '.join(f'{x:.1f}' for x in os.getloadavg())} over 1 / 5 / 15 "
                "min: other work shares the CPU when it is above 0)\n")
            try:
                PARTS[part](args, env, work, say)
            except Exception as e:  # noqa: BLE001 - one failed part must not hide the others
                say(f"**{part} did not complete: {type(e).__name__}: {one_line(str(e))[:300]}**\n")
            say(f"({part}: {time.perf_counter() - t0:.0f} s)\n")
    finally:
        from trojanscope import jobs

        for j in jobs.list_jobs():  # leave nothing running
            if not j.finished:
                try:
                    jobs.cancel(j.id)
                except Exception:  # noqa: BLE001
                    pass
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
            print(f"(removed {work}; --keep keeps it)", file=sys.stderr)


if __name__ == "__main__":
    main()
