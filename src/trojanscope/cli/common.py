"""What every command shares: ``--json``, ``--device``, ``--allow-pickle``, the run options of the training
commands, the human-readable printer, and the foreground run of a task."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from trojanscope.specs import positive_int


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    p.add_argument("--allow-pickle", action="store_true",
                   help="allow loading pickle weights (pytorch_model.bin); only for files you trust")


def add_run_options(p: argparse.ArgumentParser, cfg: Any) -> None:
    """What ``train`` and ``por`` share about running the loop: precision, accumulation, checkpoints and resume
    (``cfg``: the command's default TrainConfig; :func:`checkpoint_options` reads the checkpoint ones back)."""
    from trojanscope.models.forward import PRECISION_CHOICES

    p.add_argument("--precision", default=cfg.precision, choices=PRECISION_CHOICES,
                   help="autocast precision (auto: bf16 on a GPU with bf16 and on a CPU with native bf16, else fp32; "
                        "fp16: CUDA only); the card records it")
    p.add_argument("--grad-accum", type=positive_int, default=cfg.grad_accum,
                   help="micro-batches per optimiser step (effective batch: batch size x this x processes)")
    p.add_argument("--checkpoint-every", type=int, default=0, metavar="STEPS",
                   help="save the training state every STEPS steps (0: off), beside --out, for --resume")
    p.add_argument("--checkpoint-minutes", type=float, default=10.0, metavar="M",
                   help="and every M minutes (0: off); a run shorter than that never writes one")
    p.add_argument("--resume", action="store_true",
                   help="continue from the checkpoint a killed or paused run of the same recipe left")


def checkpoint_options(args: argparse.Namespace) -> dict[str, Any]:
    """``train``/``por``'s checkpoint and resume options, as run_training/run_por keywords."""
    return {"checkpoint_every": args.checkpoint_every, "checkpoint_minutes": args.checkpoint_minutes,
            "resume": args.resume}


def progress_wanted(args: argparse.Namespace) -> bool:
    """Progress bars on stderr: unless ``--json`` asked for a quiet stderr and stderr is not a terminal."""
    return not getattr(args, "json", False) or sys.stderr.isatty()


def run_task(spec: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Run task spec ``spec`` in this process (the command in the foreground; ``jobs submit`` queues it)."""
    from trojanscope.tasks import get_task

    return get_task(spec.kind).run(spec, progress=progress_wanted(args))


def print_human(result: dict[str, Any]) -> None:
    for key, value in result.items():
        if isinstance(value, float):
            value = f"{value:.4f}"
        elif isinstance(value, (dict, list)):
            value = json.dumps(value, ensure_ascii=False)
        print(f"{key}: {value}")
