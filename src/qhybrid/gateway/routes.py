"""The route table: every request that leaves must be one the provider's API declares.

The gateway's check used to be opt-in: only requests labelled as submissions had their body
checked, so an extra body key, a query string, a path segment or a longer header could reach the
cloud. Now every request through :class:`~qhybrid.gateway.egress.EgressClient` is matched against
the :class:`RouteTable` of its destination before anything is sent:

* the method and the path, segment by segment, with each identifier in the provider's format
  (a task id is ``task-`` and 24 hex digits, a device is the configured one);
* the query: only declared keys, each once, each value in its format;
* the body: none where the route takes none; for a submission exactly the payload contract
  (:func:`~qhybrid.gateway.payload.validate_submission`: keys, configured device, a token the
  gateway minted, the bounded program grammar).

Headers are the gateway's own (see :mod:`qhybrid.gateway.egress`): a caller may ask for
``Accept: application/json`` and nothing else; the ``Authorization`` value is the configured one.

:func:`emulated_cloud_routes` is the table of the emulated cloud's API (``cloud/app.py``), the
provider the gateway speaks to itself. The SDK providers' tables are in
:mod:`qhybrid.gateway.sdk`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

from qhybrid.gateway.payload import PayloadError, SubmissionPolicy, check_token, validate_submission
from qhybrid.gateway.tokens import TokenMinter


class RouteError(ValueError):
    """A request that no route of the destination's table allows.

    Attributes:
        rule: ``route`` (method and path), ``query``, ``body`` or ``header``.
    """

    def __init__(self, rule: str, detail: str) -> None:
        self.rule = rule
        super().__init__(f"{rule}: {detail}")


#: Checks a body (the JSON value about to be serialised), raising :class:`PayloadError` or
#: :class:`RouteError`.
BodyCheck = Callable[[Any], None]
#: Checks one query value; returns whether it is acceptable.
ValueCheck = Callable[[str], bool]


def matches(pattern: str) -> ValueCheck:
    """A value check: the whole value matches the regular expression ``pattern``."""
    compiled = re.compile(pattern)
    return lambda value: compiled.fullmatch(value) is not None


@dataclass(frozen=True)
class Route:
    """One request the provider's API declares.

    Attributes:
        name: What the route is, for error messages and the audit note.
        method: HTTP method.
        path: Regular expression the whole path, as sent (no percent-encoding), must match.
        query: Declared query keys and their value checks; all optional unless in ``required``.
        required: Query keys that must be present.
        body: The body check, or ``None`` for a route that takes no body.
    """

    name: str
    method: str
    path: re.Pattern[str]
    query: Mapping[str, ValueCheck] = field(default_factory=dict)
    required: frozenset[str] = frozenset()
    body: BodyCheck | None = None


_SAFE_PATH = re.compile(r"/[A-Za-z0-9/._:-]*")


class RouteTable:
    """The declared requests of one destination.

    Args:
        routes: The routes; a request must match one of them.
    """

    def __init__(self, routes: Sequence[Route]) -> None:
        self.routes = tuple(routes)

    def __repr__(self) -> str:
        return f"RouteTable({[f'{r.method} {r.name}' for r in self.routes]})"

    def check(self, method: str, target: str, body: Any, *, has_body: bool) -> Route:
        """The route that allows this request.

        Args:
            method: HTTP method, upper case.
            target: The request target exactly as it will be sent (path and query, raw).
            body: The JSON value of the body (``None`` when there is none).
            has_body: Whether a body is sent at all.

        Returns:
            The matching route.

        Raises:
            RouteError: If no route allows the method and path, the query, or the body.
            PayloadError: If a submission breaks the payload contract.
        """
        path, _, raw_query = target.partition("?")
        if "#" in target:
            raise RouteError("route", "a fragment is not allowed")
        # Every identifier the routes declare is plain ASCII, so the path on the wire must be too:
        # no percent-encoding (which would let one value be spelled several ways, or hide a "/"),
        # no dot segments.
        if _SAFE_PATH.fullmatch(path) is None or "/../" in f"{path}/" or "/./" in f"{path}/":
            raise RouteError("route", f"path {path!r} has characters or segments no route declares")
        candidates = [route for route in self.routes if route.path.fullmatch(path)]
        route = next((r for r in candidates if r.method == method), None)
        if route is None:
            if candidates:
                raise RouteError("route", f"{method} is not declared for {path}")
            raise RouteError("route", f"no declared route matches {method} {path}")
        self._check_query(route, raw_query, target)
        if route.body is None:
            if has_body:
                raise RouteError("body", f"{route.name} takes no body")
        else:
            if not has_body:
                raise RouteError("body", f"{route.name} needs a body")
            route.body(body)
        return route

    @staticmethod
    def _check_query(route: Route, raw_query: str, target: str) -> None:
        if "?" in target and not raw_query:
            raise RouteError("query", "an empty query string is not allowed")
        if not raw_query:
            missing = sorted(route.required)
            if missing:
                raise RouteError("query", f"{route.name} needs {', '.join(missing)}")
            return
        try:
            pairs = parse_qsl(raw_query, keep_blank_values=True, strict_parsing=True)
        except ValueError as exc:
            raise RouteError("query", f"unreadable query string: {exc}") from exc
        if urlencode(pairs) != raw_query:
            # One spelling per query: "%61" for "a" or "+" for a space would be a choice, and a choice
            # carries a bit.
            raise RouteError("query", "the query string is not in its canonical encoding")
        keys = [key for key, _ in pairs]
        undeclared = sorted(set(keys) - set(route.query))
        if undeclared:
            raise RouteError("query", f"{route.name} does not declare {', '.join(map(repr, undeclared))}")
        if len(keys) != len(set(keys)):
            raise RouteError("query", "a query key is repeated")
        missing = sorted(route.required - set(keys))
        if missing:
            raise RouteError("query", f"{route.name} needs {', '.join(missing)}")
        for key, value in pairs:
            if not route.query[key](value):
                raise RouteError("query", f"{key} has a value outside its declared format")


def _exactly(expected: str) -> ValueCheck:
    """A value check: the value is ``expected`` and nothing else."""
    return lambda value: value == expected


#: The emulated cloud's task ids (``cloud/app.py: new_task_id``).
CLOUD_TASK_ID = r"task-[0-9a-f]{24}"


def emulated_cloud_routes(policy: SubmissionPolicy) -> RouteTable:
    """The emulated cloud's API as the gateway allows it (``cloud/app.py``).

    Args:
        policy: The submission policy: configured device, the gateway's token minter, limits.

    Returns:
        Health, device description (of the configured device only), submission, look-up by token,
        status (optionally ``?include=result``), result and cancellation of a task.
    """
    device = re.escape(policy.device) if policy.device is not None else r"[A-Za-z0-9_.:-]{1,64}"
    tokens: TokenMinter | None = policy.tokens

    def submission(body: Any) -> None:
        if not isinstance(body, Mapping):
            raise PayloadError(0, "submission", "a submission needs a JSON object body")
        validate_submission(body, policy)

    def minted(value: str) -> bool:
        try:
            check_token(value, tokens)
        except PayloadError:
            return False
        return True

    task = rf"/v1/tasks/{CLOUD_TASK_ID}"
    return RouteTable(
        [
            Route("health", "GET", re.compile(r"/healthz")),
            Route("device description", "GET", re.compile(rf"/v1/devices/{device}")),
            Route("submission", "POST", re.compile(r"/v1/tasks"), body=submission),
            Route(
                "task look-up by token",
                "GET",
                re.compile(r"/v1/tasks"),
                query={"client_token": minted},
                required=frozenset({"client_token"}),
            ),
            # The one optional query: ``include=result``, exactly (the status of a COMPLETED task
            # then carries its result). Any other value or key is refused like an undeclared route.
            Route("task status", "GET", re.compile(task), query={"include": _exactly("result")}),
            Route("task result", "GET", re.compile(rf"{task}/result")),
            Route("task cancellation", "POST", re.compile(rf"{task}/cancel")),
        ]
    )
