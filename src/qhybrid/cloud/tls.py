"""The cloud's HTTPS front: TLS terminated with pyOpenSSL, bytes relayed to the internal HTTP app.

Python's ``ssl`` module is bound to the system OpenSSL (3.0 here), which has no ML-KEM; the
OpenSSL inside ``cryptography`` has it, and pyOpenSSL drives that one. So uvicorn serves plain HTTP
on an internal endpoint (a unix socket in the data directory, or a private loopback port), and
:class:`TlsFront` listens on the public address, performs each handshake and relays the bytes.

Each connection gets one thread. TLS runs over memory BIOs: OpenSSL never touches a socket, the
thread alone reads and writes them, so a stalled or vanished client can only ever block its own
thread, for at most the configured timeouts.

The certificate is self-signed (ECDSA P-256, SAN ``localhost`` and ``127.0.0.1``), made on first
start under ``<data_dir>/tls/`` and reused afterwards, so clients can pin it as their CA file.
Every handshake, successful or not, adds one JSON line to ``<data_dir>/tls.log``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import logging
import os
import secrets
import select
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL
from OpenSSL._util import lib as _openssl_lib

logger = logging.getLogger(__name__)

#: TLS versions the front can be limited to, by the names the configuration uses.
TLS_VERSIONS: dict[str, int] = {"1.2": SSL.TLS1_2_VERSION, "1.3": SSL.TLS1_3_VERSION}

#: Where to reach the internal HTTP app: a unix socket path, or a ``(host, port)`` pair.
UpstreamAddress = str | tuple[str, int]

_CHUNK = 65536
_CERT_NAME = "cert.pem"
_KEY_NAME = "key.pem"
_CERT_LIFETIME = dt.timedelta(days=365)
# A certificate this close to its end is replaced at start rather than left to expire mid-run.
_CERT_RENEW_MARGIN = dt.timedelta(days=7)
# TLS 1.2 suites: forward-secret AEAD only, as a current provider would offer (TLS 1.3 suites are
# configured separately by OpenSSL and are all of that kind already).
_TLS12_CIPHERS = b"ECDHE+AESGCM:ECDHE+CHACHA20"


# --- certificate ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CertificateFiles:
    """The PEM files of the front's certificate.

    Attributes:
        cert: The certificate; clients pin it as their CA file.
        key: Its private key (mode 0600).
        sha256: Hex SHA-256 fingerprint of the certificate (DER), for logs.
    """

    cert: Path
    key: Path
    sha256: str


def _fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def _reusable(cert_path: Path, key_path: Path, now: dt.datetime) -> x509.Certificate | None:
    """The stored certificate if it is readable, matches its key and stays valid for a while."""
    if not (cert_path.is_file() and key_path.is_file()):
        return None
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        logger.warning("stored TLS certificate unreadable (%s); making a new one", exc)
        return None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(serialization.Encoding.DER, public) != key.public_key().public_bytes(
        serialization.Encoding.DER, public
    ):
        logger.warning("stored TLS certificate does not match its key; making a new one")
        return None
    if cert.not_valid_after_utc - now < _CERT_RENEW_MARGIN:
        logger.warning("stored TLS certificate expires %s; making a new one", cert.not_valid_after_utc)
        return None
    return cert


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    # Written beside the target then renamed: a crash never leaves half a PEM file to reuse.
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def ensure_certificate(directory: Path, *, now: dt.datetime | None = None) -> CertificateFiles:
    """Reuse the certificate stored in ``directory``, or make a new self-signed one there.

    The certificate is ECDSA P-256 with SAN ``DNS:localhost`` and ``IP:127.0.0.1``, valid for a
    year; it is replaced when unreadable, not matching its key, or within a week of expiry.

    Args:
        directory: Where ``cert.pem`` and ``key.pem`` live (created with mode 0700 if needed).
        now: The current time (for tests).

    Returns:
        The certificate and key files.
    """
    now = now or dt.datetime.now(dt.UTC)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    cert_path, key_path = directory / _CERT_NAME, directory / _KEY_NAME
    existing = _reusable(cert_path, key_path, now)
    if existing is not None:
        files = CertificateFiles(cert=cert_path, key=key_path, sha256=_fingerprint(existing))
        logger.info("reusing TLS certificate %s (sha256 %s)", cert_path.resolve(), files.sha256)
        return files

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "qhybrid emulated quantum cloud")])
    public_key = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        # A little slack backwards, for clients whose clock lags behind.
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _CERT_LIFETIME)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.IPv4Address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # Key first: a cert without its key is never left behind to be picked up next time.
    _write_atomically(key_path, key_pem, 0o600)
    _write_atomically(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    files = CertificateFiles(cert=cert_path, key=key_path, sha256=_fingerprint(cert))
    logger.info("generated self-signed TLS certificate %s (sha256 %s)", cert_path.resolve(), files.sha256)
    return files


# --- context -------------------------------------------------------------------------------------


def set_groups(context: SSL.Context, groups: str) -> None:
    """Set the key-exchange groups a pyOpenSSL context offers, e.g. ``X25519MLKEM768:X25519``.

    pyOpenSSL has no setter for the group list (``set_tmp_ecdh`` takes one classic curve), so
    this calls OpenSSL's ``SSL_CTX_set1_groups_list`` through the binding pyOpenSSL itself uses,
    where it keeps its historical name ``SSL_CTX_set1_curves_list``.

    Args:
        context: A context not yet used by any connection.
        groups: Group names separated by ``:``, most preferred first.

    Raises:
        ValueError: If OpenSSL does not know one of the groups.
    """
    if _openssl_lib.SSL_CTX_set1_curves_list(context._context, groups.encode("ascii")) != 1:
        # Leave no stale error behind for the next pyOpenSSL call to trip over.
        _openssl_lib.ERR_clear_error()
        raise ValueError(f"unsupported TLS groups {groups!r}")


def build_server_context(
    files: CertificateFiles, *, groups: str, min_version: str = "1.2", max_version: str = "1.3"
) -> SSL.Context:
    """A server context with the certificate, the version range and the groups.

    Args:
        files: Certificate and key.
        groups: Key-exchange groups, ``:``-separated, most preferred first.
        min_version: Lowest version accepted, ``"1.2"`` or ``"1.3"``.
        max_version: Highest version offered; ``"1.2"`` makes a TLS-1.2-only peer.

    Raises:
        ValueError: On an unknown version or group, or a version range that is empty.
    """
    try:
        low, high = TLS_VERSIONS[min_version], TLS_VERSIONS[max_version]
    except KeyError as exc:
        raise ValueError(f"TLS version must be one of {sorted(TLS_VERSIONS)}, got {exc.args[0]!r}") from exc
    if low > high:
        raise ValueError(f"TLS min version {min_version} is above max version {max_version}")
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    context.set_min_proto_version(low)
    context.set_max_proto_version(high)
    context.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_NO_RENEGOTIATION | SSL.OP_CIPHER_SERVER_PREFERENCE)
    context.set_cipher_list(_TLS12_CIPHERS)
    context.use_certificate_file(str(files.cert))
    context.use_privatekey_file(str(files.key))
    context.check_privatekey()
    set_groups(context, groups)
    return context


# --- front ---------------------------------------------------------------------------------------


class _StopRequestedError(Exception):
    """The front is shutting down."""


class _HandshakeError(Exception):
    """The handshake did not complete; the message says why."""


def _ssl_reason(exc: SSL.Error) -> str:
    """OpenSSL's reasons for an error, as one line (``unsupported protocol``...)."""
    queue = exc.args[0] if exc.args else None
    if isinstance(queue, list) and queue:
        return "; ".join(str(entry[-1]) for entry in queue if isinstance(entry, tuple) and entry)
    return str(exc) or type(exc).__name__


def _peer_text(peer: Any) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        host = f"[{peer[0]}]" if ":" in str(peer[0]) else str(peer[0])
        return f"{host}:{peer[1]}"
    return str(peer)


class TlsFront:
    """Accepts TLS connections on a public address and relays each one to the internal app.

    Args:
        host: Interface to listen on.
        port: TCP port; 0 picks a free one (see :attr:`port` after :meth:`bind`).
        upstream: Where the internal HTTP app listens.
        context: The server TLS context (see :func:`build_server_context`).
        log_path: The handshake log (JSON lines, appended to).
        handshake_timeout: Seconds a client has to complete its handshake.
        io_timeout: Seconds a single write to either side may block.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        upstream: UpstreamAddress,
        context: SSL.Context,
        log_path: Path,
        handshake_timeout: float = 10.0,
        io_timeout: float = 30.0,
    ) -> None:
        self._address = (host, port)
        self._upstream = upstream
        self._context = context
        self._log_path = log_path
        self._handshake_timeout = handshake_timeout
        self._io_timeout = io_timeout
        self._listener: socket.socket | None = None
        # Writing one byte makes the read end readable for good: every select() then sees the stop.
        self._wake_r, self._wake_w = socket.socketpair()
        self._stopped = False
        self._lock = threading.Lock()
        self._log_lock = threading.Lock()
        self._accept_thread: threading.Thread | None = None
        self._connections: dict[threading.Thread, socket.socket] = {}
        self._counter = 0

    @property
    def port(self) -> int:
        """The port actually listened on."""
        if self._listener is None:
            raise RuntimeError("TLS front is not bound")
        return int(self._listener.getsockname()[1])

    def bind(self) -> None:
        """Bind and listen on the public address (before :meth:`start`, so errors come early).

        Raises:
            OSError: If the address cannot be bound (e.g. the port is taken).
        """
        family = socket.AF_INET6 if ":" in self._address[0] else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            # A restarted cloud must get its port back despite connections left in TIME_WAIT.
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(self._address)
            listener.listen(128)
        except BaseException:
            listener.close()
            raise
        self._listener = listener

    def start(self) -> None:
        """Start accepting connections on a background thread."""
        if self._listener is None:
            self.bind()
        if self._accept_thread is not None:
            raise RuntimeError("TLS front already started")
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name="qcloud-tls-accept", daemon=True
        )
        self._accept_thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, close every connection and wait for the threads (up to ``timeout``)."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            connections = dict(self._connections)
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        for sock in connections.values():
            # Unblocks a thread stuck writing to a client that does not read.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        threads = [self._accept_thread] if self._accept_thread is not None else []
        for thread in [*threads, *connections]:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                logger.warning("TLS thread %s still busy at shutdown; abandoning it", thread.name)
        if self._listener is not None:
            self._listener.close()
        self._wake_r.close()
        self._wake_w.close()

    # --- accepting ---------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None  # start() binds first
        while True:
            readable, _, _ = select.select([listener, self._wake_r], [], [])
            if self._wake_r in readable:
                return
            try:
                raw, peer = listener.accept()
            except OSError as exc:
                # The client gave up between the poll and the accept; nothing to do.
                logger.debug("accept failed: %s", exc)
                continue
            with self._lock:
                if self._stopped:
                    raw.close()
                    return
                self._counter += 1
                thread = threading.Thread(
                    target=self._serve, args=(raw, peer), name=f"qcloud-tls-{self._counter}", daemon=True
                )
                self._connections[thread] = raw
            thread.start()

    def _serve(self, raw: socket.socket, peer: Any) -> None:
        peer_text = _peer_text(peer)
        upstream: socket.socket | None = None
        try:
            raw.settimeout(self._io_timeout)
            tls = SSL.Connection(self._context, None)  # memory BIOs: see the module docstring
            tls.set_accept_state()
            try:
                self._handshake(tls, raw)
            except _HandshakeError as exc:
                self._log_handshake(peer_text, tls, error=str(exc))
                return
            self._log_handshake(peer_text, tls, error=None)
            upstream = self._connect_upstream()
            self._relay(tls, raw, upstream)
        except _StopRequestedError:
            pass
        except Exception as exc:
            # Anything a client does to its connection ends that connection only.
            logger.info("TLS connection from %s ended: %s: %s", peer_text, type(exc).__name__, exc)
        finally:
            for sock in (upstream, raw):
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.close()
            with self._lock:
                self._connections.pop(threading.current_thread(), None)

    # --- one connection ----------------------------------------------------------------------

    def _wait_readable(self, sockets: list[socket.socket], timeout: float | None) -> list[socket.socket]:
        readable, _, _ = select.select([*sockets, self._wake_r], [], [], timeout)
        if self._wake_r in readable:
            raise _StopRequestedError
        return readable

    @staticmethod
    def _flush(tls: SSL.Connection, raw: socket.socket) -> None:
        """Send the client whatever TLS records OpenSSL has produced."""
        while True:
            try:
                data = tls.bio_read(_CHUNK)
            except SSL.WantReadError:
                return
            raw.sendall(data)

    def _handshake(self, tls: SSL.Connection, raw: socket.socket) -> None:
        deadline = time.monotonic() + self._handshake_timeout
        while True:
            try:
                tls.do_handshake()
            except SSL.WantReadError:
                self._flush(tls, raw)
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._wait_readable([raw], remaining):
                    raise _HandshakeError(f"no handshake within {self._handshake_timeout:g}s") from None
                try:
                    data = raw.recv(_CHUNK)
                except OSError as exc:
                    raise _HandshakeError(f"connection lost during the handshake: {exc}") from exc
                if not data:
                    raise _HandshakeError("client closed the connection during the handshake") from None
                tls.bio_write(data)
            except SSL.Error as exc:
                # OpenSSL queued an alert for the client (e.g. protocol_version): deliver it.
                with contextlib.suppress(OSError):
                    self._flush(tls, raw)
                raise _HandshakeError(_ssl_reason(exc)) from exc
            else:
                # The server's last flight (and TLS 1.3 session tickets) are still in the BIO.
                try:
                    self._flush(tls, raw)
                except OSError as exc:
                    raise _HandshakeError(f"connection lost during the handshake: {exc}") from exc
                return

    def _connect_upstream(self) -> socket.socket:
        if isinstance(self._upstream, str):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(self._io_timeout)
        try:
            sock.connect(self._upstream)
        except BaseException:
            sock.close()
            raise
        return sock

    def _relay(self, tls: SSL.Connection, raw: socket.socket, upstream: socket.socket) -> None:
        """Pump bytes both ways until either side closes."""
        # The client's first request may have arrived with its last handshake flight: it is in
        # OpenSSL's buffer already, and no socket will signal it.
        if not self._decrypt_to(tls, upstream):
            return
        while True:
            readable = self._wait_readable([raw, upstream], None)
            if raw in readable:
                data = raw.recv(_CHUNK)
                if not data:
                    return  # the client hung up
                tls.bio_write(data)
                client_open = self._decrypt_to(tls, upstream)
                self._flush(tls, raw)  # e.g. an answer to a TLS 1.3 KeyUpdate
                if not client_open:
                    return
            if upstream in readable:
                data = upstream.recv(_CHUNK)
                if not data:
                    # The app closed: idle keep-alive, or an injected fault. Close like a server
                    # does, with close_notify; the client sees the connection end right here.
                    with contextlib.suppress(SSL.Error):
                        tls.shutdown()
                    with contextlib.suppress(OSError):
                        self._flush(tls, raw)
                    return
                tls.sendall(data)
                self._flush(tls, raw)

    @staticmethod
    def _decrypt_to(tls: SSL.Connection, upstream: socket.socket) -> bool:
        """Forward all plaintext OpenSSL can decrypt so far; False once the client sent close_notify."""
        while True:
            try:
                data = tls.recv(_CHUNK)
            except SSL.WantReadError:
                return True
            except SSL.ZeroReturnError:
                return False
            upstream.sendall(data)

    def _log_handshake(self, peer: str, tls: SSL.Connection, *, error: str | None) -> None:
        record: dict[str, Any] = {
            "time": dt.datetime.now(dt.UTC).isoformat(),
            "peer": peer,
            "ok": error is None,
            "version": None,
            "group": None,
            "cipher": None,
            "sni": None,
        }
        if error is None:
            server_name = tls.get_servername()
            record.update(
                version=tls.get_protocol_version_name(),
                group=tls.get_group_name(),
                cipher=tls.get_cipher_name(),
                sni=server_name.decode("ascii", "replace") if server_name else None,
            )
            logger.debug(
                "TLS handshake with %s: %s %s %s", peer, record["version"], record["group"], record["cipher"]
            )
        else:
            record["error"] = error
            logger.info("TLS handshake with %s failed: %s", peer, error)
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with self._log_lock, self._log_path.open("a", encoding="utf-8") as log:
            log.write(line)
