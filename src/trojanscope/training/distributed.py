"""Data parallelism for the shared loop, on ``accelerate.Accelerator``, so the same command scales to several GPUs.

``trojanscope train ...`` and ``trojanscope por ...`` run unchanged under a launcher that starts
one process per device and sets ``WORLD_SIZE`` / ``RANK`` / ``LOCAL_RANK``::

    accelerate launch --multi_gpu --num_processes 4 -m trojanscope train --data sst2 --out runs/x --tal
    accelerate launch --multi_gpu --num_processes 4 --mixed_precision bf16 \
        -m trojanscope train --data sst2 --out runs/x --tal --grad-accum 2
    torchrun --nproc_per_node 4 -m trojanscope train --data sst2 --out runs/x --tal

The loop (``training.loop.train``) builds one :class:`accelerate.Accelerator` per run
(:func:`accelerator_for`): the model is wrapped in DDP (rank 0's weights broadcast at the start, gradients
all-reduced in buckets during the backward pass), the forward and the loss terms run under Accelerate's
mixed-precision autocast, ``accelerator.backward``/``clip_grad_norm_`` do the scaling fp16 needs, and the
per-step losses are reduced across processes. Every process trains on its own share of the length-bucketed
batches (:func:`shard`), so the effective batch is ``batch_size x grad_accum x processes``. Loss terms receive
the unwrapped model: those that call parts of it outside its forward (LWP's shared head, POR's pooler, EP's row
mask) work unchanged, because DDP runs with ``find_unused_parameters`` and reduces every gradient the backward
produces. Only rank 0 evaluates, reports progress and saves. Without a launcher (``WORLD_SIZE`` unset or 1)
there is one process and no DDP.

Not supported (refused with a message, never silently ignored): FSDP and DeepSpeed (``accelerate launch
--use_fsdp/--use_deepspeed``; the loss terms that reach into the model would see sharded parameters).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Iterator

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
    """The process group from the launcher's environment, initialised on first use (by Accelerate's
    ``PartialState``: gloo for CPU processes, NCCL for GPUs)."""
    size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if size <= 1:
        return World()
    if not torch.distributed.is_available():
        raise TrojanScopeError("this PyTorch build has no torch.distributed; run without a multi-process launcher")
    from accelerate import PartialState

    # Accelerate treats a launcher's CPU processes as one group only when told they are CPU processes
    cpu = not torch.cuda.is_available() or (os.environ.get("ACCELERATE_USE_CPU") or "").lower() in ("1", "true", "yes")
    state = PartialState(cpu=cpu)
    return World(state.process_index, state.num_processes, state.local_process_index)


def _env_int(name: str) -> int:
    raw = os.environ.get(name, "") or "1"
    try:
        return int(raw)
    except ValueError:
        raise TrojanScopeError(f"{name}={raw!r} (set by accelerate launch) is not a whole number") from None


def launcher_settings(precision: str, grad_accum: int = 1) -> tuple[str, int]:
    """``(precision, grad_accum)`` after what ``accelerate launch`` asked for, so its flags take effect or are
    refused, never silently ignored: ``--mixed_precision bf16|fp16`` (``ACCELERATE_MIXED_PRECISION``) selects that
    precision when the command left ``auto``; ``ACCELERATE_GRADIENT_ACCUMULATION_STEPS`` (which accelerate launch
    sets only for DeepSpeed, or a user by hand) selects N when ``--grad-accum`` was left at 1; a contradiction
    between the two is an error, and so are FSDP and DeepSpeed."""
    for flag, name in (("ACCELERATE_USE_FSDP", "--use_fsdp"), ("ACCELERATE_USE_DEEPSPEED", "--use_deepspeed")):
        if (os.environ.get(flag) or "").lower() in ("1", "true", "yes"):
            raise TrojanScopeError(f"accelerate launch {name} is not supported (the loss terms reach into the "
                                   "unsharded model); use DDP: accelerate launch --multi_gpu")
    mixed = (os.environ.get("ACCELERATE_MIXED_PRECISION") or "no").lower()
    if mixed not in ("no", "bf16", "fp16"):
        raise TrojanScopeError(f"accelerate launch --mixed_precision {mixed} is not supported; use no, bf16 or fp16")
    if mixed != "no":
        if precision == "auto":
            precision = mixed
        elif precision != mixed:
            raise TrojanScopeError(f"accelerate launch --mixed_precision {mixed} contradicts --precision "
                                   f"{precision}; choose one")
    accum = _env_int("ACCELERATE_GRADIENT_ACCUMULATION_STEPS")
    if accum > 1:
        if grad_accum == 1:
            grad_accum = accum
        elif grad_accum != accum:
            raise TrojanScopeError(f"accelerate launch --gradient_accumulation_steps {accum} contradicts "
                                   f"--grad-accum {grad_accum}; choose one")
    return precision, grad_accum


def accelerator_for(device: torch.device, precision: str, w: World):
    """The run's :class:`accelerate.Accelerator`: DDP when ``w`` has several processes, Accelerate's autocast for
    ``precision`` (``fp32``, ``bf16``, ``fp16``: resolved by ``models.forward.resolve_precision``, which refuses
    what the device lacks). The loop places the model itself (``device``: one GPU per process)."""
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from accelerate.state import AcceleratorState

    # One process runs many trainings one after another (the job runner, the tests, a purifier's two stages),
    # each with its own precision and device, but Accelerate keeps one process-wide state that refuses a
    # second setting. Start each run from a fresh one; the process group (PartialState) is kept under a
    # launcher, where the device cannot change anyway. (Accelerate's own tests reset it the same way.)
    AcceleratorState._reset_state(reset_partial_state=not w.active)
    return Accelerator(cpu=device.type == "cpu", device_placement=False,
                       mixed_precision={"fp32": "no"}.get(precision, precision),
                       kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])


def undo_autocast_patch(model: torch.nn.Module) -> None:
    """Remove the autocast Accelerate's ``prepare`` wraps around ``model.forward`` under mixed precision.

    The loop runs its own ``accelerator.autocast()`` around the forward *and* the loss terms; left in place, the
    patch would make every later evaluation of this model object run in reduced precision. (Accelerate's
    ``unwrap_model(keep_fp32_wrapper=False)`` cannot be used: it unwinds ``__wrapped__`` past transformers' own
    decorators on ``forward`` and leaves a forward that rejects ``return_dict``.)"""
    original = model.__dict__.pop("_original_forward", None)
    if original is None:
        return
    if getattr(original, "__func__", None) is getattr(type(model), "forward", None):
        model.__dict__.pop("forward", None)  # the class's own forward again
    else:
        model.forward = original


def place(device: torch.device, w: World) -> torch.device:
    """One GPU per process: ``cuda`` becomes ``cuda:LOCAL_RANK``."""
    if w.active and device.type == "cuda":
        device = torch.device("cuda", w.local_rank % max(1, torch.cuda.device_count()))
        torch.cuda.set_device(device)
    return device


def sync_parameters(model: torch.nn.Module, w: World) -> None:
    """Give every process rank 0's weights (for modules DDP does not wrap, e.g. POR's frozen reference)."""
    if not w.active:
        return
    import torch.distributed as dist

    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            dist.broadcast(t.data, src=0)


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
