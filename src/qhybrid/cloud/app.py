"""The HTTP API of the emulated cloud (FastAPI).

Every request is first written verbatim to ``received.log`` (so tests can prove what left the
trusted zone), then authenticated, then faulted if a fault rule says so
(:mod:`qhybrid.cloud.faults`), then routed. Handlers are plain ``def`` functions: FastAPI runs
them in its thread pool, which keeps SQLite and the OpenQASM parser off the event loop.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, FastAPI, HTTPException, Query, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qhybrid.cloud.config import CloudConfig
from qhybrid.cloud.faults import (
    DROP_CONNECTION_KEY,
    FaultInjector,
    FaultMiddleware,
    FaultRule,
    connection_dropper,
)
from qhybrid.cloud.runner import QpuRunner
from qhybrid.cloud.sampler import ProgramError, check_program, sample_instant, simulate
from qhybrid.cloud.store import TaskRecord, TaskState, TaskStore, program_digest

logger = logging.getLogger(__name__)

#: The one route open without a token, so that process supervisors can probe liveness.
_PUBLIC_ROUTES = frozenset({("GET", "/healthz")})

ClientToken = Annotated[str, StringConstraints(min_length=8, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")]


# --- middleware ----------------------------------------------------------------------------------


class ReceivedLogMiddleware:
    r"""Appends every HTTP request, byte for byte, to a log file before the app sees it.

    Record format: ``>>> <iso-time> <METHOD> <path?query> <n-bytes>\n``, one ``name: value\n``
    line per header as received, a blank line, the raw body, ``\n``.

    Args:
        app: The wrapped ASGI application.
        path: The log file (appended to; its directory is created if needed).
    """

    def __init__(self, app: ASGIApp, path: Path) -> None:
        self._app = app
        self._path = path
        self._lock = threading.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Read the whole body, log the request, then replay the body to the app."""
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        chunks: list[bytes] = []
        disconnect: Message | None = None
        while True:
            message = await receive()
            if message["type"] != "http.request":
                disconnect = message
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        self._write(scope, body)

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            if disconnect is not None:
                return disconnect
            return {"type": "http.request", "body": body, "more_body": False}

        await self._app(scope, replay, send)

    def _write(self, scope: Scope, body: bytes) -> None:
        target: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
        query: bytes = scope.get("query_string", b"")
        if query:
            target += b"?" + query
        stamp = datetime.now(UTC).isoformat().encode("ascii")
        method = str(scope["method"]).encode("ascii")
        parts = [b">>> " + stamp + b" " + method + b" " + target + b" " + str(len(body)).encode() + b"\n"]
        parts.extend(name + b": " + value + b"\n" for name, value in scope["headers"])
        parts += [b"\n", body, b"\n"]
        record = b"".join(parts)
        with self._lock:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            with self._path.open("ab") as log:
                log.write(record)


class BearerAuthMiddleware:
    """Refuses with 401 every request without the right bearer token, except the public routes.

    Done as middleware rather than a route dependency so that it also covers unknown paths and
    the generated documentation.

    Args:
        app: The wrapped ASGI application.
        token: The expected token.
    """

    def __init__(self, app: ASGIApp, token: str) -> None:
        self._app = app
        self._expected = token.encode("utf-8")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the Authorization header, then pass the request on."""
        if scope["type"] != "http" or (scope["method"], scope["path"]) in _PUBLIC_ROUTES:
            await self._app(scope, receive, send)
            return
        supplied = [value for name, value in scope["headers"] if name.lower() == b"authorization"]
        if not supplied:
            detail = "missing Authorization header: send 'Authorization: Bearer <token>'"
        else:
            scheme, _, credential = supplied[0].strip().partition(b" ")
            # compare_digest: the answer time must not reveal how much of the token matched.
            if (
                len(supplied) == 1
                and scheme.lower() == b"bearer"
                and hmac.compare_digest(credential.strip(), self._expected)
            ):
                await self._app(scope, receive, send)
                return
            detail = "invalid bearer token"
        response = JSONResponse({"detail": detail}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
        await response(scope, receive, send)


# --- schemas ---------------------------------------------------------------------------------------


class SubmitTaskRequest(BaseModel):
    """Body of ``POST /v1/tasks``."""

    model_config = ConfigDict(extra="forbid")

    device: str = Field(min_length=1, max_length=128)
    program: str
    shots: StrictInt
    client_token: ClientToken


# --- service ---------------------------------------------------------------------------------------


def _iso(timestamp: float | None) -> str | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, UTC).isoformat()


def new_task_id() -> str:
    """A fresh random task id: ``task-`` and 24 hex digits."""
    return f"task-{secrets.token_hex(12)}"


class CloudService:
    """The cloud's state for one app: configuration, store and QPU runner.

    The store and runner exist between :meth:`open` and :meth:`close`, i.e. during the lifespan.

    Args:
        config: The cloud configuration.
    """

    def __init__(self, config: CloudConfig) -> None:
        self.config = config
        self.faults = FaultInjector(config.faults)
        self._store: TaskStore | None = None
        self._runner: QpuRunner | None = None

    @property
    def store(self) -> TaskStore:
        """The open task store."""
        if self._store is None:
            raise RuntimeError("cloud service is not open")
        return self._store

    def open(self) -> None:
        """Open the store and start the QPU."""
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        self._store = TaskStore(self.config.db_path)
        self._runner = QpuRunner(
            self._store,
            self.config,
            faults=self.faults,
            simulate_fn=sample_instant if self.config.sampler == "instant" else simulate,
        )
        self._runner.start()
        if self.config.uses_default_token:
            logger.warning("using the default development token; set QCLOUD_TOKEN or --token")

    def close(self) -> None:
        """Stop the QPU and close the store."""
        if self._runner is not None:
            self._runner.stop()
            self._runner = None
        if self._store is not None:
            self._store.close()
            self._store = None

    def wake_runner(self) -> None:
        """Tell the QPU the queue changed."""
        if self._runner is not None:
            self._runner.wake()

    def task_json(self, record: TaskRecord) -> dict[str, Any]:
        """The public view of a task."""
        return {
            "task_id": record.task_id,
            "device": record.device,
            "state": record.state.value,
            "shots": record.shots,
            "queue_position": self.store.queue_position(record),
            "created_at": _iso(record.created_at),
            "started_at": _iso(record.started_at),
            "ended_at": _iso(record.ended_at),
            "message": record.message,
            "client_token": record.client_token,
        }

    def result_json(self, record: TaskRecord) -> dict[str, Any]:
        """The result document of a COMPLETED task (counts with bit 0 first, shots, metadata)."""
        stored = self.store.result(record.task_id) or {}
        return {
            "task_id": record.task_id,
            "counts": stored.get("counts", {}),
            "shots": record.shots,
            "bit_order": "bit0-first",
            "metadata": stored.get("metadata", {}),
        }

    def require_task(self, task_id: str) -> TaskRecord:
        """The task with this id, or a 404."""
        record = self.store.get(task_id)
        if record is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no task with id {task_id!r}")
        return record


def _build_router(service: CloudService) -> APIRouter:
    # The groups are added in the order the routes were always declared, so path matching and
    # the generated documentation list them as before.
    router = APIRouter()
    _add_device_routes(router, service.config)
    _add_task_routes(router, service)
    _add_admin_routes(router, service)
    return router


def _add_device_routes(router: APIRouter, config: CloudConfig) -> None:
    @router.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/v1/devices/{device}")
    def device_info(device: str) -> dict[str, Any]:
        if device != config.device_name:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no device named {device!r}")
        return {
            "name": config.device_name,
            "num_qubits": config.num_qubits,
            "basis_gates": list(config.basis_gates),
            "coupling_map": None,
        }


def _add_task_routes(router: APIRouter, service: CloudService) -> None:
    # The task routes are coroutines although nothing in them awaits: each does a millisecond or
    # two of CPU and SQLite work, and handing a plain function to the thread pool and back cost
    # about a sixth of the cloud's CPU per request (a poll: 0.96 -> 0.79 ms, measured alone, load
    # 5-6); the process runs one core's worth of Python anyway, the TLS front has its own threads.
    @router.post("/v1/tasks", status_code=status.HTTP_201_CREATED)
    async def submit_task(body: SubmitTaskRequest, response: Response) -> dict[str, Any]:
        return _submit_task(service, body, response)

    @router.get("/v1/tasks")
    async def find_task(client_token: Annotated[str, Query(min_length=1, max_length=128)]) -> dict[str, Any]:
        record = service.store.get_by_token(client_token)
        if record is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no task with client token {client_token!r}")
        return service.task_json(record)

    @router.get("/v1/tasks/{task_id}")
    async def get_task(
        task_id: str, include: Annotated[Literal["result"] | None, Query()] = None
    ) -> dict[str, Any]:
        # include=result: a COMPLETED task's status carries its result too, so a client that polls
        # needs no second request for it (one TLS request, audit entry and handler less per task).
        record = service.require_task(task_id)
        answer = service.task_json(record)
        if include == "result" and record.state is TaskState.COMPLETED:
            answer["result"] = service.result_json(record)
        return answer

    @router.get("/v1/tasks/{task_id}/result")
    async def get_result(task_id: str) -> dict[str, Any]:
        record = service.require_task(task_id)
        _require_completed(record)
        return service.result_json(record)

    @router.post("/v1/tasks/{task_id}/cancel")
    def cancel_task(task_id: str) -> dict[str, Any]:
        record = service.store.cancel(task_id, now=time.time(), message="cancelled at the client's request")
        if record is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no task with id {task_id!r}")
        service.wake_runner()
        return service.task_json(record)


def _add_admin_routes(router: APIRouter, service: CloudService) -> None:
    @router.get("/v1/admin/submissions")
    def submissions() -> dict[str, int]:
        return service.store.submissions()

    @router.get("/v1/admin/faults")
    def list_faults() -> list[dict[str, Any]]:
        return _fault_rules_json(service)

    @router.put("/v1/admin/faults")
    def replace_faults(rules: list[FaultRule]) -> list[dict[str, Any]]:
        service.faults.replace(rules)
        return _fault_rules_json(service)


def _submit_task(service: CloudService, body: SubmitTaskRequest, response: Response) -> dict[str, Any]:
    """Queue a task, or answer a replayed client token with the task it already made (200)."""
    store = service.store
    # Counted before anything else: tests use the counter to prove how often a client sent.
    store.record_submission(body.client_token)
    existing = store.get_by_token(body.client_token)
    if existing is not None:
        _check_replay(existing, body)
        response.status_code = status.HTTP_200_OK
        return service.task_json(existing)
    _check_submission(body, service.config)
    record, created = store.create_task(
        task_id=new_task_id(),
        client_token=body.client_token,
        device=body.device,
        program=body.program,
        shots=body.shots,
        now=time.time(),
    )
    if created:
        logger.info("task %s QUEUED (token %s)", record.task_id, record.client_token)
        service.wake_runner()
    else:
        # A concurrent request with the same token won the race; answer like a replay.
        _check_replay(record, body)
        response.status_code = status.HTTP_200_OK
    return service.task_json(record)


def _check_submission(body: SubmitTaskRequest, config: CloudConfig) -> None:
    """Refuse a new task this cloud cannot run: unknown device, shots or size out of range, bad program."""
    if body.device != config.device_name:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            f"unknown device {body.device!r}; this cloud offers {config.device_name!r}",
        )
    if not 1 <= body.shots <= config.max_shots:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            f"shots must be between 1 and {config.max_shots}, got {body.shots}",
        )
    size = len(body.program.encode("utf-8"))
    if size > config.max_program_bytes:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"program is {size} bytes; the limit is {config.max_program_bytes}",
        )
    try:
        check_program(body.program, max_qubits=config.num_qubits)
    except ProgramError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from exc


def _require_completed(record: TaskRecord) -> None:
    """Refuse (409) the result of a task that has none yet, or never will."""
    if record.state is not TaskState.COMPLETED:
        reason = f": {record.message}" if record.message else ""
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"task {record.task_id!r} is {record.state.value}{reason}; only COMPLETED tasks have results",
        )


def _fault_rules_json(service: CloudService) -> list[dict[str, Any]]:
    return [rule.model_dump(exclude_none=True) for rule in service.faults.rules()]


def _check_replay(existing: TaskRecord, body: SubmitTaskRequest) -> None:
    """Refuse a reused client token whose request differs from the original one.

    Returning the old task for a different program would silently hand the client someone
    else's results, so a mismatch is a 409, as real providers do.
    """
    differences = [
        name
        for name, same in (
            ("device", existing.device == body.device),
            ("shots", existing.shots == body.shots),
            ("program", existing.program_sha256 == program_digest(body.program)),
        )
        if not same
    ]
    if differences:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"client token {existing.client_token!r} was already used for task {existing.task_id!r} "
            f"with a different {', '.join(differences)}",
        )


def _describe_validation_error(exc: RequestValidationError) -> str:
    problems = []
    for error in exc.errors():
        kind = error.get("type")
        location = [str(part) for part in error.get("loc", ())]
        if kind == "json_invalid":
            problems.append(f"body is not valid JSON ({error.get('ctx', {}).get('error', 'decode error')})")
        elif location == ["body"]:
            shape = "list" if kind == "list_type" else "object"  # PUT /v1/admin/faults takes a list
            problems.append(f"body must be a JSON {shape} sent with 'Content-Type: application/json'")
        else:
            where = ".".join(part for part in location if part != "body")
            problems.append(f"{where}: {error.get('msg', 'invalid value')}")
    return "invalid request: " + "; ".join(problems)


class _CloudApp(FastAPI):
    """FastAPI that hands the layers below a way to hang up on the client.

    Starlette wraps ``send`` in its outermost middleware, so only this level still holds the
    server's own ``send``, from which the connection can be reached (see
    :func:`~qhybrid.cloud.faults.connection_dropper`).
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Record the connection's drop hook in the scope, then serve as FastAPI does."""
        if scope["type"] == "http":
            dropper = connection_dropper(send)
            if dropper is not None:
                scope[DROP_CONNECTION_KEY] = dropper
        await super().__call__(scope, receive, send)


def create_app(config: CloudConfig) -> FastAPI:
    """Build the cloud's ASGI application.

    The lifespan opens the task store and starts the QPU thread, and stops both on shutdown.

    Args:
        config: The cloud configuration.
    """
    service = CloudService(config)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        service.open()
        try:
            yield
        finally:
            service.close()

    app = _CloudApp(title="qhybrid emulated quantum cloud", lifespan=lifespan)
    app.include_router(_build_router(service))

    async def validation_error(_request: Request, exc: Exception) -> JSONResponse:
        # FastAPI's default 422 carries a list; clients here get one readable sentence.
        assert isinstance(exc, RequestValidationError)
        return JSONResponse({"detail": _describe_validation_error(exc)}, status_code=400)

    app.add_exception_handler(RequestValidationError, validation_error)
    # The last middleware added is the outermost: the log sees the request before auth refuses it,
    # and faults apply only to authenticated requests, which are logged like any other.
    app.add_middleware(FaultMiddleware, injector=service.faults)
    app.add_middleware(BearerAuthMiddleware, token=config.token.get_secret_value())
    app.add_middleware(ReceivedLogMiddleware, path=config.received_log_path)
    return app
