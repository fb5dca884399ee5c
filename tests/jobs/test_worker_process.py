from __future__ import annotations

import os
from pathlib import Path

import pytest

from qhybrid.core.config import Settings
from qhybrid.jobs.worker import Worker
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
