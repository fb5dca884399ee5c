"""The egress gateway: the only code in the trusted zone that opens connections to the public zone.

Today it enforces a destination allow-list and timeouts over one pooled HTTP client. Payload
validation, the TLS policy and the audit log attach here, so every adapter inherits them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx


class EgressPolicyError(Exception):
    """A request the gateway refuses to send (destination not allowed, bad payload...)."""


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


class EgressClient:
    """An HTTP client that refuses any destination outside its allow-list.

    Args:
        allowed: ``host:port`` pairs (or base URLs) that may be contacted.
        timeout: Seconds for connect, read and write.
    """

    def __init__(self, allowed: Iterable[str], *, timeout: float = 30.0) -> None:
        self._allowed = frozenset(a if "://" not in a else destination_of(a) for a in allowed)
        self._timeout = timeout
        self._lock = threading.Lock()
        self._client: httpx.Client | None = None

    @property
    def allowed(self) -> frozenset[str]:
        """The destinations this client may reach."""
        return self._allowed

    def _http(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                # trust_env=False: a stray HTTP(S)_PROXY variable must not reroute egress silently.
                self._client = httpx.Client(timeout=self._timeout, trust_env=False)
            return self._client

    def request(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Send one request if its destination is allowed.

        Raises:
            EgressPolicyError: If the destination is not on the allow-list.
            httpx.HTTPError: On network failures and timeouts.
        """
        destination = destination_of(url)
        if destination not in self._allowed:
            raise EgressPolicyError(f"egress to {destination} is not on the allow-list")
        return self._http().request(method, url, json=json, params=params, headers=headers)

    def close(self) -> None:
        """Close pooled connections."""
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
