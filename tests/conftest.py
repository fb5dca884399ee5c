"""Shared fixtures: settings on temporary folders, real PostgreSQL and Redis, real processes.

With ``CI=true`` the PostgreSQL and Redis fixtures fail when the servers are missing, and any
skipped test fails the run: in CI every test must really run. Off CI they skip with one line.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from pydantic import SecretStr

from qhybrid.core.config import Settings
from tests.support.cloud import CloudServer, start_cloud
from tests.support.servers import FAKE_AWS_ENV, MotoServer, start_moto

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
POSTGRES_ADMIN_URL = os.environ.get(
    "QHYBRID_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("QHYBRID_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

# A developer's own QHYBRID_* settings must not leak into tests (a production Redis, say).
for _name in [
    n for n in os.environ if n.startswith(("QHYBRID_", "QCLOUD_")) and not n.startswith("QHYBRID_TEST_")
]:
    del os.environ[_name]


def _unavailable(what: str, exc: Exception) -> None:
    message = f"{what} unavailable: {type(exc).__name__}: {exc}"
    if IN_CI:
        pytest.fail(f"{message} (CI=true requires it)", pytrace=False)
    pytest.skip(message)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI a skipped test is a failed test: nothing may silently not run."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter is not None else 0
    if IN_CI and skipped and exitstatus == 0:
        if reporter is not None:
            reporter.write_line(f"CI=true: {skipped} test(s) skipped; every test must run in CI", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# ----------------------------------------------------------------------------- settings


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """An empty trusted-zone data folder."""
    path = tmp_path / "qhybrid"
    path.mkdir()
    return path


@pytest.fixture
def settings(data_dir: Path) -> Settings:
    """Embedded-default settings (SQLite + SqliteHuey) on a temporary folder, fast timings."""
    return Settings(
        data_dir=data_dir,
        poll_initial_seconds=0.2,
        poll_max_seconds=1.0,
        retry_initial_seconds=0.1,
        retry_max_seconds=0.5,
        reconcile_grace_seconds=1.0,
        reconcile_interval_seconds=0.5,
    )


# -------------------------------------------------------------------- real servers


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The admin URL of the machine's PostgreSQL (fails in CI, skips elsewhere, if absent)."""
    try:
        with psycopg.connect(POSTGRES_ADMIN_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        _unavailable(f"PostgreSQL at {POSTGRES_ADMIN_URL}", exc)
    return POSTGRES_ADMIN_URL


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    name = f"qhybrid_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = postgres_server.rsplit("/", 1)[0]
    yield f"{base.replace('postgresql://', 'postgresql+psycopg://', 1)}/{name}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def redis_server() -> str:
    """The URL of the machine's Redis (fails in CI, skips elsewhere, if absent)."""
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        _unavailable(f"Redis at {REDIS_URL}", exc)
    return REDIS_URL


@pytest.fixture
def queue_name(redis_server: str) -> Iterator[str]:
    """A Huey queue name no other test uses; its Redis keys are deleted afterwards."""
    name = f"qhybrid-test-{uuid.uuid4().hex[:12]}"
    yield name
    client = redis.Redis.from_url(redis_server)
    keys = list(client.scan_iter(match=f"huey.*{name}*"))
    if keys:
        client.delete(*keys)


@pytest.fixture(scope="session")
def sqs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """A real local SQS endpoint (moto's server mode as its own process), started for the session.

    The process environment gets fake AWS credentials, so boto3 (here and in child processes)
    signs with them and never finds a developer's real ones.
    """
    saved = {name: os.environ.get(name) for name in FAKE_AWS_ENV}
    os.environ.update(FAKE_AWS_ENV)
    server = start_moto(tmp_path_factory.mktemp("moto"))
    yield server
    server.stop()
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture
def sqs_queue_url(sqs_server: MotoServer) -> str:
    """``QHYBRID_QUEUE_URL`` of a fresh SQS queue on the local endpoint (created on first use)."""
    return sqs_server.queue_url()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, data_dir: Path) -> str:
    """Each store test runs on the embedded SQLite file and on a real PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{data_dir / 'qhybrid.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


# ------------------------------------------------------------------ real processes


@pytest.fixture(scope="session")
def cloud_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudServer]:
    """One emulated cloud (HTTPS, self-signed certificate) for the session, fast delays."""
    server = start_cloud(
        tmp_path_factory.mktemp("cloud"), queue_delay=0.3, run_delay=0.3, token=f"test-{uuid.uuid4().hex}"
    )
    yield server
    server.stop()


@pytest.fixture
def cloud_settings(settings: Settings, cloud_process: CloudServer) -> Settings:
    """Embedded-default settings pointed at the session's emulated cloud, its certificate pinned."""
    return settings.model_copy(
        update={
            "cloud_url": cloud_process.base_url,
            "cloud_token": SecretStr(cloud_process.token),
            "cloud_ca_file": cloud_process.ca_file,
        }
    )
