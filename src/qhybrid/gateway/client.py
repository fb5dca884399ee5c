"""The egress gateway: the only code in the trusted zone that opens connections to the public zone.

Today it enforces a destination allow-list, timeouts and TLS 1.2 or later (verified against a
pinned CA file or the system CAs) over one pooled HTTP client. Payload validation, the stricter TLS
policy and the audit log attach here, so every adapter inherits them.
"""

from __future__ import annotations

import os
import ssl
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
        ca_file: PEM file of the certificate(s) that https servers must chain to (e.g. the emulated
            cloud's self-signed certificate); the system CAs when ``None``.
    """

    def __init__(
        self,
        allowed: Iterable[str],
        *,
        timeout: float = 30.0,
        ca_file: str | os.PathLike[str] | None = None,
    ) -> None:
        self._allowed = frozenset(a if "://" not in a else destination_of(a) for a in allowed)
        self._timeout = timeout
        self._ca_file = ca_file
        self._lock = threading.Lock()
        self._client: httpx.Client | None = None

    @property
    def allowed(self) -> frozenset[str]:
        """The destinations this client may reach."""
        return self._allowed

    def _tls_context(self) -> ssl.SSLContext:
        """Certificate and host name checked, TLS 1.2 at least."""
        try:
            context = ssl.create_default_context(
                cafile=None if self._ca_file is None else os.fspath(self._ca_file)
            )
        except (OSError, ssl.SSLError) as exc:
            # Built on first use rather than at construction, so that a client may be set up before
            # the server has written its certificate; a bad file is a configuration error.
            raise EgressPolicyError(f"cannot load the CA file {self._ca_file}: {exc}") from exc
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context

    def _http(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                # trust_env=False: a stray HTTP(S)_PROXY variable must not reroute egress silently.
                self._client = httpx.Client(
                    timeout=self._timeout, trust_env=False, verify=self._tls_context()
                )
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
            EgressPolicyError: If the destination is not on the allow-list, or the CA file is unusable.
            httpx.HTTPError: On network failures, TLS failures and timeouts.
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
