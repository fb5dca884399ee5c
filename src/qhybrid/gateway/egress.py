"""The egress gateway: the only code in the trusted zone that opens connections to the public zone.

Every request made through :class:`EgressClient`, in this order:

1. goes only to a configured :class:`Destination` (``host:port``), with no user name or password
   in the URL;
2. uses ``https``: plain ``http`` is refused unless ``allow_plaintext`` (development only);
3. is one the destination's :class:`~qhybrid.gateway.routes.RouteTable` declares: method, path
   with the provider's id formats, only declared query keys, and the body the route takes (none,
   or for a submission exactly the payload contract, with a token this gateway minted);
4. carries only the gateway's headers: a fixed ``User-Agent``, the configured ``Authorization``
   value, ``Accept: application/json`` if the caller asks;
5. goes over a connection whose TLS handshake was pyOpenSSL's under the
   :class:`~qhybrid.gateway.tls.TlsPolicy` (TLS 1.3, ``X25519MLKEM768`` offered, optionally
   required): a fresh one per request by default (no keep-alive), so each request's TLS facts
   are its own; with ``keepalive_seconds`` (the worker's ``QHYBRID_EGRESS_KEEPALIVE_SECONDS``)
   a connection whose response was read to the end is kept that long for the next request to the
   same destination, which then carries the facts of that connection's handshake;
6. is written to the :class:`~qhybrid.gateway.audit.AuditLog` after the handshake (version and
   group known), or when it takes a kept-alive connection, and before its first byte is sent;
   if that write fails, nothing is sent.

Steps 5 and 6 hook into httpcore: the network backend does the handshake, and the request's
``trace`` extension sees ``connection.start_tls.complete`` (audit) and
``http11.send_request_headers.started`` (last check that the audit happened) in that order.
"""

from __future__ import annotations

import json as _json
import os
import ssl
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

from qhybrid.core.metrics import EGRESS_BYTES, EGRESS_REQUESTS, status_class
from qhybrid.gateway.audit import AuditLog, AuditWriteError
from qhybrid.gateway.context import get_current_job
from qhybrid.gateway.payload import PayloadError
from qhybrid.gateway.routes import RouteError, RouteTable
from qhybrid.gateway.tls import PolicyNetworkBackend, TlsFacts, TlsPolicy, TlsPolicyError
from qhybrid.gateway.tokens import TokenMinter

_PLAINTEXT_NOTE = "plaintext http (development only)"


#: The headers a caller may set, each to exactly one value; everything else that leaves is set
#: by the gateway itself (``Authorization`` from the destination's configuration).
CALLER_HEADERS: Mapping[str, str] = {"accept": "application/json"}
#: Sent instead of the HTTP library's name and version.
USER_AGENT = "qhybrid-egress"


class EgressPolicyError(Exception):
    """A request the gateway refuses to send (destination not allowed, bad payload...)."""


class EgressPayloadError(EgressPolicyError):
    """The request is not one the destination's route table declares; nothing was sent."""


@dataclass(frozen=True)
class Destination:
    """A provider endpoint the gateway may reach, and everything it may send there.

    Attributes:
        base_url: ``https://host[:port]``.
        routes: The requests the provider's API declares (:mod:`qhybrid.gateway.routes`).
        authorization: The exact ``Authorization`` header value sent with every request (the
            operator's configured credential), or ``None`` for none. Never in a repr.
    """

    base_url: str
    routes: RouteTable
    authorization: str | None = field(default=None, repr=False)


class EgressTlsPolicyError(EgressPolicyError):
    """The TLS policy refused the connection (e.g. no post-quantum group with ``require_pqc``)."""


class EgressAuditError(EgressPolicyError):
    """The audit entry could not be written; the request was not sent."""


def destination_of(url: str) -> str:
    """``host:port`` of a URL, with the scheme's default port filled in.

    Raises:
        EgressPolicyError: If the URL has no host or an unsupported scheme.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise EgressPolicyError(f"unsupported egress URL {url!r}: need http(s)://host[:port]")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.hostname}:{port}"


# --- transport -----------------------------------------------------------------------------------

# httpcore's exceptions as httpx's, most specific first (httpx's own table is private).
_HTTPCORE_TO_HTTPX: tuple[tuple[type[Exception], type[httpx.HTTPError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
    (httpcore.ProxyError, httpx.ProxyError),
)


@contextmanager
def _as_httpx_errors() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        for source, target in _HTTPCORE_TO_HTTPX:
            if isinstance(exc, source):
                raise target(str(exc)) from exc
        raise  # our own policy errors pass through unchanged


class _ClosingStream(httpx.SyncByteStream):
    """A response body that closes its one-shot connection when the response is closed."""

    def __init__(self, body: Iterable[bytes], connection: httpcore.HTTPConnection) -> None:
        self._body = body
        self._connection = connection

    def __iter__(self) -> Iterator[bytes]:
        with _as_httpx_errors():
            yield from self._body

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._connection.close()


def _core_request(request: httpx.Request) -> httpcore.Request:
    assert isinstance(request.stream, httpx.SyncByteStream)
    return httpcore.Request(
        method=request.method,
        url=httpcore.URL(
            scheme=request.url.raw_scheme,
            host=request.url.raw_host,
            port=request.url.port,
            target=request.url.raw_path,
        ),
        headers=request.headers.raw,
        content=request.stream,
        extensions=request.extensions,
    )


def _new_connection(
    request: httpcore.Request, backend: PolicyNetworkBackend, keepalive_seconds: float | None = None
) -> httpcore.HTTPConnection:
    return httpcore.HTTPConnection(
        origin=request.url.origin,
        # httpcore sets ALPN on a stdlib context before start_tls; the policy backend ignores
        # it and uses pyOpenSSL. A bare context avoids httpcore loading certifi for nothing.
        ssl_context=ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT),
        network_backend=backend,
        keepalive_expiry=keepalive_seconds,
    )


def _response(
    response: httpcore.Response, stream: httpx.SyncByteStream, facts: TlsFacts | None
) -> httpx.Response:
    return httpx.Response(
        status_code=response.status,
        headers=response.headers,
        stream=stream,
        extensions={**response.extensions, "qhybrid_tls": facts},
    )


def _facts_of(response: httpcore.Response) -> TlsFacts | None:
    stream = response.extensions.get("network_stream")
    facts = stream.get_extra_info("qhybrid_tls") if stream is not None else None
    return facts if isinstance(facts, TlsFacts) else None


class _OneShotTransport(httpx.BaseTransport):
    """Each request on a connection of its own, opened through the policy backend, then closed."""

    def __init__(self, backend: PolicyNetworkBackend) -> None:
        self._backend = backend

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        core_request = _core_request(request)
        connection = _new_connection(core_request, self._backend)
        try:
            with _as_httpx_errors():
                response = connection.handle_request(core_request)
        except BaseException:
            connection.close()
            raise
        assert isinstance(response.stream, Iterable)
        return _response(response, _ClosingStream(response.stream, connection), _facts_of(response))

    def close(self) -> None:
        """Nothing pooled, nothing to close."""


_Origin = tuple[bytes, bytes, int | None]


class _KeptStream(httpx.SyncByteStream):
    """A response body that, once read and closed, hands its connection back to the pool."""

    def __init__(
        self,
        body: Iterable[bytes],
        connection: httpcore.HTTPConnection,
        pool: _KeepAliveTransport,
        origin: _Origin,
        facts: TlsFacts | None,
    ) -> None:
        self._body = body
        self._connection = connection
        self._pool = pool
        self._origin = origin
        self._facts = facts

    def __iter__(self) -> Iterator[bytes]:
        with _as_httpx_errors():
            yield from self._body

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        except BaseException:
            self._connection.close()
            raise
        self._pool.give_back(self._origin, self._connection, self._facts)


class _KeepAliveTransport(httpx.BaseTransport):
    """Requests over verified connections kept open for a few seconds, one request at a time each.

    A new connection is opened exactly as by :class:`_OneShotTransport` (handshake under the
    policy, audit entry when it completes). Once its response was read to the end, the connection
    waits in the pool for at most ``keepalive_seconds``; the next request to the same origin takes
    it, after checking that the server has not closed it, and is written to the audit log with the
    TLS facts of that connection's handshake before a byte of it is sent (:meth:`_Exchange.reuse`).
    A connection whose response was not read to the end, or that the server asked to close, is
    closed.

    Args:
        backend: Opens connections under the TLS policy.
        keepalive_seconds: How long an idle connection is kept.
        max_idle: Idle connections kept per origin (the worker threads' number is plenty).
    """

    def __init__(self, backend: PolicyNetworkBackend, keepalive_seconds: float, max_idle: int = 16) -> None:
        self._backend = backend
        self._keepalive = keepalive_seconds
        self._max_idle = max_idle
        self._lock = threading.Lock()
        self._idle: dict[_Origin, list[tuple[httpcore.HTTPConnection, TlsFacts | None]]] = {}

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        core_request = _core_request(request)
        url = core_request.url
        origin: _Origin = (url.scheme, url.host, url.port)
        kept = self._take(origin)
        if kept is not None:
            connection, facts = kept
            exchange = request.extensions.get("trace")
            if not isinstance(exchange, _Exchange):
                connection.close()
                raise EgressPolicyError("a request without its audit exchange; not sent")
            exchange.reuse(facts, connection.close)
        else:
            connection = _new_connection(core_request, self._backend, self._keepalive)
        try:
            with _as_httpx_errors():
                response = connection.handle_request(core_request)
        except BaseException:
            connection.close()
            raise
        facts = _facts_of(response) if kept is None else kept[1]
        assert isinstance(response.stream, Iterable)
        return _response(response, _KeptStream(response.stream, connection, self, origin, facts), facts)

    def _take(self, origin: _Origin) -> tuple[httpcore.HTTPConnection, TlsFacts | None] | None:
        while True:
            with self._lock:
                idle = self._idle.get(origin)
                if not idle:
                    return None
                connection, facts = idle.pop()
            # has_expired: the keep-alive time is over, or the socket is readable while idle
            # (the server closed it); either way it is not used again.
            if connection.is_available() and not connection.has_expired():
                return connection, facts
            connection.close()

    def give_back(self, origin: _Origin, connection: httpcore.HTTPConnection, facts: TlsFacts | None) -> None:
        """Keep an idle connection for the next request to ``origin``, or close it."""
        if connection.is_available() and not connection.has_expired():
            with self._lock:
                idle = self._idle.setdefault(origin, [])
                if len(idle) < self._max_idle:
                    idle.append((connection, facts))
                    return
        connection.close()

    def close(self) -> None:
        """Close every idle connection."""
        with self._lock:
            idle = [connection for kept in self._idle.values() for connection, _ in kept]
            self._idle.clear()
        for connection in idle:
            connection.close()


class _Exchange:
    """One request's ``trace`` callback: audits at the right moment, refuses to send without it."""

    def __init__(
        self,
        *,
        audit: AuditLog | None,
        scheme: str,
        destination: str,
        method: str,
        body: bytes,
        job_id: str | None,
        note: str,
    ) -> None:
        self.audit = audit
        self.scheme = scheme
        self.destination = destination
        self.method = method
        self.body = body
        self.job_id = job_id
        self.note = note
        self.path = ""
        self.ready = False

    def __call__(self, event: str, info: Mapping[str, Any]) -> None:
        if event == "connection.start_tls.complete":
            stream = info.get("return_value")
            facts = stream.get_extra_info("qhybrid_tls") if stream is not None else None
            if not isinstance(facts, TlsFacts):
                _close(stream)
                raise EgressPolicyError("TLS stream without policy facts; refusing to send")
            self._record(stream, facts.version, facts.group, facts.cipher, self.note)
        elif event == "connection.connect_tcp.complete" and self.scheme == "http":
            note = f"{self.note}; {_PLAINTEXT_NOTE}" if self.note else _PLAINTEXT_NOTE
            self._record(info.get("return_value"), None, None, None, note)
        elif event == "http11.send_request_headers.started" and not self.ready:
            # Fail closed: a connection that skipped our handshake or our audit sends nothing.
            raise EgressPolicyError(f"no audit/TLS record for this request to {self.destination}; not sent")

    def reuse(self, facts: TlsFacts | None, close: Callable[[], None]) -> None:
        """Audit this request on a kept-alive connection, with the facts of its handshake.

        Raises:
            EgressAuditError: If the entry cannot be written (the connection is closed, nothing sent).
        """
        kept = "kept-alive connection"
        if facts is None:
            if self.scheme != "http":
                close()
                raise EgressPolicyError("a kept-alive https connection without TLS facts; not sent")
            note = "; ".join(part for part in (self.note, kept, _PLAINTEXT_NOTE) if part)
            self._record(None, None, None, None, note, close)
            return
        note = "; ".join(part for part in (self.note, kept) if part)
        self._record(None, facts.version, facts.group, facts.cipher, note, close)

    def _record(
        self,
        stream: Any,
        version: str | None,
        group: str | None,
        cipher: str | None,
        note: str,
        close: Callable[[], None] | None = None,
    ) -> None:
        if self.audit is not None:
            try:
                self.audit.append(
                    destination=self.destination,
                    method=self.method,
                    path=self.path,
                    body=self.body,
                    job_id=self.job_id,
                    tls_version=version,
                    tls_group=group,
                    tls_cipher=cipher,
                    note=note,
                )
            except AuditWriteError as exc:
                _close(stream)
                if close is not None:
                    close()
                raise EgressAuditError(
                    f"egress audit failed, request to {self.destination} not sent: {exc}"
                ) from exc
        self.ready = True


def _close(stream: Any) -> None:
    if stream is not None:
        stream.close()


def _outgoing_headers(
    headers: Mapping[str, str] | None, *, has_body: bool, authorization: str | None, keep_alive: bool = False
) -> dict[str, str]:
    """Every header that leaves: fixed here, or one of :data:`CALLER_HEADERS` with its one value.

    So no library version goes out in the User-Agent, no proxy or tracing header is picked up on
    the way, and no header value but the configured ones can carry data.

    Raises:
        EgressPolicyError: If a caller's header is not one of :data:`CALLER_HEADERS` with its
            value, or an ``Authorization`` other than the configured one.
    """
    outgoing = {"User-Agent": USER_AGENT}
    for name, value in (headers or {}).items():
        key = name.lower()
        if key == "authorization":
            # The credential is the gateway's configuration; a caller may repeat it, not change it.
            if authorization is None or value != authorization:
                raise EgressPolicyError(
                    "header authorization refused at the boundary: only the configured value is sent"
                )
            continue
        if CALLER_HEADERS.get(key) != value:
            # Headers are not audited (they carry the bearer token), so none may carry data.
            allowed = ", ".join(f"{k}: {v}" for k, v in CALLER_HEADERS.items())
            raise EgressPolicyError(f"header {key} refused at the boundary: callers may only set {allowed}")
        outgoing[name.title()] = value
    if authorization is not None:
        outgoing["Authorization"] = authorization
    if has_body:
        outgoing["Content-Type"] = "application/json"
    if not keep_alive:
        outgoing["Connection"] = "close"  # one request per connection, see the transport
    return outgoing


# --- client --------------------------------------------------------------------------------------


class EgressClient:
    """An HTTP client that enforces the egress policy on every request (see the module docstring).

    Args:
        destinations: The providers that may be contacted, each with its route table.
        timeout: Seconds for connect (including the TLS handshake), read and write.
        ca_file: PEM file of the certificate(s) that https servers must chain to (e.g. the emulated
            cloud's self-signed certificate); the system CAs when ``None``. Shorthand for
            ``tls.ca_file``; giving both, different, is an error.
        tls: The TLS policy; ``TlsPolicy()`` (TLS 1.3, hybrid PQC offered, not required) if ``None``.
        audit: Where every request is recorded before it is sent; no audit if ``None``.
        allow_plaintext: Allow ``http://`` destinations (development only).
        tokens: The gateway's client-token minter (:meth:`mint_token`); the route tables check
            tokens against the same minter.
        keepalive_seconds: Keep a connection open this long after its response, for the next
            request to the same destination (audited with that connection's TLS facts); ``0``
            opens a fresh connection, with its own handshake, for every request.
    """

    def __init__(
        self,
        destinations: Iterable[Destination],
        *,
        timeout: float = 30.0,
        ca_file: str | os.PathLike[str] | None = None,
        tls: TlsPolicy | None = None,
        audit: AuditLog | None = None,
        allow_plaintext: bool = False,
        tokens: TokenMinter | None = None,
        keepalive_seconds: float = 0.0,
    ) -> None:
        if keepalive_seconds < 0:
            raise ValueError(f"keepalive_seconds must be >= 0, got {keepalive_seconds}")
        self._keepalive = keepalive_seconds
        self._destinations = {destination_of(d.base_url): d for d in destinations}
        self._allowed = frozenset(self._destinations)
        self._timeout = timeout
        policy = tls or TlsPolicy()
        if ca_file is not None:
            pinned = Path(ca_file)
            if policy.ca_file is not None and policy.ca_file != pinned:
                raise ValueError(f"ca_file {pinned} and tls.ca_file {policy.ca_file} disagree")
            policy = replace(policy, ca_file=pinned)
        self._policy = policy
        self._audit = audit
        self._allow_plaintext = allow_plaintext
        self._tokens = tokens
        self._backend = PolicyNetworkBackend(policy)
        self._lock = threading.Lock()
        self._client: httpx.Client | None = None
        self._last_tls: dict[str, TlsFacts] = {}

    def mint_token(self) -> str:
        """A fresh client token for a provider task: only tokens minted here pass the route tables.

        Raises:
            EgressPolicyError: If this client has no token minter.
        """
        if self._tokens is None:
            raise EgressPolicyError("this egress client mints no client tokens (no token key configured)")
        return self._tokens.mint()

    def __repr__(self) -> str:
        return f"EgressClient(allowed={sorted(self._allowed)!r}, tls={self._policy!r}, audit={self._audit!r})"

    @property
    def policy(self) -> TlsPolicy:
        """The TLS policy applied to every https connection."""
        return self._policy

    def last_tls(self, destination: str | None = None) -> TlsFacts | None:
        """The TLS facts of the latest successful request to ``destination`` (``host:port`` or URL).

        With no destination, those of the only destination contacted so far, if just one.
        """
        with self._lock:
            if destination is None:
                return next(iter(self._last_tls.values())) if len(self._last_tls) == 1 else None
            key = destination_of(destination) if "://" in destination else destination
            return self._last_tls.get(key)

    def _http(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                # trust_env=False: a stray HTTP(S)_PROXY variable must not reroute egress silently.
                transport: httpx.BaseTransport = (
                    _KeepAliveTransport(self._backend, self._keepalive)
                    if self._keepalive > 0
                    else _OneShotTransport(self._backend)
                )
                self._client = httpx.Client(
                    transport=transport,
                    timeout=self._timeout,
                    trust_env=False,
                    follow_redirects=False,
                )
            return self._client

    @staticmethod
    def _body(json: Any) -> bytes:
        if json is None:
            return b""
        try:
            # Serialised here, once: the audit hashes exactly the bytes that are sent.
            return _json.dumps(json, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode(
                "utf-8"
            )
        except (TypeError, ValueError) as exc:
            raise EgressPayloadError(f"body is not serialisable as strict JSON: {exc}") from exc

    def request(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        job_id: str | None = None,
        note: str = "",
    ) -> httpx.Response:
        """Send one request under the egress policy.

        Args:
            method: HTTP method.
            url: Full URL; its ``host:port`` must be a configured destination.
            json: JSON body, if any (serialised compactly, UTF-8).
            params: Query parameters.
            headers: Extra headers, only :data:`CALLER_HEADERS` with their values (never audited).
            job_id: The job this request serves; defaults to :func:`~qhybrid.gateway.context.get_current_job`.
            note: Free text for the audit entry (never a secret).

        Returns:
            The response; ``response.extensions["qhybrid_tls"]`` holds its :class:`TlsFacts`
            (``None`` over plain http).

        Raises:
            EgressPolicyError: If the destination is not configured, the scheme is plain http, or a
                header is refused; :class:`EgressPayloadError` for a request its route table does
                not declare (method, path, query, body, token, program),
                :class:`EgressTlsPolicyError` for a TLS policy refusal or an unusable CA file,
                :class:`EgressAuditError` when the audit entry cannot be written. Nothing is
                sent in any of these cases.
            httpx.HTTPError: On network failures, TLS handshake failures and timeouts.
        """
        destination, scheme, configured = self._checked_destination(url)
        body = self._body(json)
        outgoing_headers = _outgoing_headers(
            headers,
            has_body=json is not None,
            authorization=configured.authorization,
            keep_alive=self._keepalive > 0,
        )
        http = self._http()
        exchange = _Exchange(
            audit=self._audit,
            scheme=scheme,
            destination=destination,
            method=method.upper(),
            body=body,
            job_id=job_id if job_id is not None else get_current_job(),
            note=note,
        )
        request = http.build_request(
            method,
            url,
            content=body if json is not None else None,
            params=params,
            headers=outgoing_headers,
            extensions={"trace": exchange},
        )
        # The target exactly as it will go on the wire, after httpx's own normalisation.
        target = request.url.raw_path.decode("ascii")
        try:
            route = configured.routes.check(method.upper(), target, json, has_body=json is not None)
        except (RouteError, PayloadError) as exc:
            EGRESS_REQUESTS.labels(destination, "refused").inc()
            raise EgressPayloadError(f"request refused at the boundary: {exc}") from exc
        exchange.path = target
        exchange.note = "; ".join(part for part in (route.name, note) if part)
        response = self._send(http, request, destination)
        EGRESS_BYTES.labels(destination, "sent").inc(len(body) if json is not None else 0)
        declared = response.headers.get("content-length", "")
        if declared.isdigit():
            EGRESS_BYTES.labels(destination, "received").inc(int(declared))
        return response

    def _checked_destination(self, url: str) -> tuple[str, str, Destination]:
        """``(host:port, scheme, destination)`` of a URL this client may reach."""
        destination = destination_of(url)
        configured = self._destinations.get(destination)
        if configured is None:
            raise EgressPolicyError(f"egress to {destination} is not on the allow-list")
        parts = urlsplit(url)
        if parts.username is not None or parts.password is not None:
            raise EgressPolicyError("credentials in the URL are refused: the gateway sets Authorization")
        scheme = parts.scheme
        if scheme == "http" and not self._allow_plaintext:
            raise EgressPolicyError(f"plain http egress to {destination} refused: https only")
        if scheme != urlsplit(configured.base_url).scheme:
            raise EgressPolicyError(f"{destination} is configured as {configured.base_url}, not {scheme}")
        return destination, scheme, configured

    def _send(self, http: httpx.Client, request: httpx.Request, destination: str) -> httpx.Response:
        try:
            response = http.send(request)
        except TlsPolicyError as exc:
            EGRESS_REQUESTS.labels(destination, "refused").inc()
            raise EgressTlsPolicyError(str(exc)) from exc
        except Exception:
            EGRESS_REQUESTS.labels(destination, "error").inc()
            raise
        EGRESS_REQUESTS.labels(destination, status_class(response.status_code)).inc()
        facts = response.extensions.get("qhybrid_tls")
        if isinstance(facts, TlsFacts):
            with self._lock:
                self._last_tls[destination] = facts
        return response

    def close(self) -> None:
        """Close the HTTP client; the CA file is read again on the next request."""
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
        self._backend.reset()
