"""Durable task state of the emulated cloud: one SQLite file, safe to use from many threads.

Timestamps are Unix seconds (``time.time()``): they must survive restarts, so a monotonic clock
would not do. FIFO order comes from an autoincrement sequence, not from timestamps, because two
tasks may be created within the clock's resolution.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any


class TaskState(StrEnum):
    """States of a task, exactly as the HTTP API spells them."""

    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


#: States a task never leaves.
TERMINAL_STATES = frozenset({TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELLED})

_SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id TEXT NOT NULL UNIQUE,
    client_token TEXT NOT NULL UNIQUE,
    device TEXT NOT NULL,
    program TEXT NOT NULL,
    program_sha256 TEXT NOT NULL,
    shots INTEGER NOT NULL,
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    ended_at REAL,
    message TEXT,
    result TEXT
);
CREATE INDEX IF NOT EXISTS tasks_state_seq ON tasks (state, seq);
CREATE TABLE IF NOT EXISTS submissions (
    client_token TEXT PRIMARY KEY,
    count INTEGER NOT NULL
);
"""

# Status polls are frequent, so the record leaves out the program and the result (both can weigh
# megabytes); they have their own accessors.
_RECORD_COLUMNS = (
    "seq, task_id, client_token, device, program_sha256, shots, state, created_at, started_at, "
    "ended_at, message"
)


def _select_records(condition: str) -> str:
    """``SELECT <record columns> FROM tasks WHERE <condition>``; conditions are literals in this module."""
    return f"SELECT {_RECORD_COLUMNS} FROM tasks WHERE {condition}"  # noqa: S608 - no user text reaches it


def program_digest(program: str) -> str:
    """SHA-256 of a program's UTF-8 text, used to compare idempotent replays cheaply."""
    return hashlib.sha256(program.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class TaskRecord:
    """One task as stored, without its program and result.

    Attributes:
        seq: Position in arrival order (FIFO key).
        task_id: Public identifier.
        client_token: The client's idempotency token.
        device: Device the task targets.
        program_sha256: Digest of the program text.
        shots: Shots requested.
        state: Current state.
        created_at: Arrival time (Unix seconds).
        started_at: When it last went RUNNING, if it did.
        ended_at: When it reached a terminal state, if it did.
        message: Failure reason or other remark.
    """

    seq: int
    task_id: str
    client_token: str
    device: str
    program_sha256: str
    shots: int
    state: TaskState
    created_at: float
    started_at: float | None
    ended_at: float | None
    message: str | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> TaskRecord:
        """Build a record from a row selected with the record columns."""
        return cls(
            seq=int(row["seq"]),
            task_id=str(row["task_id"]),
            client_token=str(row["client_token"]),
            device=str(row["device"]),
            program_sha256=str(row["program_sha256"]),
            shots=int(row["shots"]),
            state=TaskState(row["state"]),
            created_at=float(row["created_at"]),
            started_at=None if row["started_at"] is None else float(row["started_at"]),
            ended_at=None if row["ended_at"] is None else float(row["ended_at"]),
            message=row["message"],
        )


class TaskStore:
    """Tasks and submission counters in ``path`` (SQLite, WAL journal).

    One connection is shared behind a lock: the emulator's load is tiny, and serialising every
    statement makes each method atomic without any retry logic.

    Args:
        path: The database file; its directory is created if needed.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # isolation_level=None: autocommit, with explicit BEGIN IMMEDIATE where several statements
        # must apply together.
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10.0)
        self._conn.row_factory = sqlite3.Row
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL is durable against a process crash in WAL mode, which is what restarts test.
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript(_SCHEMA)
            self._conn.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _one(self, sql: str, params: tuple[Any, ...]) -> TaskRecord | None:
        with self._lock:
            row = self._conn.execute(sql, params).fetchone()
        return None if row is None else TaskRecord.from_row(row)

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._conn.close()

    # --- submissions ---------------------------------------------------------------------------

    def record_submission(self, client_token: str) -> int:
        """Count one more submission request under ``client_token``.

        Returns:
            The new count for that token.
        """
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO submissions (client_token, count) VALUES (?, 1) "
                "ON CONFLICT (client_token) DO UPDATE SET count = count + 1",
                (client_token,),
            )
            row = conn.execute(
                "SELECT count FROM submissions WHERE client_token = ?", (client_token,)
            ).fetchone()
        return int(row["count"])

    def submissions(self) -> dict[str, int]:
        """Submission requests received per client token."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT client_token, count FROM submissions ORDER BY client_token"
            ).fetchall()
        return {str(row["client_token"]): int(row["count"]) for row in rows}

    # --- tasks ---------------------------------------------------------------------------------

    def create_task(
        self, *, task_id: str, client_token: str, device: str, program: str, shots: int, now: float
    ) -> tuple[TaskRecord, bool]:
        """Create a QUEUED task, unless one exists under ``client_token`` already.

        The check and the insert run in one transaction, so two concurrent submissions with the
        same token still create a single task.

        Returns:
            The task under that token and whether this call created it.
        """
        with self._transaction() as conn:
            row = conn.execute(_select_records("client_token = ?"), (client_token,)).fetchone()
            if row is not None:
                return TaskRecord.from_row(row), False
            conn.execute(
                "INSERT INTO tasks (task_id, client_token, device, program, program_sha256, shots, "
                "state, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    task_id,
                    client_token,
                    device,
                    program,
                    program_digest(program),
                    shots,
                    TaskState.QUEUED.value,
                    now,
                ),
            )
            row = conn.execute(_select_records("task_id = ?"), (task_id,)).fetchone()
        return TaskRecord.from_row(row), True

    def get(self, task_id: str) -> TaskRecord | None:
        """The task with this id, if any."""
        return self._one(_select_records("task_id = ?"), (task_id,))

    def get_by_token(self, client_token: str) -> TaskRecord | None:
        """The task created under this client token, if any."""
        return self._one(_select_records("client_token = ?"), (client_token,))

    def program(self, task_id: str) -> str | None:
        """The program text of a task, if the task exists."""
        with self._lock:
            row = self._conn.execute("SELECT program FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
        return None if row is None else str(row["program"])

    def result(self, task_id: str) -> dict[str, Any] | None:
        """The stored result of a task, if it has one."""
        with self._lock:
            row = self._conn.execute("SELECT result FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
        if row is None or row["result"] is None:
            return None
        decoded: dict[str, Any] = json.loads(row["result"])
        return decoded

    def queue_position(self, record: TaskRecord) -> int | None:
        """How many QUEUED tasks are ahead of ``record`` (``None`` unless it is QUEUED itself)."""
        if record.state is not TaskState.QUEUED:
            return None
        with self._lock:
            row = self._conn.execute(
                "SELECT COUNT(*) AS ahead FROM tasks WHERE state = ? AND seq < ?",
                (TaskState.QUEUED.value, record.seq),
            ).fetchone()
        return int(row["ahead"])

    def next_queued(self) -> TaskRecord | None:
        """The oldest QUEUED task, if any."""
        return self._one(
            _select_records("state = ? ORDER BY seq LIMIT 1"),
            (TaskState.QUEUED.value,),
        )

    def mark_running(self, task_id: str, now: float) -> bool:
        """Move a QUEUED task to RUNNING; False if it is no longer QUEUED (e.g. cancelled)."""
        with self._lock:
            cursor = self._conn.execute(
                "UPDATE tasks SET state = ?, started_at = ? WHERE task_id = ? AND state = ?",
                (TaskState.RUNNING.value, now, task_id, TaskState.QUEUED.value),
            )
        return cursor.rowcount == 1

    def finish(
        self,
        task_id: str,
        *,
        state: TaskState,
        now: float,
        message: str | None = None,
        result: dict[str, Any] | None = None,
    ) -> bool:
        """Move a RUNNING task to a terminal state.

        Only a RUNNING task changes, so a task cancelled while it ran stays CANCELLED.

        Returns:
            Whether the task changed.
        """
        if state not in TERMINAL_STATES:
            raise ValueError(f"{state} is not a terminal state")
        encoded = None if result is None else json.dumps(result, separators=(",", ":"))
        with self._lock:
            cursor = self._conn.execute(
                "UPDATE tasks SET state = ?, ended_at = ?, message = ?, result = ? "
                "WHERE task_id = ? AND state = ?",
                (state.value, now, message, encoded, task_id, TaskState.RUNNING.value),
            )
        return cursor.rowcount == 1

    def requeue(self, task_id: str) -> bool:
        """Put a RUNNING task back in the queue (its run was interrupted)."""
        with self._lock:
            cursor = self._conn.execute(
                "UPDATE tasks SET state = ?, started_at = NULL WHERE task_id = ? AND state = ?",
                (TaskState.QUEUED.value, task_id, TaskState.RUNNING.value),
            )
        return cursor.rowcount == 1

    def requeue_all_running(self) -> int:
        """Put every RUNNING task back in the queue; used at start after a crash.

        Returns:
            How many tasks were requeued.
        """
        with self._lock:
            cursor = self._conn.execute(
                "UPDATE tasks SET state = ?, started_at = NULL WHERE state = ?",
                (TaskState.QUEUED.value, TaskState.RUNNING.value),
            )
        return cursor.rowcount

    def cancel(self, task_id: str, *, now: float, message: str) -> TaskRecord | None:
        """Cancel a QUEUED or RUNNING task; a terminal task is left as it is.

        Returns:
            The task after the call, or ``None`` if there is no such task.
        """
        with self._transaction() as conn:
            conn.execute(
                "UPDATE tasks SET state = ?, ended_at = ?, message = ? WHERE task_id = ? AND state IN (?, ?)",
                (
                    TaskState.CANCELLED.value,
                    now,
                    message,
                    task_id,
                    TaskState.QUEUED.value,
                    TaskState.RUNNING.value,
                ),
            )
            row = conn.execute(_select_records("task_id = ?"), (task_id,)).fetchone()
        return None if row is None else TaskRecord.from_row(row)
