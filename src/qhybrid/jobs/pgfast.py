"""The worker's hot path on PostgreSQL: each store call one statement on a pooled psycopg connection.

A job's journey makes about a dozen database calls (claim, moves, remote task rows, lease
renewals). Through SQLAlchemy each cost 0.2–0.6 ms of worker CPU (checkout, transaction
bookkeeping, statement cache key, result processing, ORM objects) against 0.03 ms for the round
trip itself. Here every call is one SQL statement, written out once, run in autocommit (a single
statement is atomic; no BEGIN or COMMIT round trip) on a connection of the engine's own pool (its
liveness check, its size), and prepared by psycopg after a few executions. A move, its event and
the remote-task row it updates are one statement (data-modifying CTEs).

SQLite keeps the SQLAlchemy path of :mod:`qhybrid.jobs.store`: same statements, same conditions;
the store's tests run on both. Errors are raised as SQLAlchemy's exceptions, as the rest of the
code expects (an ``OperationalError`` is a transient failure of a step).
"""

# The SQL is written here from the mapped tables' own column names and the code's state names;
# every value is a parameter. (A name that is not a column of the table is refused in ``_bind``.)
# ruff: noqa: S608

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from sqlalchemy import JSON, Engine, Table
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.orm.instrumentation import manager_of_class

from qhybrid.domain.states import TERMINAL_STATES
from qhybrid.jobs.models import Job, JobEvent, RemoteTask, UTCDateTime

_Model = TypeVar("_Model", bound=DeclarativeBase)

_JOBS = Job.__table__
_TASKS = RemoteTask.__table__
_EVENTS = JobEvent.__table__
assert isinstance(_JOBS, Table)
assert isinstance(_TASKS, Table)
assert isinstance(_EVENTS, Table)


def _columns(table: Table) -> tuple[str, ...]:
    return tuple(column.name for column in table.c)


def _of_type(table: Table, kind: type) -> frozenset[str]:
    return frozenset(column.name for column in table.c if isinstance(column.type, kind))


_JOB_COLUMNS = _columns(_JOBS)
_TASK_COLUMNS = _columns(_TASKS)
_JSON = {"jobs": _of_type(_JOBS, JSON), "remote_tasks": _of_type(_TASKS, JSON)}
_TIMES = {"jobs": _of_type(_JOBS, UTCDateTime), "remote_tasks": _of_type(_TASKS, UTCDateTime)}
_KNOWN = {"jobs": frozenset(_JOB_COLUMNS), "remote_tasks": frozenset(_TASK_COLUMNS)}

_JOB_LIST = ", ".join(f'"{name}"' for name in _JOB_COLUMNS)
_TASK_LIST = ", ".join(f'"{name}"' for name in _TASK_COLUMNS)
# State names are the code's own enum values, never input: safe to write into the SQL.
_LIVE = "state NOT IN ({})".format(", ".join(f"'{state.value}'" for state in sorted(TERMINAL_STATES)))
_LEASE_FREE = "(lease_owner IS NULL OR lease_expires_at IS NULL OR lease_expires_at < %(now)s)"

_CLAIM = (
    "UPDATE jobs SET lease_owner = %(owner)s, lease_expires_at = %(expires)s "
    f"WHERE id = %(job_id)s AND {_LIVE} AND ("
    "lease_owner IS NULL OR lease_expires_at IS NULL OR lease_expires_at < %(now)s OR lease_owner = %(owner)s"
    f") RETURNING {_JOB_LIST}"
)
_GET_JOB = f"SELECT {_JOB_LIST} FROM jobs WHERE id = %(job_id)s"
# The claim and the current attempt's single task row (if any), in one statement: a step that polls
# or finalizes starts with both.
_CLAIM_WITH_TASK = (
    f"WITH claimed AS ({_CLAIM}) SELECT claimed.*, "
    + ", ".join(f'task."{name}" AS "rt_{name}"' for name in _TASK_COLUMNS)
    + " FROM claimed LEFT JOIN remote_tasks task "
    "ON task.job_id = claimed.id AND task.attempt = claimed.attempt AND task.round = 0"
)
_RENEW = (
    "UPDATE jobs SET lease_expires_at = %(expires)s "
    f"WHERE id = %(job_id)s AND lease_owner = %(owner)s AND lease_expires_at >= %(now)s AND {_LIVE}"
)
_SINGLE_TASK = (
    f"SELECT {_TASK_LIST} FROM remote_tasks WHERE job_id = %(job_id)s AND attempt = %(attempt)s AND round = 0"
)
# The lease is checked by the INSERT itself: no row is written unless ``owner`` holds the job.
_CREATE_TASK = (
    "INSERT INTO remote_tasks (job_id, attempt, backend, client_token, round, part, program, proxy_key, "
    "subproblem, polls, created_at, updated_at) "
    "SELECT id, %(attempt)s::integer, %(backend)s::text, %(client_token)s::text, %(round)s::integer, "
    "%(part)s::integer, %(program)s::text, %(proxy_key)s::bytea, %(subproblem)s::jsonb, 0, "
    "%(now)s::timestamptz, %(now)s::timestamptz "
    "FROM jobs WHERE id = %(job_id)s AND lease_owner = %(owner)s"
)
_CREATE_TASK_RETURNING = f"{_CREATE_TASK} RETURNING {_TASK_LIST}"
# An attempt's row exists already (a worker died after writing it): nothing written, no error.
_CREATE_TASK_UNLESS_ANY = f"{_CREATE_TASK} ON CONFLICT DO NOTHING RETURNING {_TASK_LIST}"


def _bind(table: str, fields: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """Parameters for ``fields`` of ``table``: JSON wrapped for jsonb, datetimes checked aware."""
    known, json_columns, times = _KNOWN[table], _JSON[table], _TIMES[table]
    bound: dict[str, Any] = {}
    for name, value in fields.items():
        if name not in known:
            raise sa_exc.CompileError(f"unknown column {table}.{name}")
        if value is not None and name in json_columns:
            value = Jsonb(value)
        elif isinstance(value, datetime) and name in times and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        bound[f"{prefix}{name}"] = value
    return bound


def _assignments(names: tuple[str, ...], prefix: str) -> str:
    return ", ".join(f'"{name}" = %({prefix}{name})s' for name in names)


@functools.lru_cache(maxsize=256)
def _update_job_sql(names: tuple[str, ...], task_names: tuple[str, ...] | None) -> str:
    sets = _assignments(names, "v_")
    sql = (
        f"UPDATE jobs SET updated_at = %(now)s, version = version + 1{', ' + sets if sets else ''} "
        f"WHERE id = %(job_id)s AND lease_owner = %(owner)s AND {_LIVE}"
    )
    if task_names is None:
        return sql
    # The task row's update happens only if the job's did (still under the lease).
    task = f"{_task_sql(task_names)} AND EXISTS (SELECT 1 FROM job)"
    return f"WITH job AS ({sql} RETURNING id), task AS ({task}) SELECT id FROM job"


def _task_sql(names: tuple[str, ...]) -> str:
    sets = _assignments(names, "t_")
    return (
        f"UPDATE remote_tasks SET updated_at = %(now)s{', ' + sets if sets else ''} WHERE id = %(task_row)s"
    )


@functools.lru_cache(maxsize=64)
def _update_task_sql(names: tuple[str, ...]) -> str:
    return _task_sql(names)


@functools.lru_cache(maxsize=256)
def _move_sql(names: tuple[str, ...], task_names: tuple[str, ...] | None, leased: bool, fetch: bool) -> str:
    """A move as one statement: the conditional UPDATE, its event, the task row's update.

    The INSERT and the task's UPDATE read the rows the first UPDATE moved (none if it did not),
    so they happen exactly when the job moved. ``entered_at``, the job's previous event, times
    the state it leaves (the metrics), read in the same statement rather than by a SELECT.
    """
    lease = "lease_owner = %(owner)s" if leased else _LEASE_FREE
    returned = _JOB_LIST if fetch else "id"
    sets = _assignments(names, "v_")
    sql = (
        "WITH moved AS ("
        "UPDATE jobs SET state = %(target)s, updated_at = %(now)s, version = version + 1"
        f"{', ' + sets if sets else ''} "
        f"WHERE id = %(job_id)s AND state = %(source)s AND {lease} "
        "RETURNING (SELECT at FROM job_events WHERE job_id = %(job_id)s ORDER BY id DESC LIMIT 1) "
        f"AS entered_at, {returned}), "
        "event AS (INSERT INTO job_events (job_id, at, from_state, to_state, detail, actor) "
        "SELECT id, %(now)s::timestamptz, %(source)s::text, %(target)s::text, %(detail)s::text, "
        "%(actor)s::text FROM moved)"
    )
    if task_names is not None:
        task_sets = _assignments(task_names, "t_")
        sql += (
            f", task AS (UPDATE remote_tasks SET updated_at = %(now)s{', ' + task_sets if task_sets else ''} "
            "WHERE id = %(task_row)s AND EXISTS (SELECT 1 FROM moved))"
        )
    return sql + " SELECT * FROM moved"


def _utc(row: dict[str, Any], table: str) -> dict[str, Any]:
    # As UTCDateTime hands them back on every database: aware, in UTC.
    for name in _TIMES[table]:
        value = row.get(name)
        if value is not None and value.tzinfo is not UTC:
            row[name] = value.astimezone(UTC)
    return row


def loaded(model: type[_Model], values: Mapping[str, Any]) -> _Model:
    """An instance of ``model`` holding ``values`` as loaded state, as the ORM's own loading builds it.

    The constructor would go through attribute instrumentation for each of the ~30 columns (a
    tenth of a millisecond per row); these objects are read, never added to a session.
    """
    instance = manager_of_class(model).new_instance()
    instance.__dict__.update(values)
    return instance


def job_of(row: dict[str, Any]) -> Job:
    """A detached ``Job`` from a row of its columns (other keys are dropped)."""
    _utc(row, "jobs")
    return loaded(Job, {name: row[name] for name in _JOB_COLUMNS})


def task_of(row: dict[str, Any]) -> RemoteTask:
    """A detached ``RemoteTask`` from a row of its columns."""
    return loaded(RemoteTask, _utc(row, "remote_tasks"))


class PgFastPath:
    """The worker's store calls on PostgreSQL, one statement each (see the module's docstring).

    Args:
        engine: The store's engine; its pool lends the connections.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @contextlib.contextmanager
    def _cursor(self) -> Iterator[psycopg.Cursor[dict[str, Any]]]:
        fairy = self.engine.raw_connection()  # the pool's checkout, with its liveness check
        try:
            connection = fairy.driver_connection
            assert isinstance(connection, psycopg.Connection)
            connection.autocommit = True
            with connection.cursor(row_factory=dict_row) as cursor:
                yield cursor
        except psycopg.Error as error:
            if self.engine.dialect.is_disconnect(error, fairy, None):  # type: ignore[arg-type]
                fairy.invalidate(error)  # a fresh connection next time, as SQLAlchemy would
            raise sa_exc.DBAPIError.instance(
                "", None, error, psycopg.Error, dialect=self.engine.dialect
            ) from error
        finally:
            driver = fairy.driver_connection if fairy.dbapi_connection is not None else None
            if driver is not None:
                try:
                    driver.autocommit = False  # as the pool lent it
                except psycopg.Error as error:
                    fairy.invalidate(error)
            fairy.close()

    def claim(self, params: dict[str, Any]) -> Job | None:
        """The conditional claim; the job as claimed, or ``None``."""
        with self._cursor() as cursor:
            row = cursor.execute(_CLAIM, params).fetchone()
        return None if row is None else job_of(row)

    def claim_with_task(self, params: dict[str, Any]) -> tuple[Job, RemoteTask | None] | None:
        """The claim, and the current attempt's single task row (``None`` if it has none)."""
        with self._cursor() as cursor:
            row = cursor.execute(_CLAIM_WITH_TASK, params).fetchone()
        if row is None:
            return None
        task = None
        if row["rt_id"] is not None:
            task = task_of({name: row[f"rt_{name}"] for name in _TASK_COLUMNS})
        return job_of(row), task

    def get_job(self, job_id: str) -> Job | None:
        """The job's row, or ``None``."""
        with self._cursor() as cursor:
            row = cursor.execute(_GET_JOB, {"job_id": job_id}).fetchone()
        return None if row is None else job_of(row)

    def renew(self, params: dict[str, Any]) -> bool:
        """The lease renewal; True if the lease was ``owner``'s."""
        with self._cursor() as cursor:
            return cursor.execute(_RENEW, params).rowcount == 1

    def update_job(
        self,
        job_id: str,
        owner: str,
        now: datetime,
        fields: Mapping[str, Any],
        task_update: tuple[int, Mapping[str, Any]] | None = None,
    ) -> bool:
        """Change fields of a live job under ``owner``'s lease (and a task row with it); True if it did."""
        params = {"job_id": job_id, "owner": owner, "now": now, **_bind("jobs", fields, "v_")}
        task_names = None
        if task_update is not None:
            row_id, task_fields = task_update
            task_names = tuple(task_fields)
            params.update(task_row=row_id, **_bind("remote_tasks", task_fields, "t_"))
        with self._cursor() as cursor:
            result = cursor.execute(_update_job_sql(tuple(fields), task_names), params)
            return (result.fetchone() is not None) if task_names is not None else result.rowcount == 1

    def move(
        self,
        *,
        job_id: str,
        owner: str | None,
        source: str,
        target: str,
        now: datetime,
        detail: str | None,
        fields: Mapping[str, Any],
        task_update: tuple[int, Mapping[str, Any]] | None,
        fetch: bool,
    ) -> dict[str, Any] | None:
        """The move as one statement; its RETURNING row (``entered_at``, and the job if ``fetch``)."""
        params: dict[str, Any] = {
            "job_id": job_id,
            "owner": owner,
            "actor": owner,
            "source": source,
            "target": target,
            "now": now,
            "detail": detail,
            **_bind("jobs", fields, "v_"),
        }
        task_names = None
        if task_update is not None:
            row_id, task_fields = task_update
            task_names = tuple(task_fields)
            params.update(task_row=row_id, **_bind("remote_tasks", task_fields, "t_"))
        sql = _move_sql(tuple(fields), task_names, owner is not None, fetch)
        with self._cursor() as cursor:
            return cursor.execute(sql, params).fetchone()

    def single_task(self, job_id: str, attempt: int) -> RemoteTask | None:
        """The single remote task row of one attempt, or ``None``."""
        with self._cursor() as cursor:
            row = cursor.execute(_SINGLE_TASK, {"job_id": job_id, "attempt": attempt}).fetchone()
        return None if row is None else task_of(row)

    def create_task(self, params: dict[str, Any], *, unless_any: bool = False) -> RemoteTask | None:
        """Insert a remote task row if ``owner`` holds the job's lease; the row, or ``None``.

        ``unless_any``: a row that conflicts (the attempt's row exists) is not an error: ``None``.
        """
        bound = dict(params)
        if bound.get("subproblem") is not None:
            bound["subproblem"] = Jsonb(bound["subproblem"])
        sql = _CREATE_TASK_UNLESS_ANY if unless_any else _CREATE_TASK_RETURNING
        with self._cursor() as cursor:
            row = cursor.execute(sql, bound).fetchone()
        return None if row is None else task_of(row)

    def update_task(self, task_row: int, now: datetime, fields: Mapping[str, Any]) -> None:
        """Change fields of a remote task row."""
        params = {"task_row": task_row, "now": now, **_bind("remote_tasks", fields, "t_")}
        with self._cursor() as cursor:
            cursor.execute(_update_task_sql(tuple(fields)), params)
