"""The jobs table: one SQLite file that the dashboard, CLI calls and job processes share.

The file is ``<runs dir>/jobs.sqlite``. It runs in WAL mode (readers never block the one writer,
and a listing is a plain read that never takes the write lock) with a busy timeout, and every
multi-step change happens inside ``BEGIN IMMEDIATE`` so that two processes cannot both act on the
same row (two schedulers starting one job, a cancel racing the job's own final write). Progress
and per-epoch metric writes are best-effort (:meth:`JobStore.try_update`): a busy lock skips one
instead of failing the job. Connections are opened per call and closed at once: nothing here is
meant to live across a fork or a Streamlit rerun.

The schema carries a version (``PRAGMA user_version``, :data:`SCHEMA_VERSION`); opening an older
file upgrades it in place (:func:`migrate`), and a file from a newer TrojanScope is refused.

This module only stores and decodes rows; the lifecycle (schedule, run, cancel) lives in
:mod:`trojanscope.jobs.runner`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator, Sequence

from trojanscope.dirs import runs_dir  # re-exported: the store lives under it
from trojanscope.errors import TrojanScopeError

log = logging.getLogger(__name__)

STATUSES = ("queued", "running", "done", "failed", "cancelled")
ACTIVE = ("queued", "running")
FINISHED = ("done", "failed", "cancelled")
BUSY_TIMEOUT_MS = 30_000  # how long a status change waits for the write lock (per attempt)
PROGRESS_BUSY_TIMEOUT_S = 0.5  # a progress write waits this long for the lock, then is skipped
METRICS_BUSY_TIMEOUT_S = 10.0  # a per-epoch metrics write waits this long, then is skipped
SCHEMA_VERSION = 2  # PRAGMA user_version of a current jobs.sqlite
_JSON_COLUMNS = ("argv", "config", "metrics", "result", "spec")

# version 0: the table as first released (files from then carry no user_version)
_SCHEMA_V0 = ("""
CREATE TABLE IF NOT EXISTS jobs (
    id          TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    created     REAL NOT NULL,
    started     REAL,
    ended       REAL,
    argv        TEXT NOT NULL,
    config      TEXT NOT NULL,
    device      TEXT NOT NULL,
    progress    REAL NOT NULL DEFAULT 0,
    metrics     TEXT NOT NULL DEFAULT '[]',
    result      TEXT,
    out_dir     TEXT,
    log_path    TEXT NOT NULL,
    cwd         TEXT NOT NULL,
    pid         INTEGER,
    error       TEXT,
    dedupe_key  TEXT NOT NULL
)""",
              "CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, device, created)",
              "CREATE INDEX IF NOT EXISTS jobs_by_key ON jobs (dedupe_key, created)")


def _v0_to_v1(conn: sqlite3.Connection) -> None:
    """Version 1: ``message``, a one-line description of what a running job is doing now."""
    for statement in _SCHEMA_V0:  # an empty file starts at version 0 too
        conn.execute(statement)
    columns = {row[1] for row in conn.execute("PRAGMA table_info(jobs)")}
    if "message" not in columns:
        conn.execute("ALTER TABLE jobs ADD COLUMN message TEXT")


def _v1_to_v2(conn: sqlite3.Connection) -> None:
    """Version 2: ``spec``, the task spec the job runs (``spec.to_dict()``, :mod:`trojanscope.tasks`). Rows from
    before keep ``spec`` NULL: they still list and show (their ``argv`` and ``config``), but cannot run again."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(jobs)")}
    if "spec" not in columns:
        conn.execute("ALTER TABLE jobs ADD COLUMN spec TEXT")


_MIGRATIONS = {0: _v0_to_v1, 1: _v1_to_v2}  # version -> the step that upgrades it to version + 1


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection) -> int:
    """Upgrade the schema behind ``conn`` (an autocommit connection) in place to :data:`SCHEMA_VERSION`.

    Every step runs in one ``BEGIN IMMEDIATE`` transaction (two processes opening an old file
    upgrade it once); returns the version found. A file from a newer TrojanScope is refused.
    """
    found = schema_version(conn)
    if found == SCHEMA_VERSION:
        return found
    if found < SCHEMA_VERSION:
        conn.execute("PRAGMA journal_mode = WAL")  # persistent; cannot change inside a transaction
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = schema_version(conn)  # another process may have upgraded it meanwhile
        if found > SCHEMA_VERSION:
            raise TrojanScopeError(f"the job store was written by a newer TrojanScope (schema version {found}; this "
                                   f"one knows up to {SCHEMA_VERSION}): upgrade TrojanScope or set "
                                   "TROJANSCOPE_RUNS_DIR to another directory")
        for version in range(found, SCHEMA_VERSION):
            _MIGRATIONS[version](conn)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        conn.rollback()
        raise
    conn.commit()
    return found


def is_busy(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLite giving up on a lock another connection holds."""
    return isinstance(exc, sqlite3.OperationalError) and any(
        word in str(exc).lower() for word in ("locked", "busy"))




@dataclass
class Job:
    """One row of the ``jobs`` table, JSON columns decoded.

    Timestamps are Unix seconds. ``progress`` is 0..1 (1 only once the job is done); ``metrics``
    holds one record per finished epoch as it arrives and ``result`` what the task returned. ``spec`` is
    the task spec the job runs (``TaskSpec.to_dict()``; None for a job recorded before tasks existed),
    ``config`` a flat summary of it for listings (``model``, ``data``, ``attack`` or ``method``, ...: the
    keys older rows, which stored the command's arguments, also have), ``argv`` the command line it was
    submitted with, when it came from the CLI. ``cwd`` is the submitter's working directory: the job runs
    there, so relative model, data and output paths mean what they meant to the submitter.
    """

    id: str
    kind: str
    status: str
    created: float
    argv: list[str]
    config: dict[str, Any]
    device: str
    log_path: str
    cwd: str
    dedupe_key: str
    started: float | None = None
    ended: float | None = None
    progress: float = 0.0
    metrics: list[dict[str, Any]] = field(default_factory=list)
    result: dict[str, Any] | None = None
    out_dir: str | None = None
    pid: int | None = None
    error: str | None = None
    message: str | None = None
    spec: dict[str, Any] | None = None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> "Job":
        values = {k: row[k] for k in row.keys()}
        for k in _JSON_COLUMNS:
            if values[k] is not None:
                values[k] = json.loads(values[k])
        return cls(**values)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def to_json(self) -> dict[str, Any]:
        """Every column except the internal dedupe key, as plain JSON values."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "dedupe_key"}


def _encode(column: str, value: Any) -> Any:
    return json.dumps(value, ensure_ascii=False) if column in _JSON_COLUMNS and value is not None else value


class JobStore:
    """The ``jobs`` table under ``root`` (default: :func:`runs_dir`, read when the store is made)."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else runs_dir()
        self.path = self.root / "jobs.sqlite"

    def log_path(self, job_id: str) -> Path:
        return self.root / "jobs" / f"{job_id}.log"

    @contextlib.contextmanager
    def connect(self, timeout: float | None = None) -> Iterator[sqlite3.Connection]:
        """An autocommit connection (each statement is its own transaction), closed on exit.

        ``timeout``: seconds a statement waits for a lock (default ``BUSY_TIMEOUT_MS``). Opening
        writes nothing unless the schema is older than :data:`SCHEMA_VERSION` (then it is upgraded).
        """
        self.root.mkdir(parents=True, exist_ok=True)
        seconds = BUSY_TIMEOUT_MS / 1000 if timeout is None else timeout
        conn = sqlite3.connect(self.path, timeout=seconds, isolation_level=None)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(seconds * 1000)}")
            if schema_version(conn) != SCHEMA_VERSION:
                migrate(conn)
            yield conn
        finally:
            conn.close()

    @contextlib.contextmanager
    def transaction(self, timeout: float | None = None) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error): the write lock is held throughout.

        ``timeout``: seconds to wait for the lock before ``sqlite3.OperationalError`` (see :func:`is_busy`).
        """
        with self.connect(timeout) as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.rollback()
                raise
            conn.commit()

    def insert(self, conn: sqlite3.Connection, job: Job) -> None:
        row = {f.name: _encode(f.name, getattr(job, f.name)) for f in fields(job)}
        conn.execute(f"INSERT INTO jobs ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", list(row.values()))

    def find(self, job_id: str, conn: sqlite3.Connection | None = None) -> Job | None:
        rows = self.select("id = ?", (job_id,), conn=conn)
        return rows[0] if rows else None

    def get(self, job_id: str, conn: sqlite3.Connection | None = None) -> Job:
        job = self.find(job_id, conn)
        if job is None:
            raise TrojanScopeError(f"no job with id {job_id!r} in {self.path}; `trojanscope jobs list` shows the ids")
        return job

    def select(self, where: str = "1", params: Sequence[Any] = (), *, order: str = "created DESC, rowid DESC",
               limit: int | None = None, conn: sqlite3.Connection | None = None) -> list[Job]:
        """Jobs matching the SQL condition ``where`` (internal callers only), newest first by default."""
        sql = f"SELECT * FROM jobs WHERE {where} ORDER BY {order}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        if conn is not None:
            return [Job.from_row(r) for r in conn.execute(sql, params)]
        with self.connect() as own:
            return [Job.from_row(r) for r in own.execute(sql, params)]

    def update(self, job_id: str, conn: sqlite3.Connection | None = None, **values: Any) -> None:
        """Set columns of one job (JSON columns are encoded)."""
        sql = f"UPDATE jobs SET {', '.join(f'{k} = ?' for k in values)} WHERE id = ?"
        params = [_encode(k, v) for k, v in values.items()] + [job_id]
        if conn is not None:
            conn.execute(sql, params)
            return
        with self.connect() as own:
            own.execute(sql, params)

    def try_update(self, job_id: str, timeout: float | None = None, **values: Any) -> bool:
        """Best-effort :meth:`update` (progress, message): when the write lock stays busy for ``timeout``
        seconds (default :data:`PROGRESS_BUSY_TIMEOUT_S`) the write is logged and skipped (False), never
        raised; the next one catches up."""
        try:
            with self.connect(PROGRESS_BUSY_TIMEOUT_S if timeout is None else timeout) as conn:
                self.update(job_id, conn, **values)
            return True
        except sqlite3.OperationalError as e:
            if not is_busy(e):
                raise
            log.warning("job %s: skipped a progress write (%s: the job store is busy)", job_id, e)
            return False

    def append_metric(self, job_id: str, record: dict[str, Any], progress: float,
                      timeout: float | None = None) -> bool:
        """Append one epoch record to ``metrics`` and set ``progress``, in one statement; best-effort like
        :meth:`try_update`, waiting up to :data:`METRICS_BUSY_TIMEOUT_S` by default (False: the store
        stayed busy and the record was skipped)."""
        try:
            with self.connect(METRICS_BUSY_TIMEOUT_S if timeout is None else timeout) as conn:
                conn.execute("UPDATE jobs SET metrics = json_insert(metrics, '$[#]', json(?)), progress = ? "
                             "WHERE id = ?", (json.dumps(record, ensure_ascii=False), progress, job_id))
            return True
        except sqlite3.OperationalError as e:
            if not is_busy(e):
                raise
            log.warning("job %s: skipped an epoch's metrics write (%s: the job store is busy)", job_id, e)
            return False
