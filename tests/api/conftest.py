from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from qhybrid.api.main import create_app
from qhybrid.core.config import Settings


@pytest.fixture(autouse=True)
def _app_startup_collects_only_this_test() -> Iterator[None]:
    """Freeze the test process's heap while an API test runs, so the app's start-up collects only
    what this test made.

    The lifespan ends its start-up with a full ``gc.collect()`` (then ``gc.freeze()``): right for a
    server whose heap is its own, but here the heap is the whole test run's (qiskit, scipy, every
    module imported so far) and walking it cost about 0.3-0.5 s per application started, most of
    an API test's time. The app itself is unchanged; its shutdown (``gc.unfreeze()``) and this
    fixture's end hand everything back to the collector.
    """
    gc.freeze()
    yield
    gc.unfreeze()


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """The real application on the embedded default (SQLite file + SqliteHuey file)."""
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def job_count(client: TestClient) -> int:
    count: int = client.app.state.services.store.count_jobs()  # type: ignore[attr-defined]
    return count


def valid_request(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "assets": [
            {"name": "AAPL", "expected_return": 0.0012},
            {"name": "MSFT", "expected_return": 0.0009},
            {"name": "KO", "expected_return": 0.0004},
        ],
        "covariance": [[0.00031, 0.00012, 0.00005], [0.00012, 0.00024, 0.00004], [0.00005, 0.00004, 0.0001]],
        "risk_aversion": 0.5,
        "budget": 1,
        "backend": "local",
        "shots": 2048,
    }
    body.update(overrides)
    return body
