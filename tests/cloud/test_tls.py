"""The cloud's HTTPS front: negotiated versions and groups, the certificate, hostile clients."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import stat
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from OpenSSL import SSL

from qhybrid.cloud.tls import ensure_certificate, set_groups
from tests.cloud.helpers import CloudServer, start_cloud

HEALTH_REQUEST = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


def _timeout(sock: socket.socket, seconds: int = 10) -> None:
    # pyOpenSSL needs a blocking socket; an OS-level receive timeout still bounds every read.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", seconds, 0))


def pyopenssl_get_health(
    port: int, ca_file: Path, *, groups: str = "X25519MLKEM768"
) -> tuple[dict[str, Any], bytes, int]:
    """Handshake with pyOpenSSL, GET /healthz, return (what was negotiated, answer, local port)."""
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    set_groups(context, groups)
    context.load_verify_locations(str(ca_file))
    context.set_verify(SSL.VERIFY_PEER)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.setblocking(True)
        _timeout(raw)
        conn = SSL.Connection(context, raw)
        conn.set_tlsext_host_name(b"localhost")
        conn.set_connect_state()
        conn.do_handshake()
        negotiated = {
            "version": conn.get_protocol_version_name(),
            "group": conn.get_group_name(),
            "cipher": conn.get_cipher_name(),
        }
        conn.sendall(HEALTH_REQUEST)
        answer = b""
        while True:
            try:
                chunk = conn.recv(65536)
            except (SSL.ZeroReturnError, SSL.SysCallError):
                break
            if not chunk:
                break
            answer += chunk
        return negotiated, answer, int(raw.getsockname()[1])


def stdlib_get_health(port: int, context: ssl.SSLContext) -> tuple[str | None, bytes, int]:
    """Handshake with Python's ssl module, GET /healthz, return (version, answer, local port)."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(HEALTH_REQUEST)
        answer = b""
        while chunk := tls.recv(65536):
            answer += chunk
        return tls.version(), answer, int(tls.getsockname()[1])


def wait_log(
    cloud: CloudServer, wanted: Callable[[dict[str, Any]], bool], *, count: int = 1, since: int = 0
) -> list[dict[str, Any]]:
    """The tls.log records from the ``since``-th on that ``wanted`` picks, once there are ``count``.

    The server writes a record on the connection's thread, possibly after the client has seen
    the handshake end, so the log is polled briefly.
    """
    deadline = time.monotonic() + 5
    while len(entries := [e for e in cloud.tls_log()[since:] if wanted(e)]) < count:
        assert time.monotonic() < deadline, cloud.tls_log()[-5:]
        time.sleep(0.05)
    assert len(entries) == count, entries
    return entries


def log_entry(cloud: CloudServer, local_port: int) -> dict[str, Any]:
    """The tls.log record of the connection made from ``local_port``."""
    return wait_log(cloud, lambda e: e["peer"] == f"127.0.0.1:{local_port}")[0]


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudServer]:
    server = start_cloud(tmp_path_factory.mktemp("cloud-tls"))
    try:
        yield server
    finally:
        server.process.stop()


# --- certificate (no process) --------------------------------------------------------------------


def test_certificate_is_made_once_then_reused(tmp_path: Path) -> None:
    first = ensure_certificate(tmp_path / "tls")
    cert = x509.load_pem_x509_certificate(first.cert.read_bytes())
    public_key = cert.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    assert public_key.curve.name == "secp256r1"
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.IPv4Address("127.0.0.1")]
    assert stat.S_IMODE(first.key.stat().st_mode) == 0o600

    again = ensure_certificate(tmp_path / "tls")
    assert again == first
    # Close to expiry it is replaced, so that a long-lived data dir does not end up refused.
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=364)
    renewed = ensure_certificate(tmp_path / "tls", now=later)
    assert renewed.sha256 != first.sha256


# --- the real process ----------------------------------------------------------------------------


@pytest.mark.integration
def test_pyopenssl_client_gets_tls13_with_ml_kem(cloud: CloudServer) -> None:
    assert cloud.ca_file is not None
    negotiated, answer, local_port = pyopenssl_get_health(cloud.port, cloud.ca_file)
    assert negotiated["version"] == "TLSv1.3"
    assert negotiated["group"] == "X25519MLKEM768"
    assert answer.startswith(b"HTTP/1.1 200")
    assert answer.endswith(b'{"status":"ok"}')

    entry = log_entry(cloud, local_port)
    assert entry["ok"] is True
    assert (entry["version"], entry["group"], entry["cipher"]) == (
        "TLSv1.3",
        "X25519MLKEM768",
        negotiated["cipher"],
    )
    assert entry["sni"] == "localhost"
    assert dt.datetime.fromisoformat(entry["time"]).tzinfo is not None


@pytest.mark.integration
def test_stdlib_ssl_client_still_connects_with_x25519(cloud: CloudServer) -> None:
    assert cloud.ca_file is not None
    context = ssl.create_default_context(cafile=str(cloud.ca_file))
    context.verify_flags |= ssl.VERIFY_X509_STRICT  # the certificate passes strict checks too
    version, answer, local_port = stdlib_get_health(cloud.port, context)
    assert version == "TLSv1.3"
    assert answer.startswith(b"HTTP/1.1 200")
    group = log_entry(cloud, local_port)["group"]
    if ssl.OPENSSL_VERSION_INFO < (3, 5):  # no ML-KEM in this OpenSSL: the classical fallback
        assert group == "x25519"
    else:
        assert group in ("x25519", "X25519MLKEM768")


@pytest.mark.integration
def test_client_without_a_common_group_is_refused(cloud: CloudServer) -> None:
    assert cloud.ca_file is not None
    before = len(cloud.tls_log())
    with pytest.raises(SSL.Error):
        pyopenssl_get_health(cloud.port, cloud.ca_file, groups="P-384")
    [failure] = wait_log(cloud, lambda e: not e["ok"], since=before)
    assert failure["version"] is None
    assert failure["error"]


@pytest.mark.integration
def test_clients_dropping_mid_handshake_do_not_hurt_the_server(cloud: CloudServer) -> None:
    assert cloud.ca_file is not None
    # A real ClientHello, made in memory, to cut in the middle.
    client = SSL.Connection(SSL.Context(SSL.TLS_CLIENT_METHOD), None)
    client.set_connect_state()
    with pytest.raises(SSL.WantReadError):
        client.do_handshake()
    hello = client.bio_read(65536)
    before = len(cloud.tls_log())

    with socket.create_connection(("127.0.0.1", cloud.port)):
        pass  # connects and leaves at once
    with socket.create_connection(("127.0.0.1", cloud.port)) as raw:
        raw.sendall(hello[: len(hello) // 2])
    with socket.create_connection(("127.0.0.1", cloud.port)) as raw:
        raw.sendall(hello[: len(hello) // 2])
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST on close
    with socket.create_connection(("127.0.0.1", cloud.port), timeout=10) as raw:
        raw.sendall(HEALTH_REQUEST)  # plain HTTP to the TLS port
        assert b"HTTP" not in raw.recv(100)  # closed (at most an alert), never answered

    _, answer, _ = pyopenssl_get_health(cloud.port, cloud.ca_file)
    assert answer.startswith(b"HTTP/1.1 200")
    assert cloud.process.alive()
    failures = wait_log(cloud, lambda e: not e["ok"], count=4, since=before)
    assert all(e["error"] for e in failures)


@pytest.mark.integration
def test_tls12_only_server_and_certificate_reuse(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    old = start_cloud(tmp_path, name="tls12", data_dir=data_dir, extra_args=["--tls-max-version", "1.2"])
    try:
        assert old.ca_file is not None
        pem = old.ca_file.read_bytes()
        key = (data_dir / "tls" / "key.pem").read_bytes()

        modern_only = ssl.create_default_context(cafile=str(old.ca_file))
        modern_only.minimum_version = ssl.TLSVersion.TLSv1_3
        with pytest.raises(ssl.SSLError):
            stdlib_get_health(old.port, modern_only)

        version, answer, local_port = stdlib_get_health(
            old.port, ssl.create_default_context(cafile=str(old.ca_file))
        )
        assert version == "TLSv1.2"
        assert answer.startswith(b"HTTP/1.1 200")
        entry = log_entry(old, local_port)
        assert entry["version"] == "TLSv1.2"
        assert entry["group"] == "x25519"  # ML-KEM hybrids exist in TLS 1.3 only
        assert entry["cipher"].startswith("ECDHE-ECDSA-")

        # P-256 as well: TLS 1.2 only uses an ECDSA P-256 certificate with clients offering that curve.
        negotiated, _, _ = pyopenssl_get_health(old.port, old.ca_file, groups="X25519MLKEM768:X25519:P-256")
        assert (negotiated["version"], negotiated["group"]) == ("TLSv1.2", "x25519")
    finally:
        old.process.stop()
    assert old.process.popen.returncode == 0

    new = start_cloud(tmp_path, name="tls13", port=old.port, data_dir=data_dir)
    try:
        assert new.ca_file is not None
        assert new.ca_file.read_bytes() == pem  # clients that pinned it keep working
        assert (data_dir / "tls" / "key.pem").read_bytes() == key
        negotiated, _, _ = pyopenssl_get_health(new.port, new.ca_file)
        assert (negotiated["version"], negotiated["group"]) == ("TLSv1.3", "X25519MLKEM768")
    finally:
        new.process.stop()
    assert new.process.popen.returncode == 0
    log = new.process.log()
    assert "reusing TLS certificate" in log
    assert f"qhybrid cloud ready on https://127.0.0.1:{new.port}" in log
    assert str(new.ca_file.resolve()) in log
    assert not (data_dir / "app.sock").exists()  # removed at shutdown
