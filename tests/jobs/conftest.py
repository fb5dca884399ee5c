from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from qhybrid.jobs.database import Database
from qhybrid.jobs.store import JobStore
from tests.support.journey import Services


@pytest.fixture
def consumer_for() -> Iterator[Any]:
    """Starts a real Huey consumer (threads) for a Services; stopped at the end."""
    consumers: list[Any] = []

    def start(services: Services) -> None:
        consumer = services.queue.consumer(workers=2)
        consumer.start()
        consumers.append(consumer)

    yield start
    for consumer in consumers:
        consumer.stop(graceful=True)


@pytest.fixture
def store(database_url: str) -> Iterator[JobStore]:
    """A migrated store on the test's database (SQLite, or PostgreSQL where parametrised)."""
    db = Database(database_url)
    db.migrate()
    yield JobStore(db)
    db.dispose()
