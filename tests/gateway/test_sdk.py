"""Policy hooks for the providers' SDKs: a real boto3 Braket client against local endpoints."""

from __future__ import annotations

import hashlib
import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from qhybrid.gateway.audit import AuditLog, verify
from qhybrid.gateway.context import current_job, get_current_job
from qhybrid.gateway.egress import EgressAuditError, EgressPolicyError
from qhybrid.gateway.sdk import attach_botocore, audit_sdk_submission, stdlib_tls_labels
from tests.support.cloud import CloudServer

DEVICE = "arn:aws:braket:::device/quantum-simulator/amazon/sv1"
PROGRAM = 'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[1] q;\nbit[1] c;\nh q[0];\nc[0] = measure q[0];\n'


class _Braketish(BaseHTTPRequestHandler):
    """Answers CreateQuantumTask and GetDevice; records what arrived."""

    seen: list[tuple[str, str, bytes]]

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_POST(self) -> None:
        self.seen.append(("POST", self.path, self._body()))
        self._answer({"quantumTaskArn": "arn:aws:braket:us-east-1:123456789012:quantum-task/abc"})

    def do_GET(self) -> None:
        self.seen.append(("GET", self.path, b""))
        self._answer(
            {
                "deviceArn": DEVICE,
                "deviceName": "SV1",
                "providerName": "Amazon Braket",
                "deviceType": "SIMULATOR",
                "deviceStatus": "ONLINE",
                "deviceCapabilities": "{}",
            }
        )

    def _answer(self, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def endpoint() -> Iterator[tuple[str, list[tuple[str, str, bytes]]]]:
    seen: list[tuple[str, str, bytes]] = []
    handler = type("Handler", (_Braketish,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


def braket_client(url: str, **kwargs: Any) -> Any:
    return boto3.client(
        "braket",
        region_name="us-east-1",
        endpoint_url=url,
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="not-a-real-secret",
        config=Config(retries={"max_attempts": 1, "mode": "standard"}),
        **kwargs,
    )


def create_task(client: Any) -> Any:
    return client.create_quantum_task(
        action=json.dumps(
            {"braketSchemaHeader": {"name": "braket.ir.openqasm.program", "version": "1"}, "source": PROGRAM}
        ),
        deviceArn=DEVICE,
        outputS3Bucket="amazon-braket-test",
        outputS3KeyPrefix="qhybrid",
        shots=100,
        clientToken="0123456789abcdef0123456789abcdef",
    )


def entries(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_botocore_requests_are_audited_with_their_exact_bytes(
    endpoint: tuple[str, list[tuple[str, str, bytes]]], tmp_path: Path
) -> None:
    url, seen = endpoint
    audit = AuditLog(tmp_path / "egress.log")
    client = braket_client(url)
    attach_botocore(client, allowed=[url], audit=audit, allow_plaintext=True)
    attach_botocore(client, allowed=[url], audit=audit, allow_plaintext=True)  # no double entries
    with current_job("job-7"):
        create_task(client)
        client.get_device(deviceArn=DEVICE)
    assert [method for method, _, _ in seen] == ["POST", "GET"]
    post, get = entries(audit.path)
    assert post["sha256"] == hashlib.sha256(seen[0][2]).hexdigest()
    assert post["size"] == len(seen[0][2]) > 0
    assert (post["method"], post["path"], post["job_id"]) == ("POST", "/quantum-task", "job-7")
    assert post["note"].startswith("botocore braket.CreateQuantumTask")
    assert post["tls_version"] is None  # plain http here: recorded as such, never as TLS
    assert (get["method"], get["size"]) == ("GET", 0)
    assert "AKIDEXAMPLE" not in audit.path.read_text()  # no signature, no headers
    assert verify(audit.path).ok


def test_botocore_destination_off_the_allow_list_is_refused(
    endpoint: tuple[str, list[tuple[str, str, bytes]]], tmp_path: Path
) -> None:
    url, seen = endpoint
    audit = AuditLog(tmp_path / "egress.log")
    client = braket_client(url)
    attach_botocore(client, allowed=["braket.us-east-1.amazonaws.com:443"], audit=audit, allow_plaintext=True)
    with pytest.raises(EgressPolicyError, match="allow-list"):
        create_task(client)
    assert seen == []
    assert entries(audit.path) == []


def test_botocore_plain_http_is_refused_by_default(
    endpoint: tuple[str, list[tuple[str, str, bytes]]], tmp_path: Path
) -> None:
    url, seen = endpoint
    client = braket_client(url)
    attach_botocore(client, allowed=[url], audit=AuditLog(tmp_path / "egress.log"))
    with pytest.raises(EgressPolicyError, match="https only"):
        client.get_device(deviceArn=DEVICE)
    assert seen == []


def test_botocore_audit_failure_sends_nothing(
    endpoint: tuple[str, list[tuple[str, str, bytes]]], tmp_path: Path
) -> None:
    url, seen = endpoint
    (tmp_path / "egress.log").mkdir()
    client = braket_client(url)
    attach_botocore(client, allowed=[url], audit=AuditLog(tmp_path / "egress.log"), allow_plaintext=True)
    with pytest.raises(EgressAuditError):
        create_task(client)
    assert seen == []


def test_hook_on_a_session_reaches_its_later_clients(
    endpoint: tuple[str, list[tuple[str, str, bytes]]], tmp_path: Path
) -> None:
    url, seen = endpoint
    audit = AuditLog(tmp_path / "egress.log")
    session = boto3.Session(
        aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="not-a-real-secret", region_name="us-east-1"
    )
    attach_botocore(session, allowed=[url], audit=audit, allow_plaintext=True, job_id_getter=lambda: "job-s")
    session.client("braket", endpoint_url=url).get_device(deviceArn=DEVICE)
    assert len(seen) == 1
    assert entries(audit.path)[0]["job_id"] == "job-s"


def test_botocore_over_https_is_labelled_classical(cloud_process: CloudServer, tmp_path: Path) -> None:
    # The emulated cloud is not Braket: it answers 404, after the request was audited and sent.
    audit = AuditLog(tmp_path / "egress.log")
    assert cloud_process.ca_file is not None
    client = braket_client(cloud_process.base_url, verify=str(cloud_process.ca_file))
    attach_botocore(client, allowed=[cloud_process.base_url], audit=audit)
    with pytest.raises(ClientError):
        client.get_device(deviceArn=DEVICE)
    (entry,) = entries(audit.path)
    assert (entry["tls_version"], entry["tls_group"]) == stdlib_tls_labels("botocore")
    assert entry["tls_cipher"] is None
    if ssl.OPENSSL_VERSION_INFO[:2] < (3, 5):
        assert entry["tls_version"].startswith("TLS (botocore, stdlib ssl / OpenSSL 3.")
        assert entry["tls_group"] == "classical (no ML-KEM in stdlib ssl)"
    stdlib_handshake = [r for r in cloud_process.tls_log() if r["ok"]][-1]
    assert "MLKEM" not in (stdlib_handshake["group"] or "")  # what the label says is what happened


def test_sdk_submission_is_audited_before_the_call(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "egress.log")
    entry = audit_sdk_submission(
        audit,
        destination="https://quantum.cloud.ibm.com",
        payload=PROGRAM.encode(),
        job_id="job-ibm",
        note="qiskit-ibm-runtime SamplerV2.run",
    )
    assert entry["destination"] == "quantum.cloud.ibm.com:443"
    assert entry["sha256"] == hashlib.sha256(PROGRAM.encode()).hexdigest()
    assert entry["note"] == "qiskit-ibm-runtime SamplerV2.run; SDK-serialised; classical TLS via requests"
    assert entry["tls_version"] == stdlib_tls_labels("requests")[0]
    assert entry["method"] == "SDK"
    (tmp_path / "blocked").mkdir()
    with pytest.raises(EgressAuditError):
        audit_sdk_submission(
            AuditLog(tmp_path / "blocked"), destination="quantum.cloud.ibm.com:443", payload=b"x", job_id=None
        )


def test_current_job_nests_and_resets() -> None:
    assert get_current_job() is None
    with current_job("outer"):
        with current_job("inner"):
            assert get_current_job() == "inner"
        assert get_current_job() == "outer"
        seen: list[str | None] = []
        thread = threading.Thread(target=lambda: seen.append(get_current_job()))
        thread.start()
        thread.join()
        assert seen == [None]  # a new thread starts without a job
    assert get_current_job() is None


def test_hook_on_a_braket_aws_session(
    endpoint: tuple[str, list[tuple[str, str, bytes]]], tmp_path: Path
) -> None:
    from braket.aws import AwsSession

    url, seen = endpoint
    audit = AuditLog(tmp_path / "egress.log")
    boto_session = boto3.Session(
        aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="not-a-real-secret", region_name="us-east-1"
    )
    aws = AwsSession(boto_session=boto_session, braket_client=braket_client(url))
    attach_botocore(aws, allowed=[url], audit=audit, allow_plaintext=True)
    aws.braket_client.get_device(deviceArn=DEVICE)  # the client AwsSession already holds
    aws.boto_session.client("braket", endpoint_url=url).get_device(deviceArn=DEVICE)  # one made later
    assert len(seen) == 2
    assert [entry["method"] for entry in entries(audit.path)] == ["GET", "GET"]
