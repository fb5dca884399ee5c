"""At rest: a 0700 data dir, 0600 databases (with their WAL), queue, audit, keys; secrets out of repr."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from pydantic import SecretStr

from qhybrid.core.config import Settings
from qhybrid.jobs.database import Database
from qhybrid.jobs.queue import make_queue


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_data_dir_and_everything_in_it_are_private(tmp_path: Path) -> None:
    previous = os.umask(0o022)  # a permissive umask, as a shell usually has
    try:
        data_dir = tmp_path / "qhybrid"
        data_dir.mkdir(mode=0o755)
        settings = Settings(data_dir=data_dir)
        settings.ensure_dirs()
        db = Database(settings.resolved_database_url)
        db.migrate()  # writes: the WAL and the shared-memory file appear
        queue = make_queue(settings)
        queue.kick("job-1")
        from qhybrid.gateway.audit import AuditLog
        from qhybrid.jobs.tenants import pepper_of

        pepper_of(settings)
        audit = AuditLog(settings.audit_path)
        audit.append(destination="127.0.0.1:1", method="GET", path="/", body=b"")
        db_file = data_dir / "qhybrid.db"
        expected = {
            data_dir: 0o700,
            db_file: 0o600,
            db_file.with_name("qhybrid.db-wal"): 0o600,
            db_file.with_name("qhybrid.db-shm"): 0o600,
            settings.queue_path: 0o600,
            settings.audit_path: 0o600,
            settings.audit_path.parent: 0o700,
            settings.api_key_pepper_path: 0o600,
        }
        assert {path: _mode(path) for path in expected} == expected
        db.dispose()
    finally:
        os.umask(previous)


def test_an_existing_database_is_tightened(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    path.write_bytes(b"")
    os.chmod(path, 0o644)
    Database(f"sqlite:///{path}").dispose()
    assert _mode(path) == 0o600


def test_repr_shows_no_secret() -> None:
    settings = Settings(
        api_keys=[SecretStr("desk-7:k3y-0f-d3sk-7"), SecretStr("bare-k3y")],
        api_key_pepper=SecretStr("cGVwcGVy"),
        cloud_token=SecretStr("cl0ud-t0ken"),
        database_url="postgresql+psycopg://qhybrid:db-pa55word@db-host:5432/qhybrid",
        redis_url="redis://:r3dis-pa55@redis-host:6379/0",
        ibm_token=SecretStr("ibm-t0ken"),
        key_encryption_key=SecretStr("a2VrLXNlY3JldA=="),
    )
    for text in (repr(settings), str(settings)):
        for secret in (
            "k3y-0f-d3sk-7",
            "bare-k3y",
            "cGVwcGVy",
            "cl0ud-t0ken",
            "db-pa55word",
            "r3dis-pa55",
            "ibm-t0ken",
            "a2VrLXNlY3JldA",
        ):
            assert secret not in text
        assert "postgresql+psycopg://qhybrid:***@db-host:5432/qhybrid" in text  # still says where
    assert settings.tenant_api_keys() == [("desk-7", "k3y-0f-d3sk-7"), ("default", "bare-k3y")]


def test_the_default_cloud_token_is_refused_off_loopback() -> None:
    for url in ("https://127.0.0.1:8780", "https://localhost:8780", "https://[::1]:8780"):
        assert Settings(cloud_url=url).cloud_token.get_secret_value() == "local-dev-token"
    with pytest.raises(
        ValueError, match="default development token is accepted only for a cloud on loopback"
    ):
        Settings(cloud_url="https://quantum.example.com")
    assert Settings(cloud_url="https://quantum.example.com", cloud_token=SecretStr("real")).cloud_url


def test_the_registry_refuses_the_default_token_off_loopback_too(tmp_path: Path) -> None:
    from qhybrid.backends.base import PermanentBackendError
    from qhybrid.backends.registry import cloud_token

    # A copy skips validation; the place that sends the token checks again.
    copied = Settings(data_dir=tmp_path).model_copy(update={"cloud_url": "https://quantum.example.com"})
    with pytest.raises(PermanentBackendError, match="set QHYBRID_CLOUD_TOKEN"):
        cloud_token(copied)
