"""Fault injection: make the emulated cloud misbehave on demand, the way real providers do.

A :class:`FaultRule` says which requests it hits (``"POST /v1/tasks"``, ``"GET /v1/tasks/*"``,
``"*"``...), what goes wrong and for how many of them. Rules come from the configuration
(``--faults`` / ``QCLOUD_FAULTS``) and can be replaced at runtime through ``PUT /v1/admin/faults``.
The first armed rule that matches a request is used up by one; a rule disappears once its count is
spent. ``task_failed`` rules are used up by the QPU instead: each makes one task end FAILED.

The health probe and the ``/v1/admin/`` routes are never faulted, so that a supervisor can always
see the process alive and a test can always reset the rules.

:class:`FaultMiddleware` applies request faults inside the ASGI stack (after the received log and
authentication, so that refused-by-auth noise does not use rules up and every faulted request is
still logged).
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger(__name__)

FaultKind = Literal["429", "500", "503", "drop", "drop_after", "slow", "task_failed"]

#: Faults answered with a status code and nothing else.
_STATUS_FAULTS = frozenset({"429", "500", "503"})
_REASONS = {"429": "Too Many Requests", "500": "Internal Server Error", "503": "Service Unavailable"}

#: Scope key under which the outermost app layer leaves a way to close the client connection.
DROP_CONNECTION_KEY = "qhybrid.cloud.drop_connection"

_METHOD_RE = re.compile(r"^(\*|[A-Z]+)$")


def _never_faulted(path: str) -> bool:
    return path == "/healthz" or path.startswith("/v1/admin/")


def _compile_match(match: str) -> tuple[str, re.Pattern[str]] | None:
    """``(method, path regex)`` for a rule's match; ``None`` when it matches every request.

    ``*`` stands for any run of characters inside one path segment (it never crosses ``/``), so
    ``GET /v1/tasks/*`` hits status polls but not ``/v1/tasks/<id>/result``.
    """
    if match == "*":
        return None
    method, _, path = match.partition(" ")
    regex = "".join("[^/]*" if part == "*" else re.escape(part) for part in re.split(r"(\*)", path))
    return method, re.compile(regex)


class FaultRule(BaseModel):
    """One fault to inject.

    Attributes:
        match: ``"*"`` (every request), or ``"METHOD /path"`` where the method may be ``*`` and
            each ``*`` in the path matches within one segment. The query string is not matched.
            Ignored by ``task_failed``, which applies to tasks, not to requests.
        fault: ``429``/``500``/``503`` answer that status without doing anything; ``drop`` closes
            the connection without processing nor answering; ``drop_after`` processes the request
            then closes the connection in the middle of the answer; ``slow`` waits ``seconds``
            before processing and answering; ``task_failed`` makes the next tasks that run fail.
        count: How many requests (or tasks) the rule still applies to.
        retry_after: Seconds sent as ``Retry-After`` (``429`` and ``503`` only).
        seconds: The delay of a ``slow`` fault.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    match: str = Field(default="*", min_length=1, max_length=300)
    fault: FaultKind
    count: int = Field(default=1, ge=1)
    retry_after: float | None = Field(default=None, ge=0)
    seconds: float | None = Field(default=None, ge=0, le=3600)

    @field_validator("fault", mode="before")
    @classmethod
    def _status_as_text(cls, value: object) -> object:
        # ``"fault": 429`` is what people write; the statuses are spelled as strings in the model.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("match")
    @classmethod
    def _check_match(cls, value: str) -> str:
        value = value.strip()
        if value == "*":
            return value
        method, _, path = value.partition(" ")
        if not _METHOD_RE.match(method) or not path.startswith("/") or " " in path:
            raise ValueError(f"match must be '*' or 'METHOD /path' (e.g. 'GET /v1/tasks/*'), got {value!r}")
        return value

    @model_validator(mode="after")
    def _check_options(self) -> FaultRule:
        # A parameter the fault ignores is most likely a mistake: refuse it rather than surprise.
        if self.retry_after is not None and self.fault not in ("429", "503"):
            raise ValueError(f"retry_after only applies to 429 and 503, not to {self.fault!r}")
        if self.fault == "slow" and self.seconds is None:
            raise ValueError("a 'slow' fault needs 'seconds'")
        if self.seconds is not None and self.fault != "slow":
            raise ValueError(f"seconds only applies to 'slow', not to {self.fault!r}")
        return self

    def describe(self) -> str:
        """A short human description, for logs and messages."""
        extra = ""
        if self.retry_after is not None:
            extra = f", Retry-After {self.retry_after:g}"
        elif self.seconds is not None:
            extra = f", {self.seconds:g}s"
        target = "tasks" if self.fault == "task_failed" else repr(self.match)
        return f"{self.fault} on {target}{extra}"


@dataclass
class _ArmedRule:
    rule: FaultRule
    remaining: int
    pattern: tuple[str, re.Pattern[str]] | None

    def matches(self, method: str, path: str) -> bool:
        if self.rule.fault == "task_failed":
            return False
        if self.pattern is None:
            return True
        wanted_method, regex = self.pattern
        return wanted_method in ("*", method) and regex.fullmatch(path) is not None


class FaultInjector:
    """The armed fault rules, shared by the HTTP layer and the QPU thread.

    Args:
        rules: The initial rules, in priority order.
    """

    def __init__(self, rules: Iterable[FaultRule] = ()) -> None:
        self._lock = threading.Lock()
        self._armed: list[_ArmedRule] = []
        if rules := list(rules):
            self.replace(rules)

    def replace(self, rules: Iterable[FaultRule]) -> None:
        """Forget every armed rule and arm ``rules`` instead."""
        armed = [_ArmedRule(rule, rule.count, _compile_match(rule.match)) for rule in rules]
        with self._lock:
            self._armed = armed
        if armed:
            logger.warning("fault rules armed: %s", "; ".join(a.rule.describe() for a in armed))
        else:
            logger.info("fault rules cleared")

    def rules(self) -> list[FaultRule]:
        """The rules still armed, each with the count it has left."""
        with self._lock:
            return [a.rule.model_copy(update={"count": a.remaining}) for a in self._armed]

    def _take(self, pick: Callable[[_ArmedRule], bool]) -> tuple[FaultRule, int] | None:
        with self._lock:
            for armed in self._armed:
                if pick(armed):
                    armed.remaining -= 1
                    if armed.remaining == 0:
                        self._armed.remove(armed)
                    return armed.rule, armed.remaining
        return None

    def take_for_request(self, method: str, path: str) -> FaultRule | None:
        """Use up the first rule that hits ``method path``, if any.

        Returns:
            The rule to apply, or ``None`` when the request is to be served normally.
        """
        if _never_faulted(path):
            return None
        taken = self._take(lambda armed: armed.matches(method, path))
        if taken is None:
            return None
        rule, left = taken
        logger.warning("injecting fault %s into %s %s (%d left)", rule.describe(), method, path, left)
        return rule

    def take_task_failure(self, task_id: str) -> FaultRule | None:
        """Use up one ``task_failed`` rule for the task about to run, if any is armed."""
        taken = self._take(lambda armed: armed.rule.fault == "task_failed")
        if taken is None:
            return None
        rule, left = taken
        logger.warning("injecting fault task_failed into task %s (%d left)", task_id, left)
        return rule


class FaultMiddleware:
    """Applies request faults before the routes see the request.

    Args:
        app: The wrapped ASGI application.
        injector: Where the rules live.
    """

    def __init__(self, app: ASGIApp, injector: FaultInjector) -> None:
        self._app = app
        self._injector = injector

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request, faulted if a rule hits it."""
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        rule = self._injector.take_for_request(str(scope["method"]), str(scope["path"]))
        if rule is None:
            await self._app(scope, receive, send)
        elif rule.fault in _STATUS_FAULTS:
            headers = {} if rule.retry_after is None else {"Retry-After": f"{rule.retry_after:g}"}
            detail = f"injected fault: {rule.fault} {_REASONS[rule.fault]}"
            await JSONResponse({"detail": detail}, status_code=int(rule.fault), headers=headers)(
                scope, receive, send
            )
        elif rule.fault == "slow":
            assert rule.seconds is not None  # guaranteed by the model
            await asyncio.sleep(rule.seconds)
            await self._app(scope, receive, send)
        elif rule.fault == "drop":
            await _drop(scope, receive)
        elif rule.fault == "drop_after":
            await self._process_then_drop(scope, receive, send)
        else:  # pragma: no cover - task_failed rules never match requests
            await self._app(scope, receive, send)

    async def _process_then_drop(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the request to completion, then send only part of the answer and hang up."""
        messages: list[Message] = []

        async def capture(message: Message) -> None:
            messages.append(message)

        await self._app(scope, receive, capture)
        start = next((m for m in messages if m["type"] == "http.response.start"), None)
        body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
        if start is not None and len(body) >= 2:
            # The status line and a Content-Length go out, then half the body: the client knows
            # the answer is truncated, but not whether the request took effect.
            await send(start)
            await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
        await _drop(scope, receive)


async def _drop(scope: Scope, receive: Receive) -> None:
    """Close the client connection through the hook the outermost layer left in the scope."""
    dropper: Callable[[], None] | None = scope.get(DROP_CONNECTION_KEY)
    if dropper is None:
        # Without a transport (e.g. an in-process test client) there is no connection to drop.
        raise RuntimeError("cannot drop the connection: the server exposes no transport")
    dropper()
    # Wait until the server notices the connection is gone, so it does not report the response
    # as unfinished; bounded in case the notice never comes.
    try:
        async with asyncio.timeout(2.0):
            while (await receive())["type"] != "http.disconnect":
                pass
    except TimeoutError:
        pass


def connection_dropper(send: Send) -> Callable[[], None] | None:
    """A function that closes the connection ``send`` writes to, if the server lets us reach it.

    ASGI has no "hang up" message. uvicorn's ``send`` is a bound method of its request-response
    cycle, which holds the asyncio transport; closing that transport is the only way to make a
    client see a connection end without (or in the middle of) an answer. Only the outermost ASGI
    layer gets uvicorn's own ``send``, hence this is called there.

    Args:
        send: The ``send`` callable the server passed to the application.

    Returns:
        A callable that closes the transport (flushing what was already written), or ``None``.
    """
    cycle: Any = getattr(send, "__self__", None)
    transport: Any = getattr(cycle, "transport", None)
    # Duck-typed: uvloop's transports have the asyncio interface without deriving from its classes.
    close = getattr(transport, "close", None)
    if not callable(close) or not callable(getattr(transport, "is_closing", None)):
        return None
    closer: Callable[[], None] = close
    return closer
