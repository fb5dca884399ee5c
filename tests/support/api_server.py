"""The real API behind a real uvicorn server on a loopback port, in a thread of the test process."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn
from fastapi import FastAPI

from tests.support.processes import free_port


@contextlib.contextmanager
def running_api(app: FastAPI, **options: Any) -> Iterator[tuple[str, int]]:
    """Serve ``app`` with uvicorn (``options`` are ``uvicorn.Config``'s) until the block ends.

    Yields:
        The host and port it listens on.
    """
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **options)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="test-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield "127.0.0.1", port
    finally:
        server.should_exit = True
        thread.join(timeout=30)
