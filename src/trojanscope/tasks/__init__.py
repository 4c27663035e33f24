"""Tasks: every long action (train, por, purify, scan, repair, demo) as a typed spec, a preflight and a run that
emits typed events (:mod:`trojanscope.tasks.base`). The CLI turns flags into specs, the pages build specs,
the jobs store ``spec.to_dict()`` and run the task.

    from trojanscope.tasks import get_task, ScanTaskSpec
    task = get_task("scan")
    task.preflight(ScanTaskSpec(model="runs/demo/backdoored"))
    result = task.run(ScanTaskSpec(model="runs/demo/backdoored"), on_event=print)
"""

from __future__ import annotations

from trojanscope.tasks.base import EVENT_KINDS, TASKS, Event, OnEvent, Task, TaskSpec, get_task, task_kinds
from trojanscope.tasks.builtin import (DemoTaskSpec, PORTaskSpec, PurifyTaskSpec, ScanTaskSpec, TrainTaskSpec)
from trojanscope.tasks.repair import RepairTaskSpec

__all__ = ["EVENT_KINDS", "TASKS", "Event", "OnEvent", "Task", "TaskSpec", "get_task", "task_kinds",
           "DemoTaskSpec", "PORTaskSpec", "PurifyTaskSpec", "RepairTaskSpec", "ScanTaskSpec",
           "TrainTaskSpec"]
