"""Policy hooks for the providers' SDKs: a real boto3 Braket client against local endpoints."""

from __future__ import annotations

import hashlib
import json
import secrets
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import botocore.hooks
import pytest
from botocore.config import Config
from botocore.credentials import InstanceMetadataProvider
from botocore.exceptions import ClientError, NoCredentialsError

from qhybrid.gateway.audit import AuditLog, verify
from qhybrid.gateway.context import current_job, get_current_job
from qhybrid.gateway.egress import EgressAuditError, EgressPolicyError
from qhybrid.gateway.routes import RouteTable
from qhybrid.gateway.sdk import (
    BRAKET_TOKEN_TAG,
    RequestsPolicy,
    SdkHookError,
    attach_botocore,
    audit_sdk_submission,
    botocore_session,
    braket_routes,
    hooked_aws_session,
    install_requests_guard,
    self_test,
    stdlib_tls_labels,
)
from qhybrid.gateway.tokens import TokenMinter
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


# --- the route table for Braket -------------------------------------------------------------------

TOKENS = TokenMinter(secrets.token_bytes(32))
ROUTES = braket_routes(region="us-east-1", bucket="amazon-braket-test", prefix="qhybrid", tokens=TOKENS)
#: A program as qiskit-braket-provider converts ours (no include, Braket's gate names, b[] bits).
BRAKET_SOURCE = "OPENQASM 3.0;\nbit[1] b;\nqubit[1] q;\nh q[0];\nrz(0.123457) q[0];\nb[0] = measure q[0];\n"


def action(source: str) -> str:
    return json.dumps(
        {"braketSchemaHeader": {"name": "braket.ir.openqasm.program", "version": "1"}, "source": source}
    )


def routed_client(url: str, tmp_path: Path) -> tuple[Any, AuditLog]:
    audit = AuditLog(tmp_path / "egress.log")
    client = braket_client(url)
    attach_botocore(client, allowed=[url], audit=audit, allow_plaintext=True, routes=ROUTES)
    return client, audit


def create_request(**changes: Any) -> dict[str, Any]:
    token = TOKENS.mint()
    request: dict[str, Any] = {
        "action": action(BRAKET_SOURCE),
        "deviceArn": DEVICE,
        "outputS3Bucket": "amazon-braket-test",
        "outputS3KeyPrefix": "qhybrid",
        "shots": 100,
        "clientToken": token,
        "tags": {BRAKET_TOKEN_TAG: token},
    }
    request.update(changes)
    return request


def test_declared_braket_requests_pass_the_route_table(
    endpoint: tuple[str, list[tuple[str, str, bytes]]], tmp_path: Path
) -> None:
    url, seen = endpoint
    client, audit = routed_client(url, tmp_path)
    client.create_quantum_task(**create_request())
    client.get_device(deviceArn=DEVICE)
    assert [method for method, _, _ in seen] == ["POST", "GET"]
    assert [e["note"] for e in entries(audit.path)] == [
        "botocore braket.CreateQuantumTask; plaintext http (development only)",
        "botocore braket.GetDevice; plaintext http (development only)",
    ]


@pytest.mark.parametrize(
    "changes",
    [
        {"clientToken": "0123456789abcdef0123456789abcdef"},  # chosen, not minted
        {"outputS3Bucket": "attacker-bucket"},
        {"outputS3KeyPrefix": "qhybrid/../elsewhere"},
        {"deviceArn": "arn:aws:braket:us-west-1::device/qpu/rigetti/Ankaa-3"},  # another region
        {"shots": 10**9},
        {"tags": {BRAKET_TOKEN_TAG: "0123456789abcdef0123456789abcdef", "portfolio": "ACME"}},
        {
            "action": json.dumps(
                {
                    "braketSchemaHeader": {"name": "braket.ir.openqasm.program"},
                    "source": PROGRAM + "// AAPL 1200000\n",
                }
            )
        },
        {
            "action": json.dumps(
                {
                    "braketSchemaHeader": {"name": "braket.ir.openqasm.program"},
                    "source": PROGRAM.replace("h q[0];", "rz(0.717273838485868) q[0];"),
                }
            )
        },
    ],
    ids=[
        "chosen-token",
        "other-bucket",
        "other-prefix",
        "other-region",
        "shots",
        "extra-tag",
        "comment",
        "smuggling-angle",
    ],
)
def test_braket_submissions_off_the_route_table_are_refused(
    endpoint: tuple[str, list[tuple[str, str, bytes]]], tmp_path: Path, changes: dict[str, Any]
) -> None:
    url, seen = endpoint
    client, audit = routed_client(url, tmp_path)
    request = create_request()
    request.update(changes)
    if "clientToken" in changes and "tags" not in changes:
        request["tags"] = {BRAKET_TOKEN_TAG: changes["clientToken"]}
    with pytest.raises(EgressPolicyError, match="refused at the boundary"):
        client.create_quantum_task(**request)
    assert seen == []
    assert entries(audit.path) == []


def test_undeclared_operations_are_refused(
    endpoint: tuple[str, list[tuple[str, str, bytes]]], tmp_path: Path
) -> None:
    url, seen = endpoint
    client, _ = routed_client(url, tmp_path)
    with pytest.raises(EgressPolicyError, match="not declared"):
        client.list_tags_for_resource(resourceArn=DEVICE)
    with pytest.raises(EgressPolicyError, match="refused at the boundary"):
        client.get_device(deviceArn="arn:aws:braket:eu-north-1::device/qpu/iqm/Garnet")
    assert seen == []


# --- instance metadata and copied sessions ----------------------------------------------------------


class _Metadata(BaseHTTPRequestHandler):
    """Stands in for the EC2 instance metadata service: records every probe, answers 404."""

    probes: list[str]

    def do_PUT(self) -> None:
        self.probes.append(f"PUT {self.path}")
        self._nothing()

    def do_GET(self) -> None:
        self.probes.append(f"GET {self.path}")
        self._nothing()

    def _nothing(self) -> None:
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def metadata_service(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[list[str]]:
    """A loopback metadata service botocore is pointed at, and an environment without credentials."""
    probes: list[str] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("Handler", (_Metadata,), {"probes": probes}))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_EC2_METADATA_DISABLED", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                 "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_WEB_IDENTITY_TOKEN_FILE"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}/")
    yield probes
    server.shutdown()
    server.server_close()


def test_without_credentials_the_metadata_service_is_never_probed(
    metadata_service: list[str], endpoint: tuple[str, list[tuple[str, str, bytes]]], tmp_path: Path
) -> None:
    url, seen = endpoint
    session = botocore_session(region="us-east-1")
    client = session.client("braket", endpoint_url=url)
    attach_botocore(client, allowed=[url], audit=AuditLog(tmp_path / "a.log"), allow_plaintext=True)
    with pytest.raises(NoCredentialsError):
        client.get_device(deviceArn=DEVICE)
    assert metadata_service == []
    assert seen == []
    # Positive control: the same without the switch probes the (stand-in) metadata service.
    allowed = botocore_session(region="us-east-1", instance_metadata=True).client("braket", endpoint_url=url)
    with pytest.raises(NoCredentialsError):
        allowed.get_device(deviceArn=DEVICE)
    assert metadata_service != []


def test_instance_metadata_addresses_are_refused_by_the_hooks(tmp_path: Path) -> None:
    client = braket_client("https://169.254.169.254")
    attach_botocore(client, allowed=["169.254.169.254:443"], audit=AuditLog(tmp_path / "a.log"))
    with pytest.raises(EgressPolicyError, match="instance metadata"):
        client.get_device(deviceArn=DEVICE)


def test_copied_braket_sessions_are_hooked(
    endpoint: tuple[str, list[tuple[str, str, bytes]]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, seen = endpoint
    audit = AuditLog(tmp_path / "egress.log")
    boto_session = boto3.Session(
        aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="not-a-real-secret", region_name="us-east-1"
    )

    def hook(target: Any) -> None:
        attach_botocore(target, allowed=[url], audit=audit, allow_plaintext=True, routes=ROUTES)

    session = hooked_aws_session(region="us-east-1", hook=hook, boto_session=boto_session)
    # A copy in the same region talks to Braket's real endpoint: refused by the copy's own hook,
    # before any socket (an unhooked copy would try to reach braket.us-east-1.amazonaws.com).
    copied = session.copy_session()
    assert copied is not session and copied.boto_session is not session.boto_session
    with pytest.raises(EgressPolicyError, match="allow-list"):
        copied.braket_client.get_device(deviceArn=DEVICE)
    with pytest.raises(EgressPolicyError, match="allow-list"):
        session.copy_session(region="eu-north-1").braket_client.get_device(deviceArn=DEVICE)
    # Pointed at the local endpoint (Braket's own BRAKET_ENDPOINT), a copy's request is audited.
    monkeypatch.setenv("BRAKET_ENDPOINT", url)
    session.copy_session(max_connections=4).braket_client.get_device(deviceArn=DEVICE)
    assert len(seen) == 1
    assert [e["note"] for e in entries(audit.path)] == [
        "botocore braket.GetDevice; plaintext http (development only)"
    ]
    # ... and a copy's credential chain has no instance metadata provider either.
    chain = copied.boto_session._session.get_component("credential_provider").providers
    assert not any(isinstance(provider, InstanceMetadataProvider) for provider in chain)


# --- the start-up self-test -------------------------------------------------------------------------


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[AuditLog]:
    audit = AuditLog(tmp_path / "self-test.log")
    install_requests_guard(RequestsPolicy(allowed=frozenset(), routes=RouteTable([]), audit=audit))
    yield audit
    install_requests_guard(None)


def test_self_test_passes_when_every_hook_fires(guarded: AuditLog) -> None:
    self_test(guarded)
    assert not guarded.path.exists()  # everything was refused before the audit


def test_self_test_fails_closed_when_the_requests_guard_is_lifted(tmp_path: Path) -> None:
    install_requests_guard(None)
    with pytest.raises(SdkHookError, match="requests"):
        self_test(AuditLog(tmp_path / "a.log"))


def test_self_test_fails_closed_when_botocore_stops_emitting_the_event(
    guarded: AuditLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As if botocore renamed "before-send": our handler is registered, the event never comes.
    original = botocore.hooks.HierarchicalEmitter.register

    def register(self: Any, event_name: str, handler: Any, *args: Any, **kwargs: Any) -> None:
        original(self, event_name.replace("before-send", "before-send-renamed"), handler, *args, **kwargs)

    monkeypatch.setattr(botocore.hooks.HierarchicalEmitter, "register", register)
    with pytest.raises(SdkHookError, match="botocore"):
        self_test(guarded)


def test_self_test_fails_closed_when_httpcore_renames_its_trace_events(
    guarded: AuditLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    import httpcore._trace

    original = httpcore._trace.Trace.trace

    def renamed(self: Any, name: str, info: dict[str, Any]) -> None:
        original(self, name.replace("start_tls", "begin_tls"), info)

    monkeypatch.setattr(httpcore._trace.Trace, "trace", renamed)
    with pytest.raises(SdkHookError, match="httpcore"):
        self_test(guarded)
