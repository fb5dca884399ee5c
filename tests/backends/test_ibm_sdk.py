"""The REAL qiskit-ibm-runtime SDK under the gateway's policy, against a loopback stand-in for IBM.

Nothing of IBM's can run here, so ``tests/support/ibm_standin.py`` answers IBM's endpoints over
HTTPS on loopback (a named stand-in), and the SDK is pointed at it with its own configuration. The
adapter drives the SDK exactly as a worker does: sign-in (IAM), instance search, the device, the
look-up by the token tag, submission, status, results, usage and cancellation. Every one of those
requests must pass the gateway's ``requests`` guard (allow-list, route table, header policy) and
be in the audit log before it is sent; anything else must be refused before a socket opens.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from qhybrid.backends.base import PermanentBackendError, TransientBackendError
from qhybrid.backends.ibm import IBMBackend
from qhybrid.domain.states import TaskState
from qhybrid.gateway.audit import AuditLog, verify
from qhybrid.gateway.context import current_job
from qhybrid.gateway.egress import EgressPolicyError
from qhybrid.gateway.sdk import (
    SDK_USER_AGENT,
    IbmEndpoints,
    RequestsPolicy,
    ibm_routes,
    install_requests_guard,
)
from qhybrid.gateway.tokens import TokenMinter
from qhybrid.quantum.circuit import transpile_for
from qhybrid.quantum.qasm import to_openqasm3
from tests.support.ibm_standin import API_KEY, BACKEND, CRN, IbmStandin, start_ibm_standin

pytestmark = pytest.mark.integration

TOKENS = TokenMinter(secrets.token_bytes(32))


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IbmStandin]:
    yield from start_ibm_standin(tmp_path_factory.mktemp("ibm-standin"))


@pytest.fixture
def sdk_env(standin: IbmStandin, monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK pointed at the stand-in with IBM's own configuration variables, trusting its CA."""
    monkeypatch.setenv("IAM_URL", standin.base_url)
    monkeypatch.setenv("GLOBAL_SEARCH_URL", f"{standin.base_url}/gs")
    monkeypatch.setenv("GLOBAL_CATALOG_URL", f"{standin.base_url}/gc")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(standin.ca_file))
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


def endpoints(standin: IbmStandin) -> IbmEndpoints:
    return IbmEndpoints.derive(standin.base_url, CRN, api=f"{standin.base_url}/api/v1")


@pytest.fixture
def policy(standin: IbmStandin, sdk_env: None, tmp_path: Path) -> Iterator[RequestsPolicy]:
    """The gateway's requests guard for this account, as a worker installs it; lifted afterwards."""
    where = endpoints(standin)
    guard = RequestsPolicy(
        allowed=where.destinations(),
        routes=ibm_routes(where, api_key=API_KEY, tokens=TOKENS, max_execution_time=300),
        audit=AuditLog(tmp_path / "egress.log"),
        api_key=API_KEY,
        instance=CRN,
    )
    install_requests_guard(guard)
    yield guard
    install_requests_guard(None)


def make_backend(standin: IbmStandin, audit: AuditLog | None) -> IBMBackend:
    return IBMBackend(
        name=f"ibm:{BACKEND}",
        backend_name=BACKEND,
        token=API_KEY,
        instance=CRN,
        url=standin.base_url,
        service_options={"url_resolver": lambda url, instance, private=False, channel=None: f"{url}/api/v1"},
        audit=audit,
    )


def audit_entries(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def bell_program(backend: IBMBackend) -> str:
    from qiskit import QuantumCircuit

    circuit = QuantumCircuit(2, 2)
    circuit.h(0)
    circuit.cx(0, 1)
    circuit.measure([0, 1], [0, 1])
    transpiled, _ = transpile_for(circuit, backend.target(), seed=3)
    return to_openqasm3(transpiled)


def test_every_sdk_request_is_checked_and_audited_before_it_is_sent(
    standin: IbmStandin, policy: RequestsPolicy
) -> None:
    before = len(standin.requests())
    backend = make_backend(standin, policy.audit)
    token = TOKENS.mint()
    with current_job("job-ibm"):
        program = bell_program(backend)  # sign-in, instance search, device configuration and properties
        task = backend.submit(program, 100, token)  # look-up by tag, usage, device status, submission
        assert backend.find_task(token) == task
        assert backend.status(task).state is TaskState.QUEUED
        standin.complete(task, {"00": 60, "11": 40})
        backend._jobs.clear()  # a fresh job object, as after a worker restart: the SDK asks again
        outcome = backend.result(task)  # status, results, usage
        assert outcome.counts == {"00": 60, "11": 40}
        assert outcome.metadata["usage_seconds"] == 2.0
        backend.cancel(task)  # finished: a no-op for IBM, but the request is made
    received = standin.requests()[before:]
    entries = [e for e in audit_entries(policy.audit.path) if e["method"] != "SDK"]
    # One audit entry per request the stand-in received, in the same order, with the same bytes.
    assert [(e["method"], e["path"].split("?")[0]) for e in entries] == [(r.method, r.path) for r in received]
    for entry, request in zip(entries, received, strict=True):
        assert entry["sha256"] == hashlib.sha256(request.body).hexdigest()
        assert entry["destination"] == f"localhost:{standin.base_url.rsplit(':', 1)[1]}"
        assert entry["tls_version"].startswith("TLS (requests, stdlib ssl")
    routes = {e["note"].removeprefix("requests ") for e in entries}
    assert {
        "ibm iam sign-in",
        "ibm instance search",
        "ibm device",
        "ibm job search by token",
        "ibm job submission",
        "ibm job status",
        "ibm job results",
        "ibm job cancellation",
    } <= routes
    assert {e["job_id"] for e in entries} == {"job-ibm"}
    assert API_KEY not in policy.audit.path.read_text()  # bodies are hashed, headers never written
    assert verify(policy.audit.path).ok
    # No library, OS or calling-file fingerprint reached "IBM".
    for request in received:
        assert request.headers.get("User-Agent") == SDK_USER_AGENT
        assert "X-Qx-Client-Application" not in request.headers
    submitted = next(r for r in received if (r.method, r.path) == ("POST", "/api/v1/jobs"))
    assert json.loads(submitted.body)["tags"] == ["qhybrid", f"qhybrid-token:{token}"]


def test_nothing_is_sent_when_the_audit_cannot_be_written(
    standin: IbmStandin, policy: RequestsPolicy, tmp_path: Path
) -> None:
    (tmp_path / "blocked").mkdir()
    policy.audit = AuditLog(tmp_path / "blocked")
    before = len(standin.requests())
    backend = make_backend(standin, None)
    with pytest.raises((TransientBackendError, PermanentBackendError)):
        backend.target()
    assert len(standin.requests()) == before  # not even the sign-in


def test_a_token_the_gateway_did_not_mint_never_reaches_ibm(
    standin: IbmStandin, policy: RequestsPolicy
) -> None:
    backend = make_backend(standin, policy.audit)
    program = bell_program(backend)
    before = len(standin.requests())
    chosen = b"ACME pension 42!".hex()
    # The look-up by tag comes first, and its query refuses the token: the gateway did not mint it.
    with pytest.raises(PermanentBackendError, match="refused at the boundary: query: tags"):
        backend.submit(program, 100, chosen)
    assert all(chosen not in r.path and chosen.encode() not in r.body for r in standin.requests()[before:])
    assert not any(r.method == "POST" and r.path == "/api/v1/jobs" for r in standin.requests()[before:])


def test_the_smuggling_program_is_refused_before_the_sdk_sees_it(
    standin: IbmStandin, policy: RequestsPolicy
) -> None:
    backend = make_backend(standin, policy.audit)
    program = bell_program(backend)
    smuggling = program.replace("sx q[", "rz(0.717273838485868) q[0];\nsx q[", 1)
    before = len(standin.requests())
    with pytest.raises(PermanentBackendError, match=r"refused at the boundary: .*literal"):
        backend.submit(smuggling, 100, TOKENS.mint())
    assert standin.requests()[before:] == []


def test_undeclared_requests_and_destinations_are_refused_before_a_socket_opens(
    standin: IbmStandin, policy: RequestsPolicy
) -> None:
    before = len(standin.requests())
    base = standin.base_url
    attempts: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", f"{base}/api/v1/jobs", {"params": {"tags": "qhybrid-token:" + "ab" * 16}}),  # not minted
        ("GET", f"{base}/api/v1/backends/ibm_torino/configuration", {"params": {"acme": "1"}}),
        ("GET", f"{base}/api/v1/backends/ibm_torino/secrets", {}),
        ("DELETE", f"{base}/api/v1/jobs/{'a' * 20}", {}),
        ("POST", f"{base}/identity/token", {"data": {"grant_type": "x", "apikey": "someone-elses"}}),
        ("GET", f"{base}/api/v1/instances/usage", {"headers": {"X-Client": "acme"}}),
        ("GET", "https://iam.cloud.ibm.com/identity/token", {}),  # not this deployment's IAM
        ("GET", "https://169.254.169.254/latest/meta-data/", {}),
    ]
    for method, url, options in attempts:
        with pytest.raises(EgressPolicyError):
            requests.request(method, url, timeout=5, **options)
    assert standin.requests()[before:] == []
    assert audit_entries(policy.audit.path) == []


def test_without_ibm_configured_a_worker_sends_no_requests_at_all(
    standin: IbmStandin, sdk_env: None, tmp_path: Path
) -> None:
    from qhybrid.backends.registry import ibm_requests_policy
    from qhybrid.core.config import Settings

    guard = ibm_requests_policy(Settings(data_dir=tmp_path), AuditLog(tmp_path / "a.log"), TOKENS)
    install_requests_guard(guard)
    try:
        before = len(standin.requests())
        with pytest.raises(EgressPolicyError, match="allow-list"):
            requests.get(f"{standin.base_url}/api/v1/backends", timeout=5)
        assert standin.requests()[before:] == []
    finally:
        install_requests_guard(None)
