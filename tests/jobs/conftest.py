from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

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
