"""Throwaway servers a test starts, kills and restarts itself: a local SQS endpoint (moto's server
mode), a PostgreSQL cluster in a temporary folder and a Redis with an append-only file.

Each runs as a real process on a free loopback port, in its own process group, so ``kill9`` takes
the whole server down at once (PostgreSQL's backends included), as a crashed machine would.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import redis

from tests.support.processes import free_port

#: Credentials for the local SQS endpoint (moto accepts any); never real ones.
FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "qhybrid-test",
    "AWS_SECRET_ACCESS_KEY": "qhybrid-test",
    "AWS_SESSION_TOKEN": "qhybrid-test",
}
SQS_REGION = "us-east-1"


@dataclass
class ServerProcess:
    """A server started from a fixed argv, which can be SIGKILLed and started again."""

    name: str
    argv: list[str]
    log_path: Path
    user: str | None = None
    popen: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> None:
        """Start (or start again) the process in a new session."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                user=self.user,
                group=self.user,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self.starts += 1

    def alive(self) -> bool:
        """True while the process runs."""
        return self.popen is not None and self.popen.poll() is None

    def kill9(self) -> None:
        """SIGKILL the process and everything in its group."""
        if self.popen is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM the group, SIGKILL if it lingers."""
        if not self.alive():
            return
        assert self.popen is not None
        try:
            os.killpg(self.popen.pid, signal.SIGTERM)
            self.popen.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill9()
        except ProcessLookupError:
            pass

    def log(self) -> str:
        """What the server wrote so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def _wait(check: object, what: str, process: ServerProcess, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if not process.alive():
            raise RuntimeError(f"{what} exited:\n{process.log()[-4000:]}")
        try:
            if callable(check) and check():
                return
        except Exception as exc:  # not up yet
            last = exc
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready after {timeout}s ({last}):\n{process.log()[-4000:]}")


# --------------------------------------------------------------------------------- SQS


@dataclass
class MotoServer:
    """moto's server mode: a real HTTP SQS endpoint on loopback."""

    process: ServerProcess
    endpoint: str

    def queue_url(self, name: str | None = None, *, wait: int = 1) -> str:
        """A ``QHYBRID_QUEUE_URL`` for a fresh queue on this endpoint (created on first use).

        ``wait`` is short so that tests' consumers stop soon after them.
        """
        name = name or f"qhybrid-test-{uuid.uuid4().hex[:12]}"
        return f"sqs://{name}?region={SQS_REGION}&endpoint={self.endpoint}&create=true&wait={wait}"

    def stop(self) -> None:
        """Stop the server."""
        self.process.stop()


def start_moto(work_dir: Path) -> MotoServer:
    """Start ``python -m moto.server`` on a free port and wait until it answers."""
    port = free_port()
    process = ServerProcess(
        "moto",
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        work_dir / "moto.log",
    )
    process.start()
    endpoint = f"http://127.0.0.1:{port}"
    _wait(lambda: httpx.get(f"{endpoint}/moto-api/", timeout=2).status_code == 200, "moto", process)
    return MotoServer(process, endpoint)


# --------------------------------------------------------------------------- PostgreSQL


def postgres_bin() -> Path:
    """The newest installed PostgreSQL's binaries (Debian keeps them off PATH)."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(Path(p).parts[-3]))
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("postgres")
    if found is None:
        raise RuntimeError("no PostgreSQL binaries (postgres, initdb) installed")
    return Path(found).parent


@dataclass
class PostgresCluster:
    """A PostgreSQL cluster of our own in a temporary folder, on a free port."""

    folder: Path
    port: int
    process: ServerProcess
    user: str | None
    databases: list[str] = field(default_factory=list)

    @property
    def admin_url(self) -> str:
        """libpq URL of the ``postgres`` database."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def create_database(self) -> str:
        """A new database; its SQLAlchemy URL."""
        name = f"qhybrid_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.databases.append(name)
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def ready(self) -> bool:
        """True when the server accepts connections."""
        with psycopg.connect(self.admin_url, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
        return True

    def start(self) -> None:
        """Start (or restart after a kill) and wait until it accepts connections."""
        self.process.start()
        _wait(self.ready, "postgres", self.process)

    def kill9(self) -> None:
        """SIGKILL the postmaster and every backend at once (a crash)."""
        self.process.kill9()

    def stop(self) -> None:
        """Stop the server and delete its folder."""
        self.process.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


def start_postgres() -> PostgresCluster:
    """initdb a throwaway cluster in a temporary folder and start it on a free loopback port.

    initdb refuses to run as root, so as root the cluster belongs to the ``postgres`` user. fsync is
    off: the tests kill the server process, not the machine, and a killed process loses nothing
    the kernel already has; every commit still writes its WAL before it returns.
    """
    bindir = postgres_bin()
    user = "postgres" if os.geteuid() == 0 else None
    folder = Path(tempfile.mkdtemp(prefix="qhybrid-pg-"))
    data = folder / "data"
    if user is not None:
        shutil.chown(folder, user, user)
    subprocess.run(
        [
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ],
        check=True,
        capture_output=True,
        user=user,
        group=user,
    )
    port = free_port()
    argv = [
        str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(folder),
        "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=200",
    ]  # fmt: skip
    cluster = PostgresCluster(
        folder, port, ServerProcess("postgres", argv, folder / "postgres.log", user), user
    )
    cluster.start()
    return cluster


# --------------------------------------------------------------------------------- Redis


@dataclass
class RedisServer:
    """A Redis of our own with an append-only file in a temporary folder."""

    folder: Path
    port: int
    process: ServerProcess

    @property
    def url(self) -> str:
        """Its ``redis://`` URL."""
        return f"redis://127.0.0.1:{self.port}/0"

    def ready(self) -> bool:
        """True when it answers PING (after loading its AOF)."""
        return bool(redis.Redis.from_url(self.url, socket_connect_timeout=2).ping())

    def start(self) -> None:
        """Start (or restart after a kill) and wait until it answers."""
        self.process.start()
        _wait(self.ready, "redis", self.process)

    def kill9(self) -> None:
        """SIGKILL it (a crash)."""
        self.process.kill9()

    def stop(self) -> None:
        """Stop it and delete its folder."""
        self.process.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


def start_redis() -> RedisServer:
    """Start ``redis-server`` with ``appendonly yes`` on a free loopback port."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed")
    folder = Path(tempfile.mkdtemp(prefix="qhybrid-redis-"))
    port = free_port()
    argv = [
        binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder),
        "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--daemonize", "no",
    ]  # fmt: skip
    server = RedisServer(folder, port, ServerProcess("redis", argv, folder / "redis.log"))
    server.start()
    return server
