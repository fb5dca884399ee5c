from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import SecretStr

from qhybrid.core.config import Settings
from qhybrid.jobs.worker import Worker, unshared_secrets
from qhybrid.quantum.circuit import QISKIT_SERIAL_VARIABLE


def test_a_worker_transpiles_on_its_job_threads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # One job per worker thread already: Qiskit's Rust passes must not hand each transpile to a
    # thread pool of their own (docs/benchmarks.md: more CPU per job for the same programs).
    # Set, then removed: monkeypatch restores the original environment, whatever the worker sets.
    monkeypatch.setenv(QISKIT_SERIAL_VARIABLE, "unset")
    monkeypatch.delenv(QISKIT_SERIAL_VARIABLE)
    worker = Worker(Settings(data_dir=tmp_path))
    try:
        assert os.environ.get(QISKIT_SERIAL_VARIABLE) == "TRUE"
    finally:
        worker.backends.close()
        worker.db.dispose()


def test_a_shared_database_warns_of_keys_read_from_this_hosts_files(tmp_path: Path) -> None:
    # The embedded default is one host: its key files are the deployment's.
    assert unshared_secrets(Settings(data_dir=tmp_path)) == []
    shared = Settings(data_dir=tmp_path, database_url="postgresql+psycopg://db.internal/qhybrid")
    warnings = unshared_secrets(shared)
    named = [w.split(" ", 1)[0] for w in warnings]
    assert named == ["QHYBRID_KEY_ENCRYPTION_KEY", "QHYBRID_EGRESS_TOKEN_KEY"]
    assert str(tmp_path / "gateway" / "token-key") in warnings[1]
    key = SecretStr("a" * 43 + "=")
    both = shared.model_copy(update={"key_encryption_key": key, "egress_token_key": key})
    assert unshared_secrets(both) == []
