"""The emulated cloud as a real process: auth, task lifecycle, idempotency, persistence."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from tests.cloud.helpers import (
    BELL,
    X_ON_BIT0,
    CloudServer,
    new_token,
    start_cloud,
    submit_body,
    wait_for_state,
)

pytestmark = pytest.mark.integration

QUEUE_DELAY = 0.3
RUN_DELAY = 0.5
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED")


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudServer]:
    server = start_cloud(tmp_path_factory.mktemp("cloud"), queue_delay=QUEUE_DELAY, run_delay=RUN_DELAY)
    try:
        yield server
    finally:
        server.process.stop()


@pytest.fixture
def client(cloud: CloudServer) -> Iterator[httpx.Client]:
    with cloud.client() as http:
        yield http


def test_healthz_is_open(cloud: CloudServer) -> None:
    response = httpx.get(f"{cloud.base_url}/healthz", trust_env=False, verify=cloud.verify)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/devices/emulator"),
        ("POST", "/v1/tasks"),
        ("GET", "/v1/tasks?client_token=abcdefgh"),
        ("GET", "/v1/tasks/task-x"),
        ("POST", "/v1/tasks/task-x/cancel"),
        ("GET", "/v1/admin/submissions"),
        ("GET", "/no/such/route"),
    ],
)
def test_every_route_but_healthz_needs_the_token(cloud: CloudServer, method: str, path: str) -> None:
    url = f"{cloud.base_url}{path}"
    missing = httpx.request(method, url, trust_env=False, verify=cloud.verify)
    assert missing.status_code == 401
    assert "Authorization" in missing.json()["detail"]
    wrong = httpx.request(
        method, url, headers={"Authorization": "Bearer not-the-token"}, trust_env=False, verify=cloud.verify
    )
    assert wrong.status_code == 401
    assert wrong.json() == {"detail": "invalid bearer token"}
    assert wrong.headers["WWW-Authenticate"] == "Bearer"


def test_bearer_scheme_is_case_insensitive(cloud: CloudServer) -> None:
    url = f"{cloud.base_url}/v1/devices/emulator"
    assert (
        httpx.get(
            url, headers={"Authorization": f"bearer {cloud.token}"}, trust_env=False, verify=cloud.verify
        ).status_code
        == 200
    )
    assert (
        httpx.get(
            url, headers={"Authorization": f"Token {cloud.token}"}, trust_env=False, verify=cloud.verify
        ).status_code
        == 401
    )
    assert (
        httpx.get(
            url, headers={"Authorization": cloud.token}, trust_env=False, verify=cloud.verify
        ).status_code
        == 401
    )


def test_device_info(client: httpx.Client) -> None:
    response = client.get("/v1/devices/emulator")
    assert response.status_code == 200
    assert response.json() == {
        "name": "emulator",
        "num_qubits": 32,
        "basis_gates": ["rz", "sx", "x", "cx"],
        "coupling_map": None,
    }
    unknown = client.get("/v1/devices/nope")
    assert unknown.status_code == 404
    assert "nope" in unknown.json()["detail"]


def test_task_goes_queued_running_completed(client: httpx.Client) -> None:
    response = client.post("/v1/tasks", json=submit_body(X_ON_BIT0, shots=256))
    assert response.status_code == 201, response.text
    task = response.json()
    assert re.fullmatch(r"task-[0-9a-f]{24}", task["task_id"])
    assert task["state"] == "QUEUED"
    assert isinstance(task["queue_position"], int)
    assert task["started_at"] is None
    assert task["ended_at"] is None

    final, seen = wait_for_state(client, task["task_id"], TERMINAL)
    assert seen[-2:] == ["RUNNING", "COMPLETED"], seen
    assert final["queue_position"] is None
    assert final["created_at"] <= final["started_at"] <= final["ended_at"]

    result = client.get(f"/v1/tasks/{task['task_id']}/result")
    assert result.status_code == 200
    body = result.json()
    assert body["task_id"] == task["task_id"]
    assert body["shots"] == 256
    assert body["bit_order"] == "bit0-first"
    assert sum(body["counts"].values()) == 256
    assert all(len(key) == 3 and set(key) <= {"0", "1"} for key in body["counts"])
    # x on qubit 0 measured into c[0]: bit 0 is the FIRST character.
    assert body["counts"] == {"100": 256}
    assert body["metadata"]["device"] == "emulator"
    assert isinstance(body["metadata"]["seed_simulator"], int)
    # The device's time on the task, as providers report billed usage: the RUNNING span, not the
    # time since submission (which would count the queue and the client's polling).
    usage = body["metadata"]["usage_seconds"]
    since_created = datetime.fromisoformat(final["ended_at"]) - datetime.fromisoformat(final["created_at"])
    assert RUN_DELAY <= usage < since_created.total_seconds() - QUEUE_DELAY / 2


def test_a_poll_with_include_result_carries_the_result_once_completed(client: httpx.Client) -> None:
    task_id = client.post("/v1/tasks", json=submit_body(BELL, shots=300)).json()["task_id"]
    queued = client.get(f"/v1/tasks/{task_id}", params={"include": "result"})
    assert queued.status_code == 200
    assert queued.json()["state"] == "QUEUED"
    assert "result" not in queued.json()  # no result before COMPLETED, not even an empty one

    wait_for_state(client, task_id, TERMINAL)
    plain = client.get(f"/v1/tasks/{task_id}").json()
    assert plain["state"] == "COMPLETED"
    assert "result" not in plain  # without the query the status document is as it was
    polled = client.get(f"/v1/tasks/{task_id}", params={"include": "result"}).json()
    assert {key: value for key, value in polled.items() if key != "result"} == plain
    assert polled["result"] == client.get(f"/v1/tasks/{task_id}/result").json()
    assert sum(polled["result"]["counts"].values()) == 300


def test_a_poll_with_another_include_is_a_400_naming_it(client: httpx.Client) -> None:
    task_id = client.post("/v1/tasks", json=submit_body(X_ON_BIT0, shots=10)).json()["task_id"]
    for value in ("results", "counts", ""):
        refused = client.get(f"/v1/tasks/{task_id}", params={"include": value})
        assert refused.status_code == 400, value
        assert "include" in refused.json()["detail"]


def test_a_cancelled_task_polled_with_include_result_has_no_result(client: httpx.Client) -> None:
    task_id = client.post("/v1/tasks", json=submit_body(X_ON_BIT0, shots=10)).json()["task_id"]
    client.post(f"/v1/tasks/{task_id}/cancel").raise_for_status()
    polled = client.get(f"/v1/tasks/{task_id}", params={"include": "result"}).json()
    assert polled["state"] == "CANCELLED"
    assert "result" not in polled


def test_bell_state_and_bit_order_across_registers(client: httpx.Client) -> None:
    bell = client.post("/v1/tasks", json=submit_body(BELL, shots=2000)).json()
    # Two registers: clbits are a[0], a[1], b[0]; only b[0] (clbit 2) is measured as 1.
    registers = (
        'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[3] q;\nbit[2] a;\nbit[1] b;\n'
        "x q[2];\na[0] = measure q[0];\na[1] = measure q[1];\nb[0] = measure q[2];\n"
    )
    split = client.post("/v1/tasks", json=submit_body(registers, shots=50)).json()

    wait_for_state(client, bell["task_id"], ["COMPLETED"])
    counts = client.get(f"/v1/tasks/{bell['task_id']}/result").json()["counts"]
    assert set(counts) == {"00", "11"}
    assert sum(counts.values()) == 2000
    assert 800 < counts["00"] < 1200

    wait_for_state(client, split["task_id"], ["COMPLETED"])
    assert client.get(f"/v1/tasks/{split['task_id']}/result").json()["counts"] == {"001": 50}


def test_resubmission_is_idempotent(client: httpx.Client) -> None:
    body = submit_body(X_ON_BIT0, shots=10)
    first = client.post("/v1/tasks", json=body)
    second = client.post("/v1/tasks", json=body)
    assert first.status_code == 201
    assert second.status_code == 200
    assert second.json()["task_id"] == first.json()["task_id"]
    assert client.get("/v1/admin/submissions").json()[body["client_token"]] == 2

    found = client.get("/v1/tasks", params={"client_token": body["client_token"]})
    assert found.status_code == 200
    assert found.json()["task_id"] == first.json()["task_id"]

    # Reusing the token for a different request is refused rather than answered with the old task.
    clash = client.post("/v1/tasks", json={**body, "shots": 11})
    assert clash.status_code == 409
    assert first.json()["task_id"] in clash.json()["detail"]
    assert client.get("/v1/admin/submissions").json()[body["client_token"]] == 3


def test_lookup_by_unknown_token_is_404(client: httpx.Client) -> None:
    response = client.get("/v1/tasks", params={"client_token": new_token()})
    assert response.status_code == 404
    assert "client token" in response.json()["detail"]


def test_cancel_queued_task(client: httpx.Client) -> None:
    task = client.post("/v1/tasks", json=submit_body(X_ON_BIT0)).json()
    cancelled = client.post(f"/v1/tasks/{task['task_id']}/cancel")
    assert cancelled.status_code == 200
    assert cancelled.json()["state"] == "CANCELLED"
    assert cancelled.json()["ended_at"] is not None

    time.sleep(QUEUE_DELAY + RUN_DELAY + 0.3)
    assert client.get(f"/v1/tasks/{task['task_id']}").json()["state"] == "CANCELLED"
    result = client.get(f"/v1/tasks/{task['task_id']}/result")
    assert result.status_code == 409
    assert "CANCELLED" in result.json()["detail"]
    again = client.post(f"/v1/tasks/{task['task_id']}/cancel")
    assert again.status_code == 200
    assert again.json()["state"] == "CANCELLED"


def test_cancel_while_running_is_not_overwritten(client: httpx.Client) -> None:
    task = client.post("/v1/tasks", json=submit_body(X_ON_BIT0)).json()
    wait_for_state(client, task["task_id"], ["RUNNING", *TERMINAL])
    assert client.post(f"/v1/tasks/{task['task_id']}/cancel").json()["state"] == "CANCELLED"
    time.sleep(RUN_DELAY + 0.3)
    assert client.get(f"/v1/tasks/{task['task_id']}").json()["state"] == "CANCELLED"


def test_cancel_of_a_finished_task_changes_nothing(client: httpx.Client) -> None:
    task = client.post("/v1/tasks", json=submit_body(X_ON_BIT0)).json()
    wait_for_state(client, task["task_id"], ["COMPLETED"])
    response = client.post(f"/v1/tasks/{task['task_id']}/cancel")
    assert response.status_code == 200
    assert response.json()["state"] == "COMPLETED"


def test_unknown_task_is_404(client: httpx.Client) -> None:
    for response in (
        client.get("/v1/tasks/task-000000000000000000000000"),
        client.get("/v1/tasks/task-000000000000000000000000/result"),
        client.post("/v1/tasks/task-000000000000000000000000/cancel"),
    ):
        assert response.status_code == 404
        assert "task-000000000000000000000000" in response.json()["detail"]


@pytest.mark.parametrize(
    ("changes", "status", "needle"),
    [
        ({"program": "this is not qasm"}, 400, "not valid OpenQASM 3"),
        ({"program": ""}, 400, "empty"),
        ({"program": "OPENQASM 3.0;\nqubit[40] q;\nbit[40] c;\nc = measure q;\n"}, 400, "40 qubits"),
        ({"program": "OPENQASM 3.0;\nqubit[1] q;\n"}, 400, "no classical bits"),
        ({"shots": 0}, 400, "shots"),
        ({"shots": 100_001}, 400, "shots"),
        ({"shots": "10"}, 400, "shots"),
        ({"client_token": "short"}, 400, "client_token"),
        ({"client_token": "has spaces in it"}, 400, "client_token"),
        ({"device": "other"}, 400, "unknown device"),
        ({"program": "// " + "x" * 1_000_001}, 413, "limit"),
    ],
)
def test_bad_submissions_are_refused(
    client: httpx.Client, changes: dict[str, object], status: int, needle: str
) -> None:
    body = {**submit_body(X_ON_BIT0), **changes}
    response = client.post("/v1/tasks", json=body)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str)
    assert needle in detail
    if isinstance(body["client_token"], str) and len(body["client_token"]) >= 8:
        lookup = client.get("/v1/tasks", params={"client_token": body["client_token"]})
        assert lookup.status_code == 404


def test_non_json_body_gets_a_clear_400(client: httpx.Client) -> None:
    response = client.post("/v1/tasks", content=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["detail"]


def _log_records(log: bytes) -> list[tuple[bytes, dict[bytes, bytes], bytes]]:
    """Split received.log into (request line, headers, body) using each record's byte count."""
    records = []
    position = 0
    while position < len(log):
        line_end = log.index(b"\n", position)
        header = log[position:line_end].split(b" ")
        assert header[0] == b">>>", log[position : position + 200]
        size = int(header[-1])
        headers_end = log.index(b"\n\n", line_end)
        headers = dict(line.split(b": ", 1) for line in log[line_end + 1 : headers_end].split(b"\n") if line)
        body_start = headers_end + 2
        records.append((b" ".join(header[2:4]), headers, log[body_start : body_start + size]))
        assert log[body_start + size : body_start + size + 1] == b"\n"
        position = body_start + size + 1
    return records


def test_received_log_records_raw_requests(cloud: CloudServer, client: httpx.Client) -> None:
    marker = f"marker-{uuid.uuid4().hex}"
    sent = json.dumps(submit_body(X_ON_BIT0 + f"// {marker}\n")).encode()
    response = client.post("/v1/tasks?probe=1", content=sent, headers={"Content-Type": "application/json"})
    assert response.status_code == 201, response.text
    refused = httpx.post(
        f"{cloud.base_url}/v1/tasks", content=f"no token {marker}", trust_env=False, verify=cloud.verify
    )
    assert refused.status_code == 401

    records = _log_records((cloud.data_dir / "received.log").read_bytes())
    accepted = [r for r in records if r[2] == sent]
    assert len(accepted) == 1
    request_line, headers, _ = accepted[0]
    assert request_line == b"POST /v1/tasks?probe=1"
    assert headers[b"authorization"] == b"Bearer " + cloud.token.encode()
    assert headers[b"content-type"] == b"application/json"
    # Requests refused by authentication are recorded as well.
    assert any(body == f"no token {marker}".encode() for _, _, body in records)


def test_tasks_survive_restart_and_crash(tmp_path: Path) -> None:
    # First process: tasks run for a long time, so one is RUNNING and one QUEUED when it crashes.
    first = start_cloud(tmp_path, name="cloud-a", queue_delay=0.1, run_delay=60.0)
    port, data_dir = first.port, first.data_dir
    try:
        with first.client() as http:
            running_body = submit_body(X_ON_BIT0, shots=20)
            queued_body = submit_body(BELL, shots=20)
            running = http.post("/v1/tasks", json=running_body).json()
            queued = http.post("/v1/tasks", json=queued_body).json()
            wait_for_state(http, running["task_id"], ["RUNNING"])
            assert http.get(f"/v1/tasks/{queued['task_id']}").json()["queue_position"] == 0
    finally:
        first.process.kill9()

    second = start_cloud(
        tmp_path, name="cloud-b", port=port, data_dir=data_dir, queue_delay=0.1, run_delay=0.1
    )
    try:
        with second.client() as http:
            for body, task in ((running_body, running), (queued_body, queued)):
                final, _ = wait_for_state(http, task["task_id"], TERMINAL)
                assert final["state"] == "COMPLETED"
                by_token = http.get("/v1/tasks", params={"client_token": body["client_token"]})
                assert by_token.json()["task_id"] == task["task_id"]
                replay = http.post("/v1/tasks", json=body)
                assert replay.status_code == 200
                assert replay.json()["task_id"] == task["task_id"]
            counts = http.get(f"/v1/tasks/{running['task_id']}/result").json()["counts"]
            assert counts == {"100": 20}
            submissions = http.get("/v1/admin/submissions").json()
            assert submissions[running_body["client_token"]] == 2
    finally:
        second.process.stop()
    # SIGTERM is a clean shutdown, not a death by signal.
    assert second.process.popen.returncode == 0, second.process.log()[-2000:]
    assert "qhybrid cloud ready on" in second.process.log()
