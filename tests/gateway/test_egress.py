"""The egress client against REAL emulated-cloud processes: TLS policy, audit, refusals.

"Nothing was sent" is checked on the cloud's side: ``received.log`` records every HTTP request
byte for byte, and ``tls.log`` every handshake.
"""

from __future__ import annotations

import hashlib
import json
import select
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from qhybrid.backends.base import PermanentBackendError, TransientBackendError
from qhybrid.backends.emulated_cloud import EmulatedCloudBackend
from qhybrid.cloud.tls import ensure_certificate
from qhybrid.gateway.audit import AuditLog, verify
from qhybrid.gateway.context import current_job
from qhybrid.gateway.egress import (
    EgressAuditError,
    EgressPayloadError,
    EgressPolicyError,
    EgressTlsPolicyError,
)
from qhybrid.gateway.tls import TLS12_COMPATIBLE_GROUPS, PolicyNetworkBackend, TlsFacts, TlsPolicy
from tests.support.cloud import TOKENS, CloudServer, egress_to, start_cloud

pytestmark = pytest.mark.integration

PROGRAM = (
    'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[2] q;\nbit[2] c;\nx q[0];\n'
    "c[0] = measure q[0];\nc[1] = measure q[1];\n"
)


@pytest.fixture(scope="module")
def tls12_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudServer]:
    """A provider that speaks TLS 1.2 at most."""
    server = start_cloud(
        tmp_path_factory.mktemp("tls12"), name="cloud-tls12", extra_args=["--tls-max-version", "1.2"]
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def classical_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudServer]:
    """A provider that offers only the classical X25519 key exchange."""
    server = start_cloud(
        tmp_path_factory.mktemp("x25519"), name="cloud-x25519", extra_args=["--tls-groups", "X25519"]
    )
    yield server
    server.stop()


def submission(cloud: CloudServer, token: str | None = None) -> dict[str, Any]:
    return {
        "device": "emulator",
        "program": PROGRAM,
        "shots": 10,
        "client_token": token or TOKENS.mint(),
    }


def auth(cloud: CloudServer) -> dict[str, str]:
    return {"Authorization": f"Bearer {cloud.token}"}


def received(cloud: CloudServer) -> bytes:
    path = cloud.data_dir / "received.log"
    return path.read_bytes() if path.exists() else b""


def handshakes_after(cloud: CloudServer, count: int, *, timeout: float = 5.0) -> list[dict[str, Any]]:
    """``tls.log`` once it has more than ``count`` records (the front logs after its own side ends)."""
    deadline = time.monotonic() + timeout
    while len(records := cloud.tls_log()) <= count and time.monotonic() < deadline:
        time.sleep(0.02)
    return records[count:]


def audit_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_default_link_is_tls13_hybrid_pqc_and_audited(cloud_process: CloudServer, tmp_path: Path) -> None:
    cloud = cloud_process
    audit = AuditLog(tmp_path / "audit" / "egress.log")
    client = egress_to(cloud.base_url, token=cloud.token, ca_file=cloud.ca_file, audit=audit)
    body = submission(cloud)
    try:
        with current_job("job-42"):
            response = client.request("POST", f"{cloud.base_url}/v1/tasks", json=body)
            assert response.status_code in (200, 201), response.text
            task_id = response.json()["task_id"]
            poll = client.request("GET", f"{cloud.base_url}/v1/tasks/{task_id}")
            assert poll.status_code == 200
    finally:
        client.close()

    facts = response.extensions["qhybrid_tls"]
    assert isinstance(facts, TlsFacts)
    assert (facts.version, facts.group, facts.post_quantum) == ("TLSv1.3", "X25519MLKEM768", True)
    assert poll.extensions["qhybrid_tls"] is not facts  # each request has a handshake of its own
    assert client.last_tls(cloud.base_url) == poll.extensions["qhybrid_tls"]

    entries = audit_lines(audit.path)
    assert [e["method"] for e in entries] == ["POST", "GET"]
    post, get = entries
    sent = json.dumps(body, separators=(",", ":")).encode()
    assert sent in received(cloud)  # the exact bytes hashed are the bytes the cloud got
    assert (post["sha256"], post["size"]) == (hashlib.sha256(sent).hexdigest(), len(sent))
    assert (post["tls_version"], post["tls_group"]) == ("TLSv1.3", "X25519MLKEM768")
    assert post["tls_cipher"] == facts.cipher
    assert (post["job_id"], post["note"], post["path"]) == ("job-42", "submission", "/v1/tasks")
    assert post["destination"] == f"127.0.0.1:{cloud.port}"
    assert (get["size"], get["sha256"]) == (0, hashlib.sha256(b"").hexdigest())
    assert get["job_id"] == "job-42"
    assert cloud.token not in audit.path.read_text()  # no bearer token, no headers
    assert verify(audit.path).ok
    handshakes = [r for r in cloud.tls_log() if r["ok"]][-2:]
    assert [r["group"] for r in handshakes] == ["X25519MLKEM768", "X25519MLKEM768"]


def test_tls12_only_peer_is_refused_and_nothing_is_sent(tls12_cloud: CloudServer, tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "egress.log")
    client = egress_to(
        tls12_cloud.base_url, token=tls12_cloud.token, ca_file=tls12_cloud.ca_file, audit=audit
    )
    before = received(tls12_cloud)
    handshakes = len(tls12_cloud.tls_log())
    body = submission(tls12_cloud)
    try:
        with pytest.raises(httpx.ConnectError, match=r"TLS handshake .* failed: .*protocol version"):
            client.request("POST", f"{tls12_cloud.base_url}/v1/tasks", json=body)
    finally:
        client.close()
    assert received(tls12_cloud) == before
    assert audit_lines(audit.path) == []
    (refused,) = handshakes_after(tls12_cloud, handshakes)
    assert refused["ok"] is False


def test_tls12_peer_is_accepted_when_the_policy_allows_it(tls12_cloud: CloudServer, tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "egress.log")
    policy = TlsPolicy(min_version="1.2", groups=TLS12_COMPATIBLE_GROUPS, ca_file=tls12_cloud.ca_file)
    client = egress_to(tls12_cloud.base_url, token=tls12_cloud.token, tls=policy, audit=audit)
    try:
        response = client.request("GET", f"{tls12_cloud.base_url}/healthz")
    finally:
        client.close()
    assert response.status_code == 200
    facts = response.extensions["qhybrid_tls"]
    assert facts.version == "TLSv1.2"
    assert not facts.post_quantum  # ML-KEM needs TLS 1.3
    assert audit_lines(audit.path)[0]["tls_version"] == "TLSv1.2"


def test_classical_peer_is_recorded_as_such_or_refused_with_require_pqc(
    classical_cloud: CloudServer, tmp_path: Path
) -> None:
    cloud = classical_cloud
    audit = AuditLog(tmp_path / "egress.log")
    accepting = egress_to(cloud.base_url, token=cloud.token, ca_file=cloud.ca_file, audit=audit)
    try:
        response = accepting.request("GET", f"{cloud.base_url}/v1/devices/emulator")
    finally:
        accepting.close()
    assert response.status_code == 200
    assert response.extensions["qhybrid_tls"].group.lower() == "x25519"
    assert audit_lines(audit.path)[0]["tls_group"].lower() == "x25519"

    strict = egress_to(
        cloud.base_url, token=cloud.token, tls=TlsPolicy(require_pqc=True, ca_file=cloud.ca_file), audit=audit
    )
    handshakes = len(cloud.tls_log())
    before = received(cloud)
    body = submission(cloud)
    try:
        with pytest.raises(EgressTlsPolicyError, match=r"x25519.*not a hybrid post-quantum"):
            strict.request("POST", f"{cloud.base_url}/v1/tasks", json=body)
    finally:
        strict.close()
    assert received(cloud) == before
    assert len(audit_lines(audit.path)) == 1  # the refused request was never audited: never sent
    assert handshakes_after(cloud, handshakes)[0]["group"] == "x25519"  # the handshake ran; then we hung up

    # Through the adapter, a policy refusal is permanent: retrying cannot change the peer's groups.
    adapter = EmulatedCloudBackend(name="cloud", base_url=cloud.base_url, device="emulator", egress=strict)
    with pytest.raises(PermanentBackendError, match="require_pqc"):
        adapter.submit(PROGRAM, 10, TOKENS.mint())
    assert received(cloud) == before


def test_require_pqc_accepts_the_hybrid_peer(cloud_process: CloudServer) -> None:
    client = egress_to(
        cloud_process.base_url,
        token=cloud_process.token,
        tls=TlsPolicy(require_pqc=True, ca_file=cloud_process.ca_file),
    )
    try:
        response = client.request("GET", f"{cloud_process.base_url}/healthz")
    finally:
        client.close()
    assert response.extensions["qhybrid_tls"].group == "X25519MLKEM768"


def test_wrong_ca_is_refused(cloud_process: CloudServer, tmp_path: Path) -> None:
    other = ensure_certificate(tmp_path / "other-ca")
    client = egress_to(cloud_process.base_url, token=cloud_process.token, ca_file=other.cert)
    before = received(cloud_process)
    try:
        with pytest.raises(httpx.ConnectError, match="certificate verify failed"):
            client.request("GET", f"{cloud_process.base_url}/healthz")
    finally:
        client.close()
    assert received(cloud_process) == before


def test_unreadable_ca_file_is_a_policy_error(cloud_process: CloudServer, tmp_path: Path) -> None:
    client = egress_to(cloud_process.base_url, token=cloud_process.token, ca_file=tmp_path / "missing.pem")
    with pytest.raises(EgressTlsPolicyError, match="CA file"):
        client.request("GET", f"{cloud_process.base_url}/healthz")


def test_certificate_name_must_match_the_host(cloud_process: CloudServer) -> None:
    backend = PolicyNetworkBackend(TlsPolicy(ca_file=cloud_process.ca_file))
    stream = backend.connect_tcp("127.0.0.1", cloud_process.port, timeout=5)
    with pytest.raises(Exception, match="hostname mismatch"):
        stream.start_tls(ssl.create_default_context(), server_hostname="provider.example", timeout=5)
    # ... and the name the certificate does carry passes.
    good = backend.connect_tcp("127.0.0.1", cloud_process.port, timeout=5)
    tls = good.start_tls(ssl.create_default_context(), server_hostname="localhost", timeout=5)
    assert tls.get_extra_info("qhybrid_tls").group == "X25519MLKEM768"
    tls.close()


@pytest.fixture
def silent_listener() -> Iterator[socket.socket]:
    """A TCP port that accepts connections (in the kernel backlog) and never says anything."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    yield listener
    listener.close()


def test_plain_http_is_refused_by_default(silent_listener: socket.socket) -> None:
    url = f"http://127.0.0.1:{silent_listener.getsockname()[1]}"
    client = egress_to(url)
    with pytest.raises(EgressPolicyError, match="https only"):
        client.request("GET", f"{url}/healthz")
    readable, _, _ = select.select([silent_listener], [], [], 0.2)
    assert readable == []  # not even a TCP connection was attempted


def test_handshake_timeout(silent_listener: socket.socket) -> None:
    url = f"https://127.0.0.1:{silent_listener.getsockname()[1]}"
    client = egress_to(url, timeout=0.5)
    started = time.monotonic()
    with pytest.raises(httpx.ConnectTimeout):
        client.request("GET", f"{url}/healthz")
    assert time.monotonic() - started < 3.0


@pytest.mark.parametrize("make_unwritable", ["directory-in-place", "parent-is-a-file"])
def test_unwritable_audit_sends_nothing(
    cloud_process: CloudServer, tmp_path: Path, make_unwritable: str
) -> None:
    cloud = cloud_process
    if make_unwritable == "directory-in-place":
        path = tmp_path / "egress.log"
        path.mkdir()
    else:
        (tmp_path / "audit").write_text("a file where the directory should be")
        path = tmp_path / "audit" / "egress.log"
    client = egress_to(cloud.base_url, token=cloud.token, ca_file=cloud.ca_file, audit=AuditLog(path))
    adapter = EmulatedCloudBackend(name="cloud", base_url=cloud.base_url, device="emulator", egress=client)
    token = TOKENS.mint()
    handshakes = len(cloud.tls_log())
    before = received(cloud)
    with pytest.raises(TransientBackendError, match="audit") as caught:
        adapter.submit(PROGRAM, 10, token)
    assert isinstance(caught.value.__cause__, EgressAuditError)
    with pytest.raises(EgressAuditError):
        client.request("GET", f"{cloud.base_url}/healthz")
    # The handshakes happened (the audit comes after them), the requests never did.
    assert len(handshakes_after(cloud, handshakes + 1)) == 1
    assert len(cloud.tls_log()) == handshakes + 2
    assert received(cloud) == before
    assert token not in cloud.submissions()


def test_bad_payload_is_refused_before_connecting(cloud_process: CloudServer, tmp_path: Path) -> None:
    cloud = cloud_process
    audit = AuditLog(tmp_path / "egress.log")
    client = egress_to(cloud.base_url, token=cloud.token, ca_file=cloud.ca_file, audit=audit)
    adapter = EmulatedCloudBackend(name="cloud", base_url=cloud.base_url, device="emulator", egress=client)
    handshakes = len(cloud.tls_log())
    with pytest.raises(PermanentBackendError, match="line 5: literal") as caught:
        adapter.submit(PROGRAM.replace("x q[0];", "rz(pi) q[0];"), 10, TOKENS.mint())
    assert isinstance(caught.value.__cause__, EgressPayloadError)
    with pytest.raises(EgressPayloadError, match="client_token"):
        client.request(
            "POST",
            f"{cloud.base_url}/v1/tasks",
            json=submission(cloud, token="not-hex"),
        )
    assert len(cloud.tls_log()) == handshakes  # not even a TCP connection
    assert audit_lines(audit.path) == []


def test_concurrent_requests_keep_one_valid_chain(cloud_process: CloudServer, tmp_path: Path) -> None:
    cloud = cloud_process
    audit = AuditLog(tmp_path / "egress.log")
    client = egress_to(cloud.base_url, token=cloud.token, ca_file=cloud.ca_file, audit=audit)
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            with current_job(f"job-{worker}"):
                for _ in range(3):
                    assert client.request("GET", f"{cloud.base_url}/healthz").status_code == 200
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    client.close()
    assert errors == []
    entries = audit_lines(audit.path)
    assert len(entries) == 12
    assert sorted({e["job_id"] for e in entries}) == [f"job-{w}" for w in range(4)]
    assert all(e["tls_group"] == "X25519MLKEM768" for e in entries)
    assert verify(audit.path).ok


def _last_request_headers(cloud: CloudServer, token: str) -> dict[str, str]:
    """The headers of the request in ``received.log`` whose body carries ``token``."""
    for block in reversed(received(cloud).split(b"\n>>> ")):
        head, _, body = block.partition(b"\n\n")
        if token.encode() in body:
            lines = head.decode().splitlines()[1:]
            return dict(line.split(": ", 1) for line in lines)
    raise AssertionError(f"no request with {token} was received")


def test_every_header_that_leaves_is_fixed_by_the_gateway(cloud_process: CloudServer, tmp_path: Path) -> None:
    cloud = cloud_process
    client = egress_to(
        cloud.base_url, token=cloud.token, ca_file=cloud.ca_file, audit=AuditLog(tmp_path / "a.log")
    )
    body = submission(cloud)
    try:
        response = client.request("POST", f"{cloud.base_url}/v1/tasks", json=body)
        assert response.status_code in (200, 201), response.text
    finally:
        client.close()
    headers = _last_request_headers(cloud, body["client_token"])
    assert set(headers) == {
        "host",
        "accept",
        "accept-encoding",
        "user-agent",
        "authorization",
        "content-type",
        "content-length",
        "connection",
    }
    # No HTTP library name or version reaches the public zone.
    assert headers["user-agent"] == "qhybrid-egress"


@pytest.mark.parametrize("header", ["X-Job-Id", "X-Client", "Cookie", "Forwarded", "traceparent"])
def test_headers_beyond_the_allowed_ones_are_refused_before_sending(
    cloud_process: CloudServer, tmp_path: Path, header: str
) -> None:
    cloud = cloud_process
    audit = AuditLog(tmp_path / "a.log")
    client = egress_to(cloud.base_url, token=cloud.token, ca_file=cloud.ca_file, audit=audit)
    before = received(cloud)
    try:
        with pytest.raises(EgressPolicyError, match="refused at the boundary"):
            client.request("GET", f"{cloud.base_url}/v1/tasks/x", headers={**auth(cloud), header: "acme"})
    finally:
        client.close()
    assert received(cloud) == before
    assert not audit.path.exists()


def test_kept_alive_connection_carries_several_requests_each_audited(
    cloud_process: CloudServer, tmp_path: Path
) -> None:
    cloud = cloud_process
    audit = AuditLog(tmp_path / "egress.log")
    client = egress_to(
        cloud.base_url, token=cloud.token, ca_file=cloud.ca_file, audit=audit, keepalive_seconds=30
    )
    handshakes = len(cloud.tls_log())
    try:
        with current_job("job-7"):
            response = client.request("POST", f"{cloud.base_url}/v1/tasks", json=submission(cloud))
            task_id = response.json()["task_id"]
            polls = [client.request("GET", f"{cloud.base_url}/v1/tasks/{task_id}") for _ in range(2)]
    finally:
        client.close()
    assert [p.status_code for p in polls] == [200, 200]
    facts = response.extensions["qhybrid_tls"]
    assert isinstance(facts, TlsFacts) and facts.post_quantum
    assert all(p.extensions["qhybrid_tls"] is facts for p in polls)  # the same connection's facts
    # One handshake for three requests (the front logs it when the connection ends).
    (record,) = handshakes_after(cloud, handshakes)
    time.sleep(0.2)
    assert len(cloud.tls_log()) == handshakes + 1
    assert record["ok"] and record["group"] == "X25519MLKEM768"
    entries = audit_lines(audit.path)
    assert [e["method"] for e in entries] == ["POST", "GET", "GET"]
    assert all((e["tls_version"], e["tls_group"]) == ("TLSv1.3", "X25519MLKEM768") for e in entries)
    assert all(e["tls_cipher"] == facts.cipher and e["job_id"] == "job-7" for e in entries)
    assert "kept-alive" not in entries[0]["note"]
    assert all("kept-alive connection" in e["note"] for e in entries[1:])
    assert verify(audit.path).ok


def test_an_expired_kept_connection_is_not_reused(cloud_process: CloudServer, tmp_path: Path) -> None:
    cloud = cloud_process
    audit = AuditLog(tmp_path / "egress.log")
    client = egress_to(
        cloud.base_url, token=cloud.token, ca_file=cloud.ca_file, audit=audit, keepalive_seconds=0.2
    )
    try:
        first = client.request("GET", f"{cloud.base_url}/healthz")
        time.sleep(0.5)  # longer than the keep-alive: the next request needs a handshake of its own
        second = client.request("GET", f"{cloud.base_url}/healthz")
    finally:
        client.close()
    assert second.extensions["qhybrid_tls"] is not first.extensions["qhybrid_tls"]
    entries = audit_lines(audit.path)
    assert len(entries) == 2
    assert not any("kept-alive" in e["note"] for e in entries)


def test_a_kept_connection_sends_nothing_when_the_audit_fails(
    cloud_process: CloudServer, tmp_path: Path
) -> None:
    cloud = cloud_process
    path = tmp_path / "egress.log"
    client = egress_to(
        cloud.base_url, token=cloud.token, ca_file=cloud.ca_file, audit=AuditLog(path), keepalive_seconds=30
    )
    try:
        client.request("GET", f"{cloud.base_url}/healthz")
        path.unlink()
        path.mkdir()  # the audit cannot be written any more
        before = received(cloud)
        token = TOKENS.mint()
        with pytest.raises(EgressAuditError):
            client.request("POST", f"{cloud.base_url}/v1/tasks", json=submission(cloud, token=token))
    finally:
        client.close()
    time.sleep(0.2)
    assert received(cloud) == before
    assert token not in cloud.submissions()
