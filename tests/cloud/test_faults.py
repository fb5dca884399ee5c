"""Fault injection: the rules themselves, then every fault on a real cloud process."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from qhybrid.backends.base import TransientBackendError
from qhybrid.backends.emulated_cloud import EmulatedCloudBackend
from qhybrid.cloud.faults import FaultInjector, FaultRule
from qhybrid.domain.states import TaskState

# Through the egress gateway: canonical programs and hex client tokens only (the payload contract).
from tests.cloud.helpers import X_ON_BIT0_CANONICAL as X_ON_BIT0
from tests.cloud.helpers import CloudServer, gateway_token, start_cloud, submit_body, wait_for_state
from tests.support.cloud import egress_to

# --- rules (no process) ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "needle"),
    [
        ({"fault": "404"}, "fault"),
        ({"fault": "slow"}, "needs 'seconds'"),
        ({"fault": "500", "retry_after": 1}, "retry_after only applies"),
        ({"fault": "drop", "seconds": 1}, "seconds only applies"),
        ({"fault": "429", "count": 0}, "count"),
        ({"fault": "429", "match": "/v1/tasks"}, "METHOD /path"),
        ({"fault": "429", "match": "post /v1/tasks"}, "METHOD /path"),
        ({"fault": "429", "typo": 1}, "typo"),
    ],
)
def test_bad_rules_are_refused(rule: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValidationError, match=needle):
        FaultRule.model_validate(rule)


def test_matching_and_expiry() -> None:
    injector = FaultInjector(
        [
            FaultRule(match="GET /v1/tasks/*", fault="503", count=2, retry_after=1),
            FaultRule(match="* /v1/tasks/*/cancel", fault="500"),
            FaultRule(fault="task_failed"),
            FaultRule(fault="drop"),  # "*": everything else, once
        ]
    )
    # "*" stays within one path segment: a result fetch is not a status poll.
    assert injector.take_for_request("GET", "/v1/tasks/task-1/result") == FaultRule(fault="drop")
    assert injector.take_for_request("GET", "/v1/tasks/task-1/result") is None
    # The health probe and the admin routes are never faulted.
    assert injector.take_for_request("GET", "/healthz") is None
    assert injector.take_for_request("PUT", "/v1/admin/faults") is None
    assert injector.take_for_request("POST", "/v1/tasks/task-1/cancel") is not None
    first = injector.take_for_request("GET", "/v1/tasks/task-1")
    assert first is not None and first.fault == "503"
    assert [(r.fault, r.count) for r in injector.rules()] == [("503", 1), ("task_failed", 1)]
    assert injector.take_for_request("GET", "/v1/tasks/task-2") is not None
    assert injector.take_for_request("GET", "/v1/tasks/task-2") is None
    # task_failed rules are for the QPU, never for requests.
    assert injector.take_task_failure("task-1") == FaultRule(fault="task_failed")
    assert injector.take_task_failure("task-2") is None
    assert injector.rules() == []


# --- on a real process ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudServer]:
    server = start_cloud(tmp_path_factory.mktemp("cloud-faults"), queue_delay=0.1, run_delay=0.2)
    try:
        yield server
    finally:
        server.process.stop()


@pytest.fixture
def admin(cloud: CloudServer) -> Iterator[httpx.Client]:
    """A client of the cloud; the fault rules are cleared after each test."""
    with cloud.client() as http:
        yield http
        assert http.put("/v1/admin/faults", json=[]).status_code == 200


def arm(admin: httpx.Client, *rules: dict[str, Any]) -> list[dict[str, Any]]:
    response = admin.put("/v1/admin/faults", json=list(rules))
    assert response.status_code == 200, response.text
    armed: list[dict[str, Any]] = response.json()
    return armed


def make_backend(cloud: CloudServer, *, timeout: float = 5.0) -> EmulatedCloudBackend:
    egress = egress_to(cloud.base_url, token=cloud.token, timeout=timeout, ca_file=cloud.ca_file)
    return EmulatedCloudBackend(name="cloud", base_url=cloud.base_url, device="emulator", egress=egress)


@pytest.fixture
def backend(cloud: CloudServer) -> Iterator[EmulatedCloudBackend]:
    adapter = make_backend(cloud)
    try:
        yield adapter
    finally:
        adapter.close()


def submissions(admin: httpx.Client) -> dict[str, int]:
    counts: dict[str, int] = admin.get("/v1/admin/submissions").json()
    return counts


@pytest.mark.integration
def test_rules_are_replaced_and_listed_at_runtime(cloud: CloudServer, admin: httpx.Client) -> None:
    rules = [
        {"match": "GET /v1/devices/*", "fault": "429", "count": 2, "retry_after": 1},
        {"fault": "task_failed", "count": 3},
    ]
    armed = arm(admin, *rules)
    assert armed == [{**rules[0], "retry_after": 1.0}, {"match": "*", "fault": "task_failed", "count": 3}]
    assert admin.get("/v1/admin/faults").json() == armed

    assert admin.get("/v1/devices/emulator").status_code == 429
    assert admin.get("/v1/admin/faults").json()[0]["count"] == 1  # what is left
    assert admin.get("/v1/devices/emulator").status_code == 429
    assert admin.get("/v1/devices/emulator").status_code == 200  # the rule is spent and gone
    assert admin.get("/v1/admin/faults").json() == [armed[1]]

    # Replacing, not appending.
    assert arm(admin) == []
    assert admin.get("/v1/admin/faults").json() == []

    # The admin routes need the token, and bad rules are refused whole with a reason.
    with cloud.client(token="not-the-token") as stranger:
        assert stranger.get("/v1/admin/faults").status_code == 401
        assert stranger.put("/v1/admin/faults", json=[]).status_code == 401
    refused = admin.put("/v1/admin/faults", json=[{"fault": "429"}, {"fault": "slow"}])
    assert refused.status_code == 400
    assert "seconds" in refused.json()["detail"]
    not_a_list = admin.put("/v1/admin/faults", json={"fault": "429"})
    assert not_a_list.status_code == 400
    assert "JSON list" in not_a_list.json()["detail"]
    assert admin.get("/v1/admin/faults").json() == []


@pytest.mark.integration
def test_429_with_retry_after_is_transient_and_not_a_submission(
    cloud: CloudServer, admin: httpx.Client, backend: EmulatedCloudBackend
) -> None:
    arm(admin, {"match": "POST /v1/tasks", "fault": "429", "retry_after": 3})
    token = gateway_token()
    with pytest.raises(TransientBackendError, match="429: injected fault") as caught:
        backend.submit(X_ON_BIT0, 10, token)
    assert caught.value.retry_after == 3.0
    # Refused before the submission logic: not counted, no task, but logged as received.
    assert token not in submissions(admin)
    assert backend.find_task(token) is None
    assert token.encode() in (cloud.data_dir / "received.log").read_bytes()

    task_id = backend.submit(X_ON_BIT0, 10, token)
    assert backend.find_task(token) == task_id
    assert submissions(admin)[token] == 1


@pytest.mark.integration
def test_500_and_503_are_transient(admin: httpx.Client, backend: EmulatedCloudBackend) -> None:
    task_id = backend.submit(X_ON_BIT0, 10, gateway_token())
    arm(
        admin,
        {"match": "GET /v1/tasks/*", "fault": "500"},
        {"match": "GET /v1/tasks/*", "fault": "503", "retry_after": 1.5},
    )
    with pytest.raises(TransientBackendError, match="500") as first:
        backend.status(task_id)
    assert first.value.retry_after is None
    with pytest.raises(TransientBackendError, match="503") as second:
        backend.status(task_id)
    assert second.value.retry_after == 1.5
    assert backend.status(task_id).state in set(TaskState)


@pytest.mark.integration
def test_drop_closes_without_processing(
    cloud: CloudServer, admin: httpx.Client, backend: EmulatedCloudBackend
) -> None:
    arm(admin, {"match": "POST /v1/tasks", "fault": "drop"})
    token = gateway_token()
    with pytest.raises(TransientBackendError, match="connection dropped") as caught:
        backend.submit(X_ON_BIT0, 10, token)
    assert isinstance(caught.value.__cause__, httpx.RemoteProtocolError)
    assert backend.find_task(token) is None
    assert token not in submissions(admin)
    assert token.encode() in (cloud.data_dir / "received.log").read_bytes()
    assert "injecting fault drop" in cloud.process.log()


@pytest.mark.integration
def test_drop_after_processes_then_breaks_the_answer(
    admin: httpx.Client, backend: EmulatedCloudBackend
) -> None:
    arm(admin, {"match": "POST /v1/tasks", "fault": "drop_after"})
    token = gateway_token()
    with pytest.raises(TransientBackendError, match="connection dropped") as caught:
        backend.submit(X_ON_BIT0, 10, token)
    assert isinstance(caught.value.__cause__, httpx.RemoteProtocolError)
    # The task exists and the submission counted: exactly the case the client token is for.
    task_id = backend.find_task(token)
    assert task_id is not None
    assert submissions(admin)[token] == 1
    assert backend.submit(X_ON_BIT0, 10, token) == task_id
    assert submissions(admin)[token] == 2


@pytest.mark.integration
def test_slow_delays_the_answer(cloud: CloudServer, admin: httpx.Client) -> None:
    task_id = admin.post("/v1/tasks", json=submit_body(X_ON_BIT0)).json()["task_id"]
    arm(admin, {"match": "GET /v1/tasks/*", "fault": "slow", "seconds": 1.0})
    impatient = make_backend(cloud, timeout=0.3)
    try:
        with pytest.raises(TransientBackendError, match="timed out"):
            impatient.status(task_id)
    finally:
        impatient.close()

    arm(admin, {"match": "GET /v1/tasks/*", "fault": "slow", "seconds": 0.6})
    started = time.monotonic()
    response = admin.get(f"/v1/tasks/{task_id}")
    assert response.status_code == 200
    assert time.monotonic() - started >= 0.6


@pytest.mark.integration
def test_task_failed_fails_the_next_tasks_that_run(
    admin: httpx.Client, backend: EmulatedCloudBackend
) -> None:
    arm(admin, {"fault": "task_failed", "count": 1})
    doomed = backend.submit(X_ON_BIT0, 10, gateway_token())
    fine = backend.submit(X_ON_BIT0, 10, gateway_token())
    final, _ = wait_for_state(admin, doomed, ["COMPLETED", "FAILED", "CANCELLED"])
    assert final["state"] == "FAILED"
    assert final["message"].startswith("injected fault: ")
    status = backend.status(doomed)
    assert status.state is TaskState.FAILED
    assert status.message == final["message"]
    assert wait_for_state(admin, fine, ["COMPLETED", "FAILED"])[0]["state"] == "COMPLETED"
    assert admin.get("/v1/admin/faults").json() == []


@pytest.mark.integration
def test_star_spares_health_and_admin(cloud: CloudServer, admin: httpx.Client) -> None:
    arm(admin, {"fault": "503", "count": 5})
    assert admin.get("/v1/devices/emulator").status_code == 503
    assert httpx.get(f"{cloud.base_url}/healthz", verify=cloud.verify, trust_env=False).status_code == 200
    assert admin.get("/v1/admin/submissions").status_code == 200
    assert admin.get("/v1/admin/faults").json() == [{"match": "*", "fault": "503", "count": 4}]


@pytest.mark.integration
def test_configured_faults_over_plain_http(tmp_path: Path) -> None:
    rules = [
        {"match": "GET /v1/devices/*", "fault": "503", "retry_after": 2},
        {"match": "POST /v1/tasks", "fault": "drop"},
        {"match": "POST /v1/tasks", "fault": "drop_after"},
    ]
    server = start_cloud(tmp_path, tls=False, extra_args=["--faults", json.dumps(rules)])
    try:
        assert server.base_url.startswith("http://")
        with server.client() as http:
            throttled = http.get("/v1/devices/emulator")
            assert throttled.status_code == 503
            assert throttled.headers["Retry-After"] == "2"
            dropped, half = submit_body(X_ON_BIT0), submit_body(X_ON_BIT0)
            with pytest.raises(httpx.RemoteProtocolError):
                http.post("/v1/tasks", json=dropped)
            with pytest.raises(httpx.RemoteProtocolError):
                http.post("/v1/tasks", json=half)
            assert http.get("/v1/tasks", params={"client_token": dropped["client_token"]}).status_code == 404
            assert http.get("/v1/tasks", params={"client_token": half["client_token"]}).status_code == 200
            assert http.get("/v1/admin/faults").json() == []
    finally:
        server.process.stop()
    assert server.process.popen.returncode == 0
    # --no-tls is the plain-HTTP cloud of before: no certificate, no handshake log, no socket.
    assert not (server.data_dir / "tls").exists()
    assert not (server.data_dir / "tls.log").exists()
    assert not (server.data_dir / "app.sock").exists()
    assert "qhybrid cloud ready on http://127.0.0.1:" in server.process.log()
