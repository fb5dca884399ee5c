"""TLS for the egress gateway, done with pyOpenSSL so that the key exchange can be post-quantum.

Python's ``ssl`` module is bound to the system OpenSSL (3.0 here), which has no ML-KEM and cannot
report the negotiated group. pyOpenSSL drives the OpenSSL bundled with ``cryptography`` (4.x), which
offers the hybrid group ``X25519MLKEM768`` and tells which group a handshake settled on. So the
gateway plugs its own :class:`httpcore.NetworkBackend` into httpx: TCP is httpcore's own, and
``start_tls`` is a pyOpenSSL handshake under a :class:`TlsPolicy`:

* versions below ``min_version`` are refused by the context itself (TLS 1.3 only by default);
* the peer's chain must verify against ``ca_file`` (or the system CA bundle), and its name or IP
  address must match the URL's host, which OpenSSL checks during the handshake;
* the groups offered are ``groups`` (``X25519MLKEM768:X25519`` by default);
* with ``require_pqc`` the connection is closed, before any request byte, unless the group
  negotiated is a hybrid post-quantum one (:data:`PQC_HYBRID_GROUPS`).

What was negotiated is available as :class:`TlsFacts` through
``stream.get_extra_info("qhybrid_tls")``, for the audit log and for display.

The socket is non-blocking under OpenSSL: every operation loops on ``WantRead``/``WantWrite``
and waits with ``poll`` until its deadline, so a peer that stalls costs at most the timeout.
"""

from __future__ import annotations

import contextlib
import ipaddress
import math
import os
import select
import socket
import ssl
import threading
import time
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import httpcore
from OpenSSL import SSL
from OpenSSL._util import ffi as _ffi
from OpenSSL._util import lib as _lib

#: TLS versions a policy may require as its minimum, by the names the configuration uses.
TLS_VERSIONS: dict[str, int] = {"1.2": SSL.TLS1_2_VERSION, "1.3": SSL.TLS1_3_VERSION}

#: Hybrid key exchanges (a classical group plus ML-KEM) as OpenSSL names them. A session
#: recorded today stays safe against a future quantum computer only if one of these was used.
PQC_HYBRID_GROUPS: frozenset[str] = frozenset({"X25519MLKEM768", "SecP256r1MLKEM768", "SecP384r1MLKEM1024"})

#: A group list for ``min_version="1.2"`` policies: the hybrid group first for TLS 1.3 peers,
#: then X25519, then P-256 so that TLS 1.2 peers with ECDSA P-256 certificates can be verified.
TLS12_COMPATIBLE_GROUPS = "X25519MLKEM768:X25519:P-256"

# TLS 1.2 suites: forward-secret AEAD only (the TLS 1.3 suites are all of that kind already).
_TLS12_CIPHERS = b"ECDHE+AESGCM:ECDHE+CHACHA20"
_CHUNK = 65536

_T = typing.TypeVar("_T")


def is_pqc_hybrid(group: str | None) -> bool:
    """Whether ``group`` (as OpenSSL reports it) is one of :data:`PQC_HYBRID_GROUPS`."""
    if group is None:
        return False
    return group.lower() in {name.lower() for name in PQC_HYBRID_GROUPS}


class TlsPolicyError(Exception):
    """A connection or configuration the TLS policy refuses (not a network failure)."""


def _set_groups(context: SSL.Context, groups: str) -> None:
    """Set the key-exchange groups a context offers, most preferred first.

    pyOpenSSL has no setter for the group list, so this calls OpenSSL's ``SSL_CTX_set1_groups_list``
    through the binding pyOpenSSL itself uses (under its historical name ``..._curves_list``).

    Raises:
        TlsPolicyError: If OpenSSL does not know one of the groups.
    """
    if _lib.SSL_CTX_set1_curves_list(context._context, groups.encode("ascii")) != 1:
        # Leave no stale error in OpenSSL's queue for the next pyOpenSSL call to trip over.
        _lib.ERR_clear_error()
        raise TlsPolicyError(f"unsupported TLS groups {groups!r}")


@dataclass(frozen=True)
class TlsPolicy:
    """How egress TLS connections must be made.

    Attributes:
        min_version: Lowest TLS version accepted, ``"1.3"`` (default) or ``"1.2"``.
        groups: Key-exchange groups offered, ``:``-separated, most preferred first. With
            ``min_version="1.2"``, add the curve of the peers' ECDSA certificates (usually
            ``P-256``): TLS 1.2 also takes this list as the curves the client can verify
            signatures on, and a server with a P-256 certificate otherwise finds "no shared
            cipher" (TLS 1.3 keeps the two apart). See :data:`TLS12_COMPATIBLE_GROUPS`.
        require_pqc: Refuse any connection whose negotiated group is not a hybrid post-quantum one.
        ca_file: PEM file of the certificates peers must chain to; the system CA bundle when ``None``.
    """

    min_version: Literal["1.2", "1.3"] = "1.3"
    groups: str = "X25519MLKEM768:X25519"
    require_pqc: bool = False
    ca_file: Path | None = None

    def __post_init__(self) -> None:
        if self.min_version not in TLS_VERSIONS:
            raise ValueError(f"min_version must be one of {sorted(TLS_VERSIONS)}, got {self.min_version!r}")
        given: object = self.ca_file
        if given is not None and not isinstance(given, Path):
            # Accept str and os.PathLike from configuration code; frozen, hence object.__setattr__.
            object.__setattr__(self, "ca_file", Path(typing.cast("str | os.PathLike[str]", given)))
        names = self.groups.split(":")
        if not self.groups.isascii() or not all(names):
            raise ValueError(f"groups must be ':'-separated OpenSSL group names, got {self.groups!r}")
        if self.require_pqc and not any(is_pqc_hybrid(name) for name in names):
            raise ValueError(
                f"require_pqc with groups {self.groups!r}: none of them is post-quantum "
                f"(one of {sorted(PQC_HYBRID_GROUPS)} is needed)"
            )
        try:
            # Typos surface at configuration time, not at the first submission.
            _set_groups(SSL.Context(SSL.TLS_CLIENT_METHOD), self.groups)
        except TlsPolicyError as exc:
            raise ValueError(str(exc)) from None


@dataclass(frozen=True)
class TlsFacts:
    """What one TLS handshake negotiated.

    Attributes:
        version: Protocol version, e.g. ``TLSv1.3``.
        group: Key-exchange group, e.g. ``X25519MLKEM768``; ``None`` if OpenSSL reports none.
        cipher: Cipher suite, e.g. ``TLS_AES_256_GCM_SHA384``.
        peer: The address connected to, ``host:port``.
    """

    version: str
    group: str | None
    cipher: str | None
    peer: str

    @property
    def post_quantum(self) -> bool:
        """Whether the key exchange was a hybrid post-quantum one."""
        return is_pqc_hybrid(self.group)


def _load_system_cas(context: SSL.Context) -> None:
    """The system CA bundle, as the stdlib finds it (honours ``SSL_CERT_FILE``/``SSL_CERT_DIR``).

    pyOpenSSL's own defaults point into the OpenSSL build inside the ``cryptography`` wheel,
    which usually holds no certificates at all, so the paths come from the system OpenSSL.
    """
    paths = ssl.get_default_verify_paths()
    cafile = paths.cafile if paths.cafile and Path(paths.cafile).is_file() else None
    capath = paths.capath if paths.capath and Path(paths.capath).is_dir() else None
    if cafile is None and capath is None:
        raise TlsPolicyError("no system CA bundle found; configure a CA file")
    context.load_verify_locations(cafile, capath)


def build_client_context(policy: TlsPolicy) -> SSL.Context:
    """A pyOpenSSL client context enforcing ``policy`` (versions, ciphers, groups, trust).

    Args:
        policy: The policy; its CA file is read now.

    Returns:
        A context ready for :class:`SSL.Connection` objects (shared by many connections).

    Raises:
        TlsPolicyError: If the CA file (or the system bundle) cannot be loaded, or a group is unknown.
    """
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    context.set_min_proto_version(TLS_VERSIONS[policy.min_version])
    context.set_max_proto_version(SSL.TLS1_3_VERSION)
    context.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_NO_RENEGOTIATION)
    context.set_cipher_list(_TLS12_CIPHERS)
    # No callback: OpenSSL's own chain verification decides, and a failure aborts the handshake.
    context.set_verify(SSL.VERIFY_PEER)
    try:
        if policy.ca_file is not None:
            context.load_verify_locations(str(policy.ca_file))
        else:
            _load_system_cas(context)
    except (SSL.Error, OSError) as exc:
        _lib.ERR_clear_error()
        what = f"CA file {policy.ca_file}" if policy.ca_file is not None else "system CA bundle"
        raise TlsPolicyError(f"cannot load the {what}: {_ssl_reason(exc)}") from exc
    _set_groups(context, policy.groups)
    return context


def _ssl_reason(exc: BaseException) -> str:
    """OpenSSL's reasons for an error as one line (``certificate verify failed``...)."""
    queue = exc.args[0] if exc.args else None
    if isinstance(queue, list) and queue:
        return "; ".join(str(entry[-1]) for entry in queue if isinstance(entry, tuple) and entry)
    if isinstance(exc, SSL.SysCallError) and len(exc.args) == 2:
        return f"connection lost ({exc.args[1]})"
    return str(exc) or type(exc).__name__


def _address_text(address: Any) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host = f"[{address[0]}]" if ":" in str(address[0]) else str(address[0])
        return f"{host}:{address[1]}"
    return str(address)


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def _wait(sock: socket.socket, *, write: bool, deadline: float | None) -> bool:
    """Wait until ``sock`` is readable (or writable); False when the deadline passes first."""
    poller = select.poll()
    poller.register(sock, select.POLLOUT if write else select.POLLIN)
    while True:
        if deadline is None:
            wait_ms: int | None = None
        else:
            wait_ms = max(0, math.ceil((deadline - time.monotonic()) * 1000))
        # Errors and hang-ups count as ready: the next SSL call reports them properly.
        if poller.poll(wait_ms):
            return True
        if deadline is not None and time.monotonic() >= deadline:
            return False


class TlsStream(httpcore.NetworkStream):
    """An established, verified pyOpenSSL connection (see :meth:`PlainStream.start_tls`).

    ``get_extra_info("qhybrid_tls")`` returns its :class:`TlsFacts`.
    """

    def __init__(self, sock: socket.socket, connection: SSL.Connection, facts: TlsFacts) -> None:
        self._sock = sock
        self._connection = connection
        self._facts = facts
        self._closed = False

    def _pump(
        self, operation: typing.Callable[[], _T], deadline: float | None, timeout_error: type[Exception]
    ) -> _T:
        """Run one SSL operation to completion, waiting on the socket as OpenSSL asks."""
        while True:
            try:
                return operation()
            except SSL.WantReadError:
                write = False
            except SSL.WantWriteError:
                write = True
            if not _wait(self._sock, write=write, deadline=deadline):
                raise timeout_error("timed out")

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        """Up to ``max_bytes`` of plaintext; ``b""`` once the peer closed properly (close_notify).

        Raises:
            httpcore.ReadTimeout: If nothing arrives within ``timeout`` seconds.
            httpcore.ReadError: If the connection breaks, including an end without close_notify.
        """
        try:
            return self._pump(
                lambda: self._connection.recv(max_bytes), _deadline(timeout), httpcore.ReadTimeout
            )
        except SSL.ZeroReturnError:
            return b""
        except (SSL.Error, OSError) as exc:
            # An end without close_notify is an error, not an end: it could be a truncation.
            raise httpcore.ReadError(_ssl_reason(exc)) from exc

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        """Send all of ``buffer``.

        Raises:
            httpcore.WriteTimeout: If it cannot all be sent within ``timeout`` seconds.
            httpcore.WriteError: If the connection breaks.
        """
        deadline = _deadline(timeout)
        view = memoryview(buffer)
        while view:
            chunk = view[:_CHUNK]
            try:
                sent = self._pump(partial(self._connection.send, chunk), deadline, httpcore.WriteTimeout)
            except (SSL.Error, OSError) as exc:
                raise httpcore.WriteError(_ssl_reason(exc)) from exc
            view = view[sent:]

    def close(self) -> None:
        """Send close_notify if the socket takes it right away, then close the socket."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(SSL.Error, OSError):
            self._connection.shutdown()
        self._sock.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        """TLS inside TLS (proxies) is not an egress path."""
        raise httpcore.ConnectError("TLS over TLS is not supported by the egress gateway")

    def get_extra_info(self, info: str) -> Any:
        """Connection details by name.

        ``qhybrid_tls`` (the :class:`TlsFacts`), ``socket``, ``client_addr``, ``server_addr`` and
        ``is_readable``; ``ssl_object`` is ``None``: there is no stdlib object, and httpcore then
        speaks HTTP/1.1, the only protocol offered.
        """
        if info == "qhybrid_tls":
            return self._facts
        if info == "socket":
            return self._sock
        if info == "client_addr":
            return self._sock.getsockname()
        if info == "server_addr":
            return self._sock.getpeername()
        if info == "is_readable":
            return self._connection.pending() > 0 or _wait(self._sock, write=False, deadline=time.monotonic())
        return None


class PlainStream(httpcore.NetworkStream):
    """A TCP connection not yet (or never) under TLS; :meth:`start_tls` applies the policy."""

    def __init__(self, inner: httpcore.NetworkStream, backend: PolicyNetworkBackend, peer: str) -> None:
        self._inner = inner
        self._backend = backend
        self._peer = peer

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        """Read plaintext (only plain ``http`` egress, which the client allows in development only)."""
        return self._inner.read(max_bytes, timeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        """Write plaintext (see :meth:`read`)."""
        self._inner.write(buffer, timeout)

    def close(self) -> None:
        """Close the socket."""
        self._inner.close()

    def get_extra_info(self, info: str) -> Any:
        """What httpcore's own stream reports (``socket``, addresses...)."""
        return self._inner.get_extra_info(info)

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        """Handshake with pyOpenSSL under the backend's :class:`TlsPolicy`.

        Args:
            ssl_context: Ignored: httpcore hands over a stdlib context, which cannot do ML-KEM;
                the policy's pyOpenSSL context is used instead.
            server_hostname: The URL's host: sent as SNI (names only) and checked against the
                certificate (names and IP addresses).
            timeout: Seconds for the whole handshake.

        Returns:
            A :class:`TlsStream`.

        Raises:
            httpcore.ConnectTimeout: If the handshake does not finish in time.
            httpcore.ConnectError: If it fails (version, certificate, name, network).
            TlsPolicyError: If the CA file cannot be loaded, or ``require_pqc`` holds and the
                group negotiated is not post-quantum.
        """
        try:
            return self._handshake(server_hostname, timeout)
        except BaseException:
            self._inner.close()
            raise

    def _handshake(self, server_hostname: str | None, timeout: float | None) -> TlsStream:
        if not server_hostname:
            raise httpcore.ConnectError("TLS needs the server's name to verify its certificate")
        policy = self._backend.policy
        context = self._backend.context()
        sock: socket.socket = self._inner.get_extra_info("socket")
        sock.setblocking(False)
        connection = SSL.Connection(context, sock)
        connection.set_connect_state()
        connection.set_alpn_protos([b"http/1.1"])
        _expect_peer(connection, server_hostname)
        deadline = _deadline(timeout)
        while True:
            try:
                connection.do_handshake()
                break
            except SSL.WantReadError:
                write = False
            except SSL.WantWriteError:
                write = True
            except (SSL.Error, OSError) as exc:
                raise httpcore.ConnectError(
                    f"TLS handshake with {self._peer} failed: {_handshake_reason(connection, exc)}"
                ) from exc
            if not _wait(sock, write=write, deadline=deadline):
                raise httpcore.ConnectTimeout(f"TLS handshake with {self._peer} timed out after {timeout}s")
        facts = TlsFacts(
            version=connection.get_protocol_version_name(),
            group=connection.get_group_name(),
            cipher=connection.get_cipher_name(),
            peer=self._peer,
        )
        stream = TlsStream(sock, connection, facts)
        # Belt and braces: the context enforces both, but a refusal here costs nothing.
        verified = _lib.SSL_get_verify_result(connection._ssl) == _lib.X509_V_OK
        if not verified or facts.version not in _versions_from(policy.min_version):
            stream.close()
            raise httpcore.ConnectError(
                f"TLS with {self._peer}: {facts.version}, verified={verified}: refused"
            )
        if policy.require_pqc and not facts.post_quantum:
            stream.close()
            raise TlsPolicyError(
                f"TLS with {self._peer} negotiated group {facts.group or 'unknown'} ({facts.version}), "
                "not a hybrid post-quantum key exchange; refused (require_pqc)"
            )
        return stream


def _versions_from(minimum: str) -> tuple[str, ...]:
    return ("TLSv1.2", "TLSv1.3") if minimum == "1.2" else ("TLSv1.3",)


def _expect_peer(connection: SSL.Connection, host: str) -> None:
    """Have OpenSSL check the certificate against ``host`` during the handshake; SNI for names.

    pyOpenSSL has no API for this; ``X509_VERIFY_PARAM_set1_host``/``_set1_ip`` on the
    connection's parameters make a mismatch fail the handshake like a bad chain would.
    """
    param = _lib.SSL_get0_param(connection._ssl)
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        address = None
    if address is not None:
        packed = address.packed
        ok = _lib.X509_VERIFY_PARAM_set1_ip(param, _ffi.new("unsigned char[]", packed), len(packed))
    else:
        name = host.encode("ascii")
        _lib.X509_VERIFY_PARAM_set_hostflags(param, _lib.X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS)
        ok = _lib.X509_VERIFY_PARAM_set1_host(param, name, len(name))
        connection.set_tlsext_host_name(name)
    if ok != 1:
        _lib.ERR_clear_error()
        raise httpcore.ConnectError(f"cannot set up name verification for {host!r}")


def _handshake_reason(connection: SSL.Connection, exc: BaseException) -> str:
    """Why a handshake failed, with the certificate check's own reason when that was it."""
    reason = _ssl_reason(exc)
    code = _lib.SSL_get_verify_result(connection._ssl)
    if code != _lib.X509_V_OK:
        detail = _ffi.string(_lib.X509_verify_cert_error_string(code)).decode("ascii", "replace")
        return f"certificate verify failed: {detail} ({reason})"
    return reason


class PolicyNetworkBackend(httpcore.NetworkBackend):
    """An httpcore network backend whose ``start_tls`` is a pyOpenSSL handshake under ``policy``.

    The pyOpenSSL context is built on first use, so a client may be set up before the peer's
    certificate exists; a CA file that cannot be read is reported on each attempt until it can.

    Args:
        policy: The TLS policy every connection must meet.
    """

    def __init__(self, policy: TlsPolicy) -> None:
        self.policy = policy
        self._tcp = httpcore.SyncBackend()
        self._lock = threading.Lock()
        self._context: SSL.Context | None = None

    def context(self) -> SSL.Context:
        """The shared client context (built now if needed).

        Raises:
            TlsPolicyError: If it cannot be built (e.g. the CA file is unreadable).
        """
        with self._lock:
            if self._context is None:
                self._context = build_client_context(self.policy)
            return self._context

    def reset(self) -> None:
        """Forget the context, so that the next connection reads the CA file again."""
        with self._lock:
            self._context = None

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        """Open a TCP connection (httpcore's own connect, with its error mapping).

        Raises:
            httpcore.ConnectError: If the connection cannot be made.
            httpcore.ConnectTimeout: If it is not made within ``timeout`` seconds.
        """
        inner = self._tcp.connect_tcp(
            host, port, timeout=timeout, local_address=local_address, socket_options=socket_options
        )
        try:
            peer = _address_text(inner.get_extra_info("server_addr"))
        except OSError:
            peer = f"{host}:{port}"
        return PlainStream(inner, self, peer)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        """Unix sockets never lead out of the trusted zone: refused."""
        raise httpcore.ConnectError("unix sockets are not an egress path")

    def sleep(self, seconds: float) -> None:
        """Sleep (between httpcore's connection retries)."""
        time.sleep(seconds)
