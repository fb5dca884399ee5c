"""Database wiring: engines for SQLite (embedded default) and PostgreSQL, sessions, migrations."""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, exc, make_url, text
from sqlalchemy.orm import Session, sessionmaker

from qhybrid.core.files import DIR_MODE, FILE_MODE, private_file

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Any constant works; it only has to be the same for every qhybrid process on one database.
_PG_MIGRATION_LOCK = 0x71687962


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event decide how each transaction starts (see below).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # A deferred transaction that reads and then writes cannot wait for the write lock in WAL
        # mode: it fails at once with SQLITE_BUSY. Writers therefore take the lock up front; readers
        # stay deferred so they never queue behind a writer.
        immediate = connection.get_execution_options().get("sqlite_immediate", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


#: A pooled PostgreSQL connection idle longer than this is pinged (a round trip) before use.
IDLE_PING_SECONDS = 10.0


def ping_connection(dbapi_connection: Any) -> None:
    """One ``SELECT 1`` round trip on a DBAPI connection; raises if the server is gone."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("SELECT 1")
    finally:
        cursor.close()


def _server_hung_up(dbapi_connection: Any) -> bool:
    # An idle connection has nothing to read: the server only writes to it when asked, except to
    # say goodbye (a FATAL "terminating connection" message, then EOF) when it shuts down, restarts
    # or kills the backend. So a readable socket is a dead connection, told without a round trip.
    # (The pool's connections never LISTEN, so no notification can make one readable.)
    if dbapi_connection.closed or dbapi_connection.broken:
        return True
    readable, _, _ = select.select([dbapi_connection.pgconn.socket], [], [], 0)
    return bool(readable)


def _configure_postgresql_liveness(engine: Engine, idle_ping_seconds: float) -> None:
    """Check a pooled connection's liveness on checkout, cheaply.

    ``pool_pre_ping`` costs a round trip on every checkout, i.e. on every transaction of every
    job step. Instead: a connection whose server hung up (restart, kill, terminate) has a readable
    socket, which a zero-timeout ``select`` sees for free; only a connection idle longer than
    ``idle_ping_seconds`` (where a silent network drop could hide) is pinged. A dead connection is
    discarded and the pool hands out a fresh one, as with ``pool_pre_ping``.
    """

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        if _server_hung_up(dbapi_connection):
            raise exc.DisconnectionError("the server closed the connection")
        idle_since = record.info.get("idle_since")
        if idle_since is not None and time.monotonic() - idle_since > idle_ping_seconds:
            try:
                ping_connection(dbapi_connection)
            except Exception as error:
                raise exc.DisconnectionError(f"ping failed: {type(error).__name__}") from error
            # The ping left a transaction open in a non-autocommit connection: close it.
            dbapi_connection.rollback()


def create_db_engine(url: str, *, idle_ping_seconds: float = IDLE_PING_SECONDS) -> Engine:
    """An engine for ``url`` with the settings qhybrid relies on.

    SQLite files get WAL mode, a 30 s busy timeout and immediate write transactions; the file is
    created ``0600`` (its parent folder ``0700``) before SQLite opens it. PostgreSQL connections
    are checked on checkout (a hung-up socket without a round trip, a ping after
    ``idle_ping_seconds`` idle), so a restarted server is survived.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            # Names and amounts are in there in clear: 0600 before SQLite first opens it (its
            # -wal and -shm files take the database file's mode).
            private_file(Path(parsed.database))
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        _configure_sqlite(engine)
        return engine
    # The pool keeps about as many connections as threads that use one at once (FastAPI's thread pool
    # for the API's reads, a worker's threads): an overflow connection is closed when returned,
    # so an undersized pool opens a fresh connection per request under load.
    engine = create_engine(url, pool_size=10, max_overflow=20)
    _configure_postgresql_liveness(engine, idle_ping_seconds)
    return engine


class Database:
    """An engine with two session factories: one for reads, one for writes.

    Args:
        url: SQLAlchemy database URL.
        idle_ping_seconds: PostgreSQL: a pooled connection idle longer than this is pinged
            before use (see ``create_db_engine``).
    """

    def __init__(self, url: str, *, idle_ping_seconds: float = IDLE_PING_SECONDS) -> None:
        self.url = url
        self.engine = create_db_engine(url, idle_ping_seconds=idle_ping_seconds)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        write_bind = self.engine.execution_options(sqlite_immediate=True) if self.is_sqlite else self.engine
        self._read = sessionmaker(bind=self.engine, expire_on_commit=False)
        self._write = sessionmaker(bind=write_bind, expire_on_commit=False)
        self._write_bind = write_bind
        # One statement needs no transaction of its own: in autocommit it is atomic by itself and
        # costs one round trip instead of three (BEGIN, the statement, COMMIT). SQLite's
        # transactions are local calls, so it keeps them (and its immediate write lock).
        self._single = (
            write_bind if self.is_sqlite else self.engine.execution_options(isolation_level="AUTOCOMMIT")
        )

    @contextlib.contextmanager
    def read(self) -> Iterator[Session]:
        """A session for reading; closed at the end, its objects stay readable (detached)."""
        with self._read() as session:
            yield session

    @contextlib.contextmanager
    def write(self) -> Iterator[Session]:
        """A session whose transaction commits at the end, or rolls back on error."""
        with self._write() as session, session.begin():
            yield session

    @contextlib.contextmanager
    def begin(self) -> Iterator[Connection]:
        """A Core connection in a write transaction: commits at the end, or rolls back on error.

        The hot path's statements go through Core rather than an ORM session: no unit of work,
        no identity map, and SQLAlchemy's compiled-statement cache.
        """
        with self._write_bind.begin() as connection:
            yield connection

    @contextlib.contextmanager
    def single(self) -> Iterator[Connection]:
        """A Core connection for one statement (a read, or one conditional write).

        Autocommit on PostgreSQL: use it for exactly one statement, whose atomicity is all there
        is. On SQLite, an immediate transaction that commits at the end.
        """
        with self._single.begin() as connection:
            yield connection

    @contextlib.contextmanager
    def reading(self) -> Iterator[Connection]:
        """A Core connection for reads (SQLite: a deferred transaction, never the write lock)."""
        with self.engine.connect() as connection:
            yield connection

    def ping(self) -> None:
        """Run ``SELECT 1``; raises if the database cannot be reached."""
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    def migrate(self) -> None:
        """Bring the schema to the newest migration; safe when several processes start at once."""
        with self._migration_lock(), self.engine.connect() as connection:
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS_DIR))
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
            connection.commit()

    @contextlib.contextmanager
    def _migration_lock(self) -> Iterator[None]:
        if self.is_sqlite:
            database = self.engine.url.database
            if not database or database == ":memory:":
                yield
                return
            lock_path = Path(database).with_suffix(".migrate.lock")
            descriptor = os.open(lock_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
            with os.fdopen(descriptor, "a") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)
            return
        with self.engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _PG_MIGRATION_LOCK})
                connection.commit()

    def dispose(self) -> None:
        """Close pooled connections."""
        self.engine.dispose()
