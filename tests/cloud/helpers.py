"""Start the emulated cloud as a real process and talk to it, for the cloud and backend tests."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support.processes import Process, free_port, start_process

TOKEN = "test-cloud-token-0123456789"

X_ON_BIT0 = 'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[3] q;\nbit[3] c;\nx q[0];\nc = measure q;\n'
BELL = (
    'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[2] q;\nbit[2] c;\n'
    "h q[0];\ncx q[0], q[1];\nc = measure q;\n"
)


@dataclass
class CloudServer:
    """A running cloud process and how to reach it."""

    process: Process
    base_url: str
    port: int
    data_dir: Path
    token: str

    def client(self, token: str | None = None) -> httpx.Client:
        """An HTTP client with the bearer token (``token`` overrides the server's)."""
        return httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {token or self.token}"},
            timeout=10.0,
            trust_env=False,
        )


def start_cloud(
    work_dir: Path,
    *,
    name: str = "cloud",
    port: int | None = None,
    data_dir: Path | None = None,
    queue_delay: float = 0.3,
    run_delay: float = 0.5,
    token: str = TOKEN,
) -> CloudServer:
    """Start ``python -m qhybrid.cloud`` and wait until ``/healthz`` answers."""
    port = port or free_port()
    data_dir = data_dir or work_dir / "data"
    args = [
        "-m", "qhybrid.cloud",
        "--port", str(port),
        "--data-dir", str(data_dir),
        "--queue-delay", str(queue_delay),
        "--run-delay", str(run_delay),
        "--token", token,
    ]  # fmt: skip
    base_url = f"http://127.0.0.1:{port}"
    process = start_process(
        name, args, log_dir=work_dir / "logs", cwd=work_dir, health_url=f"{base_url}/healthz", timeout=60.0
    )
    return CloudServer(process=process, base_url=base_url, port=port, data_dir=data_dir, token=token)


def new_token(prefix: str = "tok") -> str:
    """A fresh, valid client token."""
    return f"{prefix}-{uuid.uuid4().hex}"


def submit_body(program: str, *, shots: int = 100, client_token: str | None = None) -> dict[str, Any]:
    """The JSON body of ``POST /v1/tasks`` for the default device."""
    return {
        "device": "emulator",
        "program": program,
        "shots": shots,
        "client_token": client_token or new_token(),
    }


def wait_for_state(
    client: httpx.Client, task_id: str, states: Iterable[str], *, timeout: float = 20.0
) -> tuple[dict[str, Any], list[str]]:
    """Poll a task until it reaches one of ``states``.

    Returns:
        The last task view and every distinct state seen on the way, in order.
    """
    wanted = set(states)
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(f"/v1/tasks/{task_id}")
        assert response.status_code == 200, response.text
        task: dict[str, Any] = response.json()
        if not seen or seen[-1] != task["state"]:
            seen.append(task["state"])
        if task["state"] in wanted:
            return task, seen
        if time.monotonic() > deadline:
            raise AssertionError(f"task {task_id} still {task['state']} after {timeout}s (seen {seen})")
        time.sleep(0.02)
