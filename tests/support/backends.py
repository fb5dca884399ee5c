"""Test doubles around a real provider adapter: each changes one call and forwards the others."""

from __future__ import annotations

from typing import Any

from qhybrid.backends.base import QuantumBackend


class Crash(BaseException):
    """Stands for the worker process dying: nothing in the journey catches it."""


class Forwarding(QuantumBackend):
    """The real adapter, call for call; subclasses override the call they break."""

    def __init__(self, real: QuantumBackend) -> None:
        self.real = real
        self.name = real.name

    def target(self) -> Any:
        return self.real.target()

    def submit(self, program: str, shots: int, client_token: str) -> str:
        return self.real.submit(program, shots, client_token)

    def find_task(self, client_token: str) -> str | None:
        return self.real.find_task(client_token)

    def status(self, task_id: str) -> Any:
        return self.real.status(task_id)

    def result(self, task_id: str) -> Any:
        return self.real.result(task_id)

    def cancel(self, task_id: str) -> None:
        self.real.cancel(task_id)
