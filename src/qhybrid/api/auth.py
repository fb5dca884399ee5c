"""Who is calling: API keys to tenants, checked in the ASGI layer before any body is read.

Once any key exists (``QHYBRID_API_KEYS`` or ``qhybrid keys create``), every route but
``/healthz`` and the dashboard's page and files (``/``, ``/static/…``: no data in them) needs
``Authorization: Bearer <key>``, the documentation and ``/openapi.json`` included. The check
runs in :class:`TenantAuth`, the outermost middleware after the request counter: a request without a
valid key is answered 401 (and its connection closed) before one byte of its body is received,
so unauthenticated uploads cost neither memory nor parsing. The tenant of a valid key is put in
the request's scope, where :func:`qhybrid.api.deps.current_tenant` reads it.

Without any key the API is open and every request belongs to tenant ``default``; the API logs a
warning at start saying so.
"""

from __future__ import annotations

import hashlib
import logging
import time

import anyio.to_thread
from starlette.types import ASGIApp, Receive, Scope, Send

from qhybrid.api.middleware import send_error
from qhybrid.api.ratelimit import RateLimiter
from qhybrid.core.config import Settings
from qhybrid.jobs.tenants import DEFAULT_TENANT, KeyStore

log = logging.getLogger("qhybrid.api")

#: Where the tenant of a request is kept in its ASGI scope (``scope["state"]``).
TENANT_STATE = "qhybrid_tenant"
#: Routes that answer without a key: the liveness probe, and the dashboard's page and static files
#: (the same for everyone, no data: the page asks for a key and sends it with every API call).
OPEN_PATHS = frozenset({"/healthz", "/"})
OPEN_PREFIXES = ("/static/",)
#: How long a database key, once found, is trusted without asking again: a revoked key stops
#: working within this time; the accept path makes no database round trip per request for it.
KEY_CACHE_SECONDS = 2.0
#: How long "no key exists" is trusted: a key created meanwhile closes the API within this time.
OPEN_CHECK_SECONDS = 1.0
_MAX_CACHED = 10_000


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


class Authenticator:
    """Maps a presented key to its tenant: the keys of the settings, then the database's.

    Args:
        settings: ``QHYBRID_API_KEYS``.
        keys: The database's keys.
    """

    def __init__(self, settings: Settings, keys: KeyStore) -> None:
        # By digest: a dictionary lookup, never a byte-by-byte comparison with a real key.
        self._configured = {_digest(key): tenant for tenant, key in settings.tenant_api_keys()}
        self._keys = keys
        self._found: dict[bytes, tuple[str, float]] = {}
        self._closed = bool(self._configured)
        self._open_until = 0.0

    def __repr__(self) -> str:
        return f"Authenticator({len(self._configured)} configured keys)"

    @property
    def closed(self) -> bool:
        """True once a key is known to exist (it stays so); False may be stale: ask :meth:`is_open`."""
        return self._closed

    def is_open(self) -> bool:
        """True while no key exists anywhere; once one exists the answer stays False."""
        if self._closed:
            return False
        now = time.monotonic()
        if now < self._open_until:
            return True
        if self._keys.any_keys():
            self._closed = True
            return False
        self._open_until = now + OPEN_CHECK_SECONDS
        return True

    def cached(self, key: str | None) -> str | None:
        """The tenant of ``key`` if it is known without asking the database, else ``None``.

        Without a key: ``default`` while the API was found open less than
        :data:`OPEN_CHECK_SECONDS` ago (an open API's requests take no thread hop for it).
        """
        if key is None:
            if not self._closed and time.monotonic() < self._open_until:
                return DEFAULT_TENANT
            return None
        digest = _digest(key)
        tenant = self._configured.get(digest)
        if tenant is not None:
            return tenant
        cached = self._found.get(digest)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        return None

    def resolve(self, key: str | None) -> str | None:
        """The tenant of the request: the key's, ``default`` while the API is open, else ``None``.

        May ask the database: call it off the event loop.
        """
        if key is not None:
            tenant = self.cached(key) or self._from_database(key)
            if tenant is not None:
                return tenant
        return DEFAULT_TENANT if self.is_open() else None

    def _from_database(self, key: str) -> str | None:
        tenant = self._keys.tenant_of(key)
        digest = _digest(key)
        if tenant is None:
            self._found.pop(digest, None)
            return None
        if len(self._found) >= _MAX_CACHED:
            self._found.clear()
        self._found[digest] = (tenant, time.monotonic() + KEY_CACHE_SECONDS)
        return tenant

    def warn_if_open(self) -> None:
        """Log a warning at start when the API answers anyone."""
        if self.is_open():
            log.warning(
                "no API keys are configured: the API is open to anyone who can reach it; create one "
                "with `qhybrid keys create --tenant NAME` or set QHYBRID_API_KEYS"
            )


def _bearer(scope: Scope) -> str | None:
    headers: list[tuple[bytes, bytes]] = scope.get("headers") or []
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
    return None


class TenantAuth:
    """ASGI middleware: the key is checked, and the tenant set, before the body is read.

    Args:
        app: The wrapped application (whose ``state.services.auth`` is an :class:`Authenticator`).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Authenticate one request."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path") or ""
        if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            await self.app(scope, receive, send)
            return
        auth: Authenticator = scope["app"].state.services.auth
        token = _bearer(scope)
        # A known key answers without a thread, as does a missing key once the API is known to be
        # closed; anything else asks the database off the loop.
        if token is None and auth.closed:
            tenant = None
        else:
            tenant = auth.cached(token) or await anyio.to_thread.run_sync(auth.resolve, token)
        if tenant is None:
            # Guessing keys is futile (256 bits) but costs a database lookup each: past the
            # limit, an address's failures are answered 429 without one.
            failures: RateLimiter = scope["app"].state.services.auth_failures
            client = scope.get("client")
            address = str(client[0]) if client else "unknown"
            wait = (
                await anyio.to_thread.run_sync(failures.hit, address)
                if failures.shared
                else failures.hit(address)
            )
            if wait is not None:
                await send_error(
                    send,
                    429,
                    "rate_limited",
                    f"authorization: too many requests without a valid key from this address "
                    f"(QHYBRID_AUTH_FAILURE_LIMIT {failures.text}); retry in {wait} s",
                    field="authorization",
                    headers=[(b"retry-after", str(wait).encode()), (b"connection", b"close")],
                )
                return
            # Connection: close: the unread body is never received, the client cannot go on
            # streaming into this connection.
            await send_error(
                send,
                401,
                "unauthorized",
                "authorization: a valid 'Bearer <api key>' header is required",
                field="authorization",
                headers=[(b"www-authenticate", b"Bearer"), (b"connection", b"close")],
            )
            return
        scope.setdefault("state", {})[TENANT_STATE] = tenant
        await self.app(scope, receive, send)
