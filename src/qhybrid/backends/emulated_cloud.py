"""Adapter for the emulated public quantum cloud (``qhybrid.cloud``), over the egress gateway.

Every call goes through :class:`~qhybrid.gateway.egress.EgressClient`, the trusted zone's only
way out, which checks it against the cloud's route table and adds the configured credential.
Failures are sorted for the retry logic: network trouble (including a connection dropped before or
in the middle of the answer), throttling (429) and server errors (5xx) are transient; any other
refusal (4xx) is permanent and carries the server's reason.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from typing import Any
from urllib.parse import quote

import httpx

from qhybrid.backends.base import (
    PermanentBackendError,
    QuantumBackend,
    TaskResult,
    TaskStatus,
    TransientBackendError,
    parse_retry_after,
)
from qhybrid.domain.device import DeviceTarget, Pricing
from qhybrid.domain.states import TaskState
from qhybrid.gateway.egress import EgressAuditError, EgressClient, EgressPolicyError

#: The only outcome ordering this adapter understands: character ``i`` is classical bit ``i``.
_BIT_ORDER = "bit0-first"

#: How many results carried by polls are kept for :meth:`EmulatedCloudBackend.result`. A result
#: is normally taken within the same step that polled it; the bound only matters when a caller
#: polls tasks to COMPLETED and never asks for their results.
_CARRIED_RESULTS = 256


def _detail(response: httpx.Response) -> str:
    """The server's reason for an error answer, as one line of text."""
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        return text[:500] if text else response.reason_phrase
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, str):
        return detail
    return json.dumps(detail if detail is not None else body)[:500]


class EmulatedCloudBackend(QuantumBackend):
    """The emulated cloud behind the backend contract.

    Args:
        name: The name requests use to select this backend.
        base_url: The cloud's base URL, e.g. ``https://127.0.0.1:8780``.
        device: Device name on the cloud.
        egress: The gateway client; ``base_url`` must be one of its destinations (which holds the
            cloud's route table and credential: the adapter never sees the token).
        pricing: The cloud's price list, if it charges.
    """

    def __init__(
        self,
        *,
        name: str,
        base_url: str,
        device: str,
        egress: EgressClient,
        pricing: Pricing | None = None,
    ) -> None:
        self.name = name
        self._pricing = pricing
        self._base_url = base_url.rstrip("/")
        self._device = device
        self._egress = egress
        self._target: DeviceTarget | None = None
        self._target_lock = threading.Lock()
        # Results that came with a COMPLETED poll (``?include=result``), by task id, oldest first;
        # worker threads share the adapter.
        self._carried: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._carried_lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"EmulatedCloudBackend(name={self.name!r}, base_url={self._base_url!r}, device={self._device!r})"
        )

    # --- transport -----------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        *,
        json_body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
    ) -> httpx.Response:
        """Send one request and sort failures into transient and permanent ones.

        The gateway checks every request against the cloud's route table; the job id for the
        audit log comes from :func:`qhybrid.gateway.context.current_job`, set by the worker.

        Returns:
            The response, when its status is below 400 or exactly 404 (callers decide about 404).

        Raises:
            TransientBackendError: Network failure, dropped connection, timeout, 429 or 5xx.
            PermanentBackendError: Any other 4xx, or a destination the egress policy refuses.
        """
        url = f"{self._base_url}{path}"
        what = f"{method} {path}"
        try:
            response = self._egress.request(
                method,
                url,
                json=json_body,
                params=params,
                headers={"Accept": "application/json"},
            )
        except EgressAuditError as exc:
            # Nothing was sent. A full disk or a permission slip can be repaired while the job
            # waits, so this is retried (within the journey's retry budget), loudly.
            raise TransientBackendError(f"cloud {what}: {exc}") from exc
        except EgressPolicyError as exc:
            # Allow-list, route table and payload contract, TLS policy: retrying the same request
            # cannot change any of them, and nothing was sent.
            raise PermanentBackendError(f"cloud {what}: {exc}") from exc
        except httpx.TimeoutException as exc:
            raise TransientBackendError(f"cloud {what} timed out: {exc!r}") from exc
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError, ConnectionError) as exc:
            # The connection died with no complete answer: the request may or may not have taken
            # effect, which only the idempotent retry (same client token) can settle.
            raise TransientBackendError(f"cloud {what}: connection dropped: {exc!r}") from exc
        except (httpx.HTTPError, OSError) as exc:
            raise TransientBackendError(f"cloud {what} failed: {exc!r}") from exc
        code = response.status_code
        if code == 429 or code >= 500:
            raise TransientBackendError(
                f"cloud {what} answered {code}: {_detail(response)}",
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
            )
        if code >= 400 and code != 404:
            raise PermanentBackendError(f"cloud {what} answered {code}: {_detail(response)}")
        return response

    def _json(self, response: httpx.Response, what: str) -> dict[str, Any]:
        if response.status_code == 404:
            raise PermanentBackendError(f"cloud {what} answered 404: {_detail(response)}")
        try:
            body = response.json()
        except ValueError as exc:
            # A success status with an unreadable body points at the path, not at our request.
            raise TransientBackendError(f"cloud {what} answered unreadable JSON") from exc
        if not isinstance(body, dict):
            raise TransientBackendError(f"cloud {what} answered {type(body).__name__}, not an object")
        return body

    @staticmethod
    def _task_path(task_id: str, suffix: str = "") -> str:
        return f"/v1/tasks/{quote(task_id, safe='')}{suffix}"

    # --- contract ------------------------------------------------------------------------------

    def target(self) -> DeviceTarget:
        """The device description, fetched once and then cached."""
        with self._target_lock:
            if self._target is None:
                path = f"/v1/devices/{quote(self._device, safe='')}"
                body = self._json(self._call("GET", path), f"GET {path}")
                try:
                    coupling = body.get("coupling_map")
                    self._target = DeviceTarget(
                        name=str(body["name"]),
                        num_qubits=int(body["num_qubits"]),
                        basis_gates=tuple(str(gate) for gate in body["basis_gates"]),
                        coupling_map=None
                        if coupling is None
                        else tuple((int(a), int(b)) for a, b in coupling),
                    )
                except (KeyError, TypeError, ValueError) as exc:
                    raise PermanentBackendError(f"cloud device description is malformed: {exc!r}") from exc
            return self._target

    def submit(self, program: str, shots: int, client_token: str) -> str:
        """Submit a program; resubmitting under the same client token returns the same task."""
        body = self._json(
            self._call(
                "POST",
                "/v1/tasks",
                json_body={
                    "device": self._device,
                    "program": program,
                    "shots": shots,
                    "client_token": client_token,
                },
            ),
            "POST /v1/tasks",
        )
        return self._task_id(body)

    def find_task(self, client_token: str) -> str | None:
        """The task created under ``client_token``, or ``None`` if the cloud knows none."""
        response = self._call("GET", "/v1/tasks", params={"client_token": client_token})
        if response.status_code == 404:
            return None
        return self._task_id(self._json(response, "GET /v1/tasks"))

    def status(self, task_id: str) -> TaskStatus:
        """The task's state as the cloud reports it.

        The poll asks for the result too (``?include=result``): once the task is COMPLETED the
        answer carries it, and it is kept for :meth:`result`, which then needs no request.
        """
        path = self._task_path(task_id)
        body = self._json(self._call("GET", path, params={"include": "result"}), f"GET {path}")
        provider_state = str(body.get("state"))
        try:
            state = TaskState(provider_state)
        except ValueError as exc:
            raise PermanentBackendError(f"cloud reported unknown task state {provider_state!r}") from exc
        carried = body.get("result")
        if state is TaskState.COMPLETED and isinstance(carried, dict) and carried.get("task_id") == task_id:
            self._keep_result(task_id, carried)
        position = body.get("queue_position")
        message = body.get("message")
        return TaskStatus(
            state=state,
            provider_state=provider_state,
            queue_position=position if isinstance(position, int) else None,
            message=message if isinstance(message, str) else None,
        )

    def _keep_result(self, task_id: str, body: dict[str, Any]) -> None:
        with self._carried_lock:
            self._carried[task_id] = body
            self._carried.move_to_end(task_id)
            while len(self._carried) > _CARRIED_RESULTS:
                self._carried.popitem(last=False)

    def result(self, task_id: str) -> TaskResult:
        """The counts of a COMPLETED task, bit 0 first.

        Taken from the poll that saw the task COMPLETED when it carried them (used once: a later
        call asks the cloud), otherwise fetched from the result route.
        """
        with self._carried_lock:
            body = self._carried.pop(task_id, None)
        if body is None:
            path = self._task_path(task_id, "/result")
            body = self._json(self._call("GET", path), f"GET {path}")
        return self._task_result(body)

    @staticmethod
    def _task_result(body: dict[str, Any]) -> TaskResult:
        order = body.get("bit_order")
        if order != _BIT_ORDER:
            raise PermanentBackendError(f"cloud result uses bit order {order!r}; expected {_BIT_ORDER!r}")
        try:
            counts = {str(outcome): int(count) for outcome, count in body["counts"].items()}
            shots = int(body["shots"])
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise PermanentBackendError(f"cloud result is malformed: {exc!r}") from exc
        metadata = body.get("metadata")
        return TaskResult(
            counts=counts,
            shots=shots,
            metadata=dict(metadata) if isinstance(metadata, dict) else {},
        )

    def cancel(self, task_id: str) -> None:
        """Ask the cloud to cancel; a finished task is left as it is."""
        path = self._task_path(task_id, "/cancel")
        self._json(self._call("POST", path), f"POST {path}")

    def link(self) -> dict[str, object]:
        """The latest TLS facts of the egress link to this provider (version, group, cipher)."""
        facts = self._egress.last_tls(self._base_url)
        if facts is None:
            return {"transport": "egress gateway", "tls": None}
        return {
            "transport": "egress gateway (pyOpenSSL)",
            "tls_version": facts.version,
            "tls_group": facts.group,
            "tls_cipher": facts.cipher,
            "post_quantum": facts.post_quantum,
        }

    def pricing(self) -> Pricing | None:
        """The price list configured for this provider (the emulated cloud is free by default)."""
        return self._pricing

    def close(self) -> None:
        """Drop pooled connections; the egress client reconnects if it is used again."""
        self._egress.close()

    @staticmethod
    def _task_id(body: dict[str, Any]) -> str:
        task_id = body.get("task_id")
        if not isinstance(task_id, str) or not task_id:
            raise PermanentBackendError("cloud answer carries no task_id")
        return task_id
