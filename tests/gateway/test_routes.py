"""The route table: every request through the REAL gateway to the REAL emulated cloud is checked.

Each attempt below is what the issue found reaching the cloud (an extra body key, a query string, a
path segment, a longer ``Authorization`` value, the smuggling program, a chosen client token), on
every route of the cloud's API. Each must be refused before a byte is sent: the cloud's
``received.log`` (every request it got, byte for byte) does not change and no audit entry is
written. The declared requests still go through (positive control).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qhybrid.backends.base import PermanentBackendError
from qhybrid.backends.emulated_cloud import EmulatedCloudBackend
from qhybrid.gateway.audit import AuditLog
from qhybrid.gateway.egress import EgressClient, EgressPayloadError, EgressPolicyError
from qhybrid.gateway.payload import SubmissionPolicy
from qhybrid.gateway.routes import RouteError, emulated_cloud_routes
from qhybrid.gateway.tokens import TokenMinter
from tests.support.cloud import TOKENS, CloudServer, egress_to

PROGRAM = (
    'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[2] q;\nbit[2] c;\nrz(0.5) q[0];\nx q[1];\n'
    "c[0] = measure q[0];\nc[1] = measure q[1];\n"
)
#: The issue's smuggling: free float literals carrying bytes (here 15 digits each).
SMUGGLING = PROGRAM.replace("rz(0.5)", "rz(0.717273838485868)")


# --- the table on its own ----------------------------------------------------------------------


def table(minter: TokenMinter = TOKENS) -> Any:
    return emulated_cloud_routes(SubmissionPolicy(device="emulator", tokens=minter))


def test_declared_requests_match_their_routes() -> None:
    routes = table()
    task = "task-" + "ab" * 12
    token = TOKENS.mint()
    body = {"device": "emulator", "program": PROGRAM, "shots": 10, "client_token": token}
    assert routes.check("GET", "/healthz", None, has_body=False).name == "health"
    assert routes.check("GET", "/v1/devices/emulator", None, has_body=False).name == "device description"
    assert routes.check("POST", "/v1/tasks", body, has_body=True).name == "submission"
    assert routes.check("GET", f"/v1/tasks?client_token={token}", None, has_body=False).name == (
        "task look-up by token"
    )
    assert routes.check("GET", f"/v1/tasks/{task}", None, has_body=False).name == "task status"
    assert routes.check("GET", f"/v1/tasks/{task}?include=result", None, has_body=False).name == "task status"
    assert routes.check("GET", f"/v1/tasks/{task}/result", None, has_body=False).name == "task result"
    assert routes.check("POST", f"/v1/tasks/{task}/cancel", None, has_body=False).name == "task cancellation"


@pytest.mark.parametrize(
    ("method", "target", "rule"),
    [
        ("GET", "/v1/tasks/task-abababababababababababab/x", "route"),
        ("GET", "/v1/tasks/task-ABABABABABABABABABABABAB", "route"),
        ("GET", "/v1/tasks/task-abababababababababababab%2Fresult", "route"),
        ("GET", "/v1/devices/emu%6Cator", "route"),
        ("GET", "/v1/tasks/../admin/submissions", "route"),
        ("GET", "/v1/admin/submissions", "route"),
        ("PUT", "/v1/admin/faults", "route"),
        ("DELETE", "/v1/tasks/task-abababababababababababab", "route"),
        ("GET", "/healthz?", "query"),
        ("GET", "/healthz?a=1", "query"),
        ("GET", "/v1/tasks", "query"),  # the look-up needs its token
        ("GET", "/v1/tasks?client_token=x&client_token=y", "query"),
        ("GET", "/healthz#frag", "route"),
        # The status route's one query is include=result, exactly.
        ("GET", "/v1/tasks/task-abababababababababababab?include=results", "query"),
        ("GET", "/v1/tasks/task-abababababababababababab?include=Result", "query"),
        ("GET", "/v1/tasks/task-abababababababababababab?include=", "query"),
        ("GET", "/v1/tasks/task-abababababababababababab?include=result&include=result", "query"),
        ("GET", "/v1/tasks/task-abababababababababababab?include=result&acme=1", "query"),
        ("GET", "/v1/tasks/task-abababababababababababab?include=re%73ult", "query"),
        ("GET", "/v1/tasks/task-abababababababababababab/result?include=result", "query"),
    ],
)
def test_undeclared_requests_are_refused_by_rule(method: str, target: str, rule: str) -> None:
    with pytest.raises(RouteError) as caught:
        table().check(method, target, None, has_body=False)
    assert caught.value.rule == rule


def test_a_look_up_needs_a_minted_token_in_its_one_spelling() -> None:
    token = TOKENS.mint()
    with pytest.raises(RouteError, match="outside its declared format"):
        table().check("GET", f"/v1/tasks?client_token={secrets.token_hex(16)}", None, has_body=False)
    spelled = "".join(f"%{ord(c):02x}" if c == token[0] else c for c in token)
    with pytest.raises(RouteError, match="canonical"):
        table().check("GET", f"/v1/tasks?client_token={spelled}", None, has_body=False)


# --- through the real gateway, against the real cloud ---------------------------------------------


@pytest.fixture
def gateway(cloud_process: CloudServer, tmp_path: Path) -> Iterator[tuple[EgressClient, AuditLog]]:
    audit = AuditLog(tmp_path / "egress.log")
    client = egress_to(
        cloud_process.base_url, token=cloud_process.token, ca_file=cloud_process.ca_file, audit=audit
    )
    yield client, audit
    client.close()


def received(cloud: CloudServer) -> bytes:
    path = cloud.data_dir / "received.log"
    return path.read_bytes() if path.exists() else b""


def submission(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "device": "emulator",
        "program": PROGRAM,
        "shots": 10,
        "client_token": TOKENS.mint(),
    }
    body.update(changes)
    return body


@pytest.fixture
def task_id(gateway: tuple[EgressClient, AuditLog], cloud_process: CloudServer) -> str:
    client, _ = gateway
    response = client.request("POST", f"{cloud_process.base_url}/v1/tasks", json=submission())
    assert response.status_code in (200, 201), response.text
    identifier: str = response.json()["task_id"]
    return identifier


def attempts(task: str) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(id, method, path, request options): each one a way out the issue found, on each route."""
    token = TOKENS.mint()
    longer_auth = {"Authorization": "Bearer test-token-and-then-some-data"}
    include = {"include": "result"}  # the status route's one declared query
    out: list[tuple[str, str, str, dict[str, Any]]] = [
        # submission
        ("submit-extra-key", "POST", "/v1/tasks", {"json": submission(note="AAPL 1200000")}),
        ("submit-smuggling-program", "POST", "/v1/tasks", {"json": submission(program=SMUGGLING)}),
        ("submit-chosen-token", "POST", "/v1/tasks", {"json": submission(client_token="41434d45" * 4)}),
        ("submit-other-device", "POST", "/v1/tasks", {"json": submission(device="emulator2")}),
        ("submit-query", "POST", "/v1/tasks", {"json": submission(), "params": {"leak": "1"}}),
        ("submit-path-segment", "POST", "/v1/tasks/acme-pension", {"json": submission()}),
        ("submit-longer-auth", "POST", "/v1/tasks", {"json": submission(), "headers": longer_auth}),
        ("submit-extra-header", "POST", "/v1/tasks", {"json": submission(), "headers": {"X-Client": "acme"}}),
        # device description
        ("device-other", "GET", "/v1/devices/acme", {}),
        ("device-segment", "GET", "/v1/devices/emulator/acme", {}),
        ("device-query", "GET", "/v1/devices/emulator", {"params": {"q": "acme"}}),
        ("device-body", "GET", "/v1/devices/emulator", {"json": {"q": "acme"}}),
        ("device-longer-auth", "GET", "/v1/devices/emulator", {"headers": longer_auth}),
        # look-up by token
        ("lookup-chosen-token", "GET", "/v1/tasks", {"params": {"client_token": "41434d45" * 4}}),
        ("lookup-extra-key", "GET", "/v1/tasks", {"params": {"client_token": token, "acme": "1"}}),
        ("lookup-body", "GET", "/v1/tasks", {"params": {"client_token": token}, "json": {"a": 1}}),
        # status, result, cancel
        ("status-bad-id", "GET", "/v1/tasks/task-acme", {}),
        ("status-segment", "GET", f"/v1/tasks/{task}/acme", {}),
        ("status-query", "GET", f"/v1/tasks/{task}", {"params": {"acme": "1"}}),
        ("status-body", "GET", f"/v1/tasks/{task}", {"json": {"acme": 1}}),
        ("status-include-other", "GET", f"/v1/tasks/{task}", {"params": {"include": "acme-pension"}}),
        ("status-include-extra-key", "GET", f"/v1/tasks/{task}", {"params": {**include, "acme": "1"}}),
        ("status-include-body", "GET", f"/v1/tasks/{task}", {"params": include, "json": {"a": 1}}),
        ("result-query", "GET", f"/v1/tasks/{task}/result", {"params": {"acme": "1"}}),
        ("result-segment", "GET", f"/v1/tasks/{task}/result/acme", {}),
        ("cancel-body", "POST", f"/v1/tasks/{task}/cancel", {"json": {"reason": "acme"}}),
        ("cancel-query", "POST", f"/v1/tasks/{task}/cancel", {"params": {"acme": "1"}}),
        ("cancel-accept-other", "POST", f"/v1/tasks/{task}/cancel", {"headers": {"Accept": "text/acme"}}),
        # undeclared routes
        ("admin-submissions", "GET", "/v1/admin/submissions", {}),
        ("admin-faults", "PUT", "/v1/admin/faults", {"json": []}),
        ("delete-task", "DELETE", f"/v1/tasks/{task}", {}),
        ("health-query", "GET", "/healthz", {"params": {"acme": "1"}}),
    ]
    return out


ATTEMPT_IDS = [a[0] for a in attempts("task-" + "0" * 24)]


@pytest.mark.integration
@pytest.mark.parametrize("attempt", ATTEMPT_IDS)
def test_nothing_undeclared_reaches_the_cloud(
    attempt: str, gateway: tuple[EgressClient, AuditLog], cloud_process: CloudServer, task_id: str
) -> None:
    client, audit = gateway
    _, method, path, options = next(a for a in attempts(task_id) if a[0] == attempt)
    before = received(cloud_process)
    entries = audit.path.read_text().count("\n")  # the fixture's own submission
    with pytest.raises(EgressPolicyError, match=r"refused|allow"):
        client.request(method, f"{cloud_process.base_url}{path}", **options)
    assert received(cloud_process) == before
    assert audit.path.read_text().count("\n") == entries


@pytest.mark.integration
def test_every_declared_route_still_works(
    gateway: tuple[EgressClient, AuditLog], cloud_process: CloudServer
) -> None:
    client, audit = gateway
    adapter = EmulatedCloudBackend(
        name="cloud", base_url=cloud_process.base_url, device="emulator", egress=client
    )
    token = client.mint_token()
    assert adapter.target().num_qubits >= 2
    task = adapter.submit(PROGRAM, 10, token)
    assert adapter.find_task(token) == task
    assert adapter.status(task).provider_state
    adapter.cancel(task)
    notes = [json.loads(line)["note"] for line in audit.path.read_text().splitlines()]
    assert notes == [
        "device description",
        "submission",
        "task look-up by token",
        "task status",
        "task cancellation",
    ]


@pytest.mark.integration
def test_a_token_the_gateway_did_not_mint_is_refused_through_the_adapter(
    gateway: tuple[EgressClient, AuditLog], cloud_process: CloudServer
) -> None:
    client, _ = gateway
    adapter = EmulatedCloudBackend(
        name="cloud", base_url=cloud_process.base_url, device="emulator", egress=client
    )
    chosen = b"ACME pension 42!".hex()  # 16 bytes of the caller's choosing
    before = received(cloud_process)
    with pytest.raises(PermanentBackendError, match="not minted") as caught:
        adapter.submit(PROGRAM, 10, chosen)
    assert isinstance(caught.value.__cause__, EgressPayloadError)
    with pytest.raises(PermanentBackendError, match="client_token"):
        adapter.find_task(chosen)
    assert received(cloud_process) == before
    assert chosen.encode() not in received(cloud_process)


def test_minted_tokens_are_recognised_and_others_are_not() -> None:
    key = secrets.token_bytes(32)
    minter = TokenMinter(key)
    tokens = {minter.mint() for _ in range(200)}
    assert len(tokens) == 200
    assert all(TokenMinter(key).is_minted(t) for t in tokens)  # another process with the same key
    assert not any(TokenMinter(secrets.token_bytes(32)).is_minted(t) for t in tokens)
    token = next(iter(tokens))
    flipped = token[:-1] + ("0" if token[-1] != "0" else "1")
    assert not minter.is_minted(flipped)
    assert not minter.is_minted(token.upper())
    assert not minter.is_minted(12345)
    assert repr(minter) == "TokenMinter(<secret>)"


def test_client_without_a_minter_mints_nothing(cloud_process: CloudServer) -> None:
    client = EgressClient([])
    with pytest.raises(EgressPolicyError, match="mints no client tokens"):
        client.mint_token()
