"""Start the emulated cloud as a real process and talk to it, for the cloud and backend tests."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from typing import Any

import httpx

from tests.support.cloud import TOKEN, TOKENS, CloudServer, start_cloud, tls_context, wait_healthy

X_ON_BIT0 = 'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[3] q;\nbit[3] c;\nx q[0];\nc = measure q;\n'
BELL = (
    'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[2] q;\nbit[2] c;\n'
    "h q[0];\ncx q[0], q[1];\nc = measure q;\n"
)

#: The same programs in the canonical form the trusted zone emits: the only form the egress
#: gateway lets out (tests that reach the cloud through ``EgressClient`` must use these).
X_ON_BIT0_CANONICAL = (
    'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[3] q;\nbit[3] c;\nx q[0];\n'
    "c[0] = measure q[0];\nc[1] = measure q[1];\nc[2] = measure q[2];\n"
)
BELL_CANONICAL = (
    'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[2] q;\nbit[2] c;\n'
    "h q[0];\ncx q[0], q[1];\nc[0] = measure q[0];\nc[1] = measure q[1];\n"
)


def gateway_token() -> str:
    """A client token minted by the tests' gateway minter: the gateway takes no other."""
    return TOKENS.mint()


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


__all__ = [
    "BELL",
    "BELL_CANONICAL",
    "TOKEN",
    "X_ON_BIT0",
    "X_ON_BIT0_CANONICAL",
    "CloudServer",
    "gateway_token",
    "new_token",
    "start_cloud",
    "submit_body",
    "tls_context",
    "wait_for_state",
    "wait_healthy",
]
