from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _restore_umask() -> Iterator[None]:
    """Commands run in-process set the umask to 077 (as `qhybrid` does); the rest of the run keeps its own."""
    previous = os.umask(0o022)
    os.umask(previous)
    yield
    os.umask(previous)
