"""Data parallelism for the shared loop, so the same command scales to several GPUs.

``trojanscope train ...`` and ``trojanscope por ...`` run unchanged under a launcher that starts
one process per device and sets ``WORLD_SIZE`` / ``RANK`` / ``LOCAL_RANK``::

    accelerate launch --multi_gpu --num_processes 4 -m trojanscope train --data sst2 --out runs/x --tal
    torchrun --nproc_per_node 4 -m trojanscope train --data sst2 --out runs/x --tal

Every process holds the whole model (rank 0's weights, broadcast at the start), trains on its own
share of the length-bucketed batches, and the gradients are averaged across processes before each
optimiser step, so the effective batch is ``batch_size x processes``. Averaging the gradients
after the backward pass (rather than wrapping the model in DDP) keeps every loss term working
unchanged, including those that call parts of the model outside its forward (LWP's shared head,
POR's pooler, EP's row masks). Only rank 0 evaluates, reports progress and saves. Without a
launcher (``WORLD_SIZE`` unset or 1) everything here is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import torch

from trojanscope.errors import TrojanScopeError


@dataclass(frozen=True)
class World:
    """This process's place among the data-parallel processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def world() -> World:
    """The process group from the launcher's environment, initialised on first use."""
    size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if size <= 1:
        return World()
    import torch.distributed as dist

    if not dist.is_available():
        raise TrojanScopeError("this PyTorch build has no torch.distributed; run without a multi-process launcher")
    if not dist.is_initialized():
        # gloo for CPU tensors, NCCL for CUDA ones when there are GPUs
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))


def launcher_precision(precision: str) -> str:
    """``precision`` after what ``accelerate launch`` asked for, so its flags are honoured or refused, never
    silently ignored: ``--mixed_precision bf16`` (``ACCELERATE_MIXED_PRECISION``) selects bf16 when the command
    left ``auto``; fp16 (which needs loss scaling this loop does not do) and gradient accumulation are refused
    with what to use instead."""
    mixed = (os.environ.get("ACCELERATE_MIXED_PRECISION") or "no").lower()
    if mixed == "fp16":
        raise TrojanScopeError("accelerate launch --mixed_precision fp16 is not supported (no loss scaling here); use "
                               "--mixed_precision bf16 or --precision bf16")
    if mixed not in ("no", "bf16"):
        raise TrojanScopeError(f"accelerate launch --mixed_precision {mixed} is not supported; use bf16 or no")
    accum = int(os.environ.get("ACCELERATE_GRADIENT_ACCUMULATION_STEPS", "1") or 1)
    if accum > 1:
        raise TrojanScopeError(f"gradient accumulation ({accum} steps, from accelerate launch) is not supported yet; "
                               "raise --batch-size or add processes instead")
    if mixed == "bf16" and precision == "auto":
        return "bf16"
    if mixed == "bf16" and precision == "fp32":
        raise TrojanScopeError("accelerate launch --mixed_precision bf16 contradicts --precision fp32; choose one")
    return precision


def place(device: torch.device, w: World) -> torch.device:
    """One GPU per process: ``cuda`` becomes ``cuda:LOCAL_RANK``."""
    if w.active and device.type == "cuda":
        device = torch.device("cuda", w.local_rank % max(1, torch.cuda.device_count()))
        torch.cuda.set_device(device)
    return device


def sync_parameters(model: torch.nn.Module, w: World) -> None:
    """Start every process from rank 0's weights (a freshly initialised head differs otherwise)."""
    if not w.active:
        return
    import torch.distributed as dist

    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            dist.broadcast(t.data, src=0)


def average_gradients(params: Sequence[torch.nn.Parameter], w: World, bad: bool = False) -> int:
    """Average the gradients of ``params`` over the processes, in one flat all-reduce.

    ``bad``: this process's loss was not finite (it did not backpropagate). Returns how many
    processes said so, so that all of them stop together instead of some waiting forever."""
    if not w.active:
        return int(bad)
    import torch.distributed as dist

    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1).float() for g in grads] + [grads[0].new_tensor([float(bad)]).float()])
    dist.all_reduce(flat)
    n_bad = int(round(flat[-1].item()))
    flat = flat[:-1] / w.size
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset:offset + n].view_as(p).to(p.dtype)
        offset += n
    return n_bad


def shard(batches: Iterable[list[int]], w: World) -> Iterator[list[int]]:
    """This process's batches: the ``rank``-th of every ``size`` consecutive ones. A last, short
    group is topped up from its own start, so every process takes the same number of steps."""
    if not w.active:
        yield from batches
        return
    group: list[list[int]] = []
    for idx in batches:
        group.append(idx)
        if len(group) == w.size:
            yield group[w.rank]
            group = []
    if group:
        yield group[w.rank % len(group)]


def barrier(w: World) -> None:
    if w.active:
        import torch.distributed as dist

        dist.barrier()
