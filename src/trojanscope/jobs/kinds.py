"""What a job can run: each kind is a task (:mod:`trojanscope.tasks`), and the job stores its spec.

``train``, ``por`` and ``purify`` write one new model directory (``scan`` a directory with ``scan.json``)
(``<runs dir>/<job id>`` unless the spec's ``out`` says otherwise); ``demo`` builds the demo pair under
``<runs dir>/demo``, keeping a model that already matches its recipe, and is exclusive: while one demo job is
queued or running, submitting another returns it (two tabs pressing Build make one build).
"""

from __future__ import annotations

from trojanscope.tasks import Task, get_task, task_kinds

JobKind = Task  # the name the job machinery had for it before tasks existed


def job_kind(kind: str) -> Task:
    """The task a job of ``kind`` runs (a TrojanScopeError naming the allowed kinds otherwise)."""
    return get_task(kind)


KINDS = task_kinds()
JOB_KINDS: dict[str, Task] = {k: get_task(k) for k in KINDS}
