"""Small shared helpers: seeding, devices, atomic output directories, JSON of dataclasses."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from trojanscope.errors import TrojanScopeError
from trojanscope.specs import positive_int  # noqa: F401 - its old home


CARD_NAME = "trojanscope.json"  # the model card beside every saved model (models.loading re-exports it)


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU; asking for CUDA without a GPU is an error."""
    device = (device or "auto").lower()
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise TrojanScopeError(
                f"device {device!r} was requested but no CUDA GPU is available here; "
                "use --device cpu or --device auto"
            )
        return torch.device(device)
    if device == "cpu":
        return torch.device("cpu")
    raise TrojanScopeError(f"unknown device {device!r}; allowed: auto, cpu, cuda, cuda:N")


def to_jsonable(obj: Any) -> Any:
    """Dataclasses, paths, numpy scalars and arrays -> plain JSON values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and obj != obj:  # NaN is not JSON
        return None
    return obj


def write_json(path: str | Path, data: Any) -> None:
    Path(path).write_text(json.dumps(to_jsonable(data), indent=2, ensure_ascii=False) + "\n")


def _backups(out: Path) -> list[Path]:
    """``out``'s backups left by :func:`atomic_directory` (``.NAME.old-*`` beside it), newest first."""
    import glob

    found = []
    for p in out.parent.glob(f".{glob.escape(out.name)}.old-*"):
        with contextlib.suppress(OSError):
            if p.is_dir() and not p.is_symlink():
                found.append((p.stat().st_mtime_ns, p.name, p))
    return [p for _, _, p in sorted(found, reverse=True)]


def recover_directory(out: str | Path) -> Path | None:
    """Finish a replacement that a crash interrupted: if ``out`` is missing but a backup of it exists
    (the old model, renamed aside just before the new one was to take its place), rename the newest
    backup back to ``out`` and return it. If ``out`` exists, its leftover backups are deleted."""
    out = Path(out)
    backups = _backups(out)
    if not backups:
        return None
    if out.exists() or out.is_symlink():
        for b in backups:
            shutil.rmtree(b, ignore_errors=True)
        return None
    try:
        backups[0].rename(out)
    except OSError:  # another process (a second rank) restored it first, or it cannot be: left for the next call
        return None
    for b in backups[1:]:
        shutil.rmtree(b, ignore_errors=True)
    return out


def same_or_nested(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether paths ``a`` and ``b`` (links resolved) are the same or one lies inside the other: an output there
    would write over (or around) its source, which purification and repair refuse."""
    a, b = os.path.realpath(a), os.path.realpath(b)
    return os.path.commonpath([a, b]) in (a, b)


def check_output_dir(out: str | Path, overwrite: bool = False) -> None:
    """Refuse an ``--out`` that exists unless ``overwrite``; with it, refuse anything but an empty
    directory or a saved model (a directory holding ``trojanscope.json``). Recovers an interrupted
    replacement of ``out`` first (:func:`recover_directory`)."""
    out = Path(out)
    recover_directory(out)
    if not (out.exists() or out.is_symlink()):
        return
    if not overwrite:
        raise TrojanScopeError(f"output directory {out} already exists; choose another --out or pass --overwrite")
    if out.is_symlink() or not out.is_dir():
        raise TrojanScopeError(f"--overwrite replaces only a directory, and {out} is a file or a link; choose another "
                               "--out")
    if any(out.iterdir()) and not (out / CARD_NAME).is_file():
        raise TrojanScopeError(f"--overwrite replaces only an empty directory or a saved model (one holding "
                               f"{CARD_NAME}), and {out} is neither, so it is kept; choose another --out")


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGTERM and SIGINT for the duration of the block and deliver them after it (to the handlers
    that were in place). Signal handlers can only be set in the main thread: elsewhere nothing is held."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous: dict[int, Any] = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            previous[sig] = signal.signal(sig, lambda signum, frame: held.append(signum))
        except (ValueError, OSError):  # pragma: no cover - not the main interpreter
            pass
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        for sig in dict.fromkeys(held):
            signal.raise_signal(sig)


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` to ``out``, replacing ``out`` if it exists, so that at every instant the old or the
    new directory is at ``out`` or in its backup: old -> backup, tmp -> out, then the backup is deleted.
    SIGTERM/SIGINT wait until both renames are done; if the second rename fails, the old one is put back.
    A process killed outright between the renames leaves the backup, which the next
    :func:`atomic_directory` (or :func:`check_output_dir`) for ``out`` restores."""
    with _signals_deferred():
        if not (out.exists() or out.is_symlink()):
            tmp.rename(out)
            return
        backup = out.with_name(f".{out.name}.old-{os.getpid()}-{os.urandom(4).hex()}")
        out.rename(backup)
        try:
            tmp.rename(out)
        except BaseException:
            if not (out.exists() or out.is_symlink()):
                backup.rename(out)
            raise
    shutil.rmtree(backup, ignore_errors=True)


@contextlib.contextmanager
def atomic_directory(out: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory beside ``out``; rename it to ``out`` only if the block succeeds.

    A failure (or Ctrl-C) removes the temporary directory, so nothing half-written is left. With
    ``overwrite``, only an empty directory or a saved model is replaced (:func:`check_output_dir`),
    and the replacement never leaves ``out`` without the old or the new model (:func:`_swap_into_place`).
    """
    out = Path(out)
    check_output_dir(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o777 & ~mask)  # mkdtemp makes it 0700: the saved model gets the usual permissions
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        check_output_dir(out, overwrite)  # again: the block ran for minutes, something may have appeared
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
