"""What every long action is: a typed spec, a preflight and a run that emits typed events.

A :class:`Task` is one kind of long work (``train``, ``por``, ``purify``, ``scan``, ``repair``, ``demo``, and the
analyses: ``swap``, ``anatomy``, ``effectiveness``, ``detect``, ``embed-map``). Its spec is a
dataclass (:class:`TaskSpec`: ``to_dict``/``from_dict``, validated) that says everything the run needs; the
CLI turns flags into specs, the dashboard's pages build specs, and the job system stores ``spec.to_dict()``
and runs the task. :meth:`Task.preflight` refuses at once what the run would refuse seconds later (without
loading weights); :meth:`Task.run` does the work and reports :class:`Event`s.

This package sits below the jobs and the CLI and above the library (analysis, defenses, training): it never
imports either of the former.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

from trojanscope import specs
from trojanscope.errors import TrojanScopeError
from trojanscope.registry import Registry

EVENT_KINDS = ("step", "epoch", "stage", "log")


@dataclass(frozen=True)
class Event:
    """One thing a running task reports.

    ``kind``: ``step`` (progress: ``step`` of ``total``), ``epoch`` (a per-epoch metrics record in ``data``),
    ``stage`` (a new phase; ``message`` says which) or ``log`` (a line for the log). ``data`` keeps everything
    else the library reported (running losses, the model being built, ...)."""

    kind: str
    step: int | None = None
    total: int | None = None
    message: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def progress(self) -> float | None:
        """``step / total`` in [0, 1], or None when the event does not count steps."""
        if self.step is None or not self.total:
            return None
        return max(0.0, min(1.0, self.step / self.total))

    @classmethod
    def of(cls, d: dict[str, Any]) -> "Event":
        """The event a library callback reported as a dict (``{"event": "step", "step", "total", ...}``)."""
        kind = str(d.get("event", "log"))
        if kind not in EVENT_KINDS:
            kind = "log"
        rest = {k: v for k, v in d.items() if k not in ("event", "step", "total", "message")}
        step, total = d.get("step"), d.get("total")
        return cls(kind, int(step) if step is not None else None, int(total) if total else None,
                   str(d.get("message") or ""), rest)

    def to_dict(self) -> dict[str, Any]:
        """The dict shape the library's callbacks use (``event`` names the kind)."""
        out: dict[str, Any] = {"event": self.kind, **self.data}
        if self.step is not None:
            out["step"] = self.step
        if self.total is not None:
            out["total"] = self.total
        if self.message:
            out["message"] = self.message
        return out


OnEvent = Callable[[Event], None]


def library_callback(on_event: OnEvent | None) -> Callable[[dict[str, Any]], None] | None:
    """The dict callback the library's runs take, forwarding each report to ``on_event`` as an :class:`Event`."""
    if on_event is None:
        return None
    return lambda d: on_event(Event.of(d))


class EventBar:
    """A task's events drawn on stderr (tqdm): ``step`` events move the bar, a ``stage`` event names the phase in
    its description. A context manager (closes the bar); called with each :class:`Event`. The bar appears at the
    first event that measures progress, so input refused before any work (after a stage named, say "loading")
    leaves stderr to its one-line error."""

    def __init__(self, kind: str):
        self.kind = kind
        self.desc = kind
        self.bar: Any = None

    def __call__(self, event: Event) -> None:
        if event.kind == "stage" and event.message:
            self.desc = f"{self.kind}: {event.message}"[:70]
            if self.bar is not None:
                self.bar.set_description_str(self.desc, refresh=False)
        if event.total:  # a step, or a stage that says where it starts
            if self.bar is None:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=1, desc=self.desc, unit="", leave=False,
                                bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]")
            self.bar.total = event.total
            self.bar.n = min(int(event.step or 0), event.total)
            self.bar.refresh()

    def __enter__(self) -> "EventBar":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.close()


class TaskSpec:
    """Mix-in for a task's spec dataclass: ``kind`` names its task; ``out``/``overwrite`` where it writes."""

    kind: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        return specs.to_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        """The spec ``to_dict`` wrote (a job record, a saved file); unknown keys are refused by name."""
        return specs.from_dict(cls, d, where=f"{cls.kind} spec")

    def validate(self):
        return self

    def replace(self, **changes: Any):
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Task:
    """One kind of long work and how the job system treats it."""

    kind: str
    spec_type: type
    run_fn: Callable[[Any, OnEvent | None, bool], dict[str, Any]]
    description: str = ""
    preflight_fn: Callable[[Any], None] | None = None
    device_of: Callable[[Any], str] = lambda spec: getattr(spec, "device", "auto")
    summary_of: Callable[[Any], dict[str, Any]] = lambda spec: {}
    default_out: str | None = None  # without an out: <runs dir>/<this> (None: <runs dir>/<job id>)
    exclusive: bool = False  # at most one queued or running job of this kind; a second submit returns it
    keeps_output: bool = False  # the out may exist (the task keeps or rebuilds what is there); never removed
    resumable: bool = False  # continues from its checkpoint when run again with ``resume=True``
    output: str = "model"  # what it writes: "model" (a model directory), "models" (several), "scan" or "analysis"
    lane: str = "main"  # the scheduling lane: each allows $TROJANSCOPE_JOBS_PER_DEVICE running jobs per device
    # the run reports its progress only as events (the scan, the analyses): with ``progress`` and no
    # ``on_event``, as in a command in the foreground, :meth:`run` draws them as a bar on stderr
    bar_from_events: bool = False

    def spec(self, d: dict[str, Any] | Any):
        """``d`` as this task's spec (a dict from ``to_dict``, or the spec itself), validated."""
        spec = d if isinstance(d, self.spec_type) else self.spec_type.from_dict(d)
        return spec.validate()

    def preflight(self, spec: Any) -> None:
        """What the run would refuse before its work, checked without loading weights or training."""
        spec = self.spec(spec)
        if self.preflight_fn is not None:
            self.preflight_fn(spec)

    def run(self, spec: Any, on_event: OnEvent | None = None, progress: bool = False) -> dict[str, Any]:
        """Do the work; ``on_event`` gets :class:`Event`s; ``progress``: show progress bars on stderr."""
        spec = self.spec(spec)
        if not (progress and on_event is None and self.bar_from_events):
            return self.run_fn(spec, on_event, progress)
        with EventBar(self.kind) as bar:
            return self.run_fn(spec, bar, progress)

    def device(self, spec: Any) -> str:
        return str(self.device_of(spec))

    def summary(self, spec: Any) -> dict[str, Any]:
        """A flat view for listings (model, data, attack or method, ...), the keys older job records used."""
        return self.summary_of(spec)


def sources_of(spec: Any) -> list[str]:
    """The models a spec reads (its ``model``, ``clean``, ``backdoored``, ``reference`` and ``models`` fields, or
    those of the recipe it nests as ``spec``), in that order, without blanks."""
    recipe = getattr(spec, "spec", spec)
    found = [getattr(recipe, name, None) for name in ("model", "clean", "backdoored", "reference")]
    found += list(getattr(recipe, "models", None) or [])
    return [str(s) for s in found if s]


TASKS: Registry[Task] = Registry("task")


def register(task: Task) -> Task:
    return TASKS.register(task.kind, task)


# the modules that register tasks (imported on first use: each pulls in its part of the library lazily)
TASK_MODULES = ("builtin", "analyses", "repair")


def _register_all() -> None:
    import importlib

    for name in TASK_MODULES:
        importlib.import_module(f"trojanscope.tasks.{name}")


def get_task(kind: str) -> Task:
    """The task named ``kind`` (a TrojanScopeError naming the allowed kinds otherwise)."""
    _register_all()

    try:
        return TASKS.get(kind)
    except TrojanScopeError:
        raise TrojanScopeError(f"unknown task kind {kind!r}; allowed: {', '.join(task_kinds())}") from None


def task_kinds() -> tuple[str, ...]:
    _register_all()

    return tuple(TASKS.names())
