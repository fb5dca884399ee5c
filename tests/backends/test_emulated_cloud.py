"""EmulatedCloudBackend against a real emulated-cloud process, through the egress gateway."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from qhybrid.backends import emulated_cloud
from qhybrid.backends.base import PermanentBackendError, TaskStatus, TransientBackendError, parse_retry_after
from qhybrid.backends.emulated_cloud import EmulatedCloudBackend
from qhybrid.domain.device import DeviceTarget
from qhybrid.domain.states import TERMINAL_TASK_STATES, TaskState
from qhybrid.gateway.egress import EgressPolicyError

# Through the egress gateway: canonical programs and hex client tokens only (the payload contract).
from tests.cloud.helpers import BELL_CANONICAL as BELL
from tests.cloud.helpers import X_ON_BIT0_CANONICAL as X_ON_BIT0
from tests.cloud.helpers import CloudServer, gateway_token, start_cloud
from tests.support.cloud import egress_to
from tests.support.processes import free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudServer]:
    server = start_cloud(tmp_path_factory.mktemp("cloud-backend"), queue_delay=0.2, run_delay=0.3)
    try:
        yield server
    finally:
        server.process.stop()


def make_backend(
    base_url: str,
    *,
    token: str,
    allowed: str | None = None,
    timeout: float = 5.0,
    ca_file: Path | None = None,
    allow_plaintext: bool = False,
):
    egress = egress_to(
        allowed if allowed is not None else base_url,
        token=token,
        timeout=timeout,
        ca_file=ca_file,
        allow_plaintext=allow_plaintext,
    )
    return EmulatedCloudBackend(name="cloud", base_url=base_url, device="emulator", egress=egress)


@pytest.fixture
def backend(cloud: CloudServer) -> Iterator[EmulatedCloudBackend]:
    assert cloud.base_url.startswith("https://")  # the cloud speaks TLS by default
    adapter = make_backend(cloud.base_url, token=cloud.token, ca_file=cloud.ca_file)
    try:
        yield adapter
    finally:
        adapter.close()


def wait_terminal(backend: EmulatedCloudBackend, task_id: str, timeout: float = 20.0) -> list[TaskStatus]:
    seen: list[TaskStatus] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = backend.status(task_id)
        if not seen or seen[-1].state != status.state:
            seen.append(status)
        if status.state in TERMINAL_TASK_STATES:
            return seen
        time.sleep(0.02)
    raise AssertionError(f"task {task_id} not finished after {timeout}s: {seen}")


def test_target_is_fetched_once_and_cached(backend: EmulatedCloudBackend) -> None:
    target = backend.target()
    assert target == DeviceTarget(
        name="emulator", num_qubits=32, basis_gates=("rz", "sx", "x", "cx"), coupling_map=None
    )
    assert backend.target() is target


def test_full_lifecycle(backend: EmulatedCloudBackend) -> None:
    token = gateway_token()
    task_id = backend.submit(X_ON_BIT0, 300, token)
    first = backend.status(task_id)
    assert first.state is TaskState.QUEUED
    assert first.provider_state == "QUEUED"
    assert first.queue_position is not None

    seen = wait_terminal(backend, task_id)
    assert [s.state for s in seen][-2:] == [TaskState.RUNNING, TaskState.COMPLETED]

    result = backend.result(task_id)
    assert result.shots == 300
    assert result.counts == {"100": 300}  # bit 0 first
    assert result.metadata["device"] == "emulator"

    # The same client token never makes a second task.
    assert backend.submit(X_ON_BIT0, 300, token) == task_id
    assert backend.find_task(token) == task_id


def requests_for(cloud: CloudServer, task_id: str) -> list[str]:
    """``METHOD target`` of every request the cloud received about ``task_id``, in order."""
    lines = (cloud.data_dir / "received.log").read_bytes().split(b"\n")
    out = []
    for line in lines:
        if line.startswith(b">>> ") and task_id.encode() in line:
            _, _, method, target, _ = line.decode().split(" ")
            out.append(f"{method} {target}")
    return out


def test_the_completed_poll_carries_the_result_and_result_sends_nothing(
    cloud: CloudServer, backend: EmulatedCloudBackend
) -> None:
    task_id = backend.submit(BELL, 500, gateway_token())
    wait_terminal(backend, task_id)
    polls = requests_for(cloud, task_id)
    assert polls and all(p == f"GET /v1/tasks/{task_id}?include=result" for p in polls)

    result = backend.result(task_id)
    assert requests_for(cloud, task_id) == polls  # no request for the result
    # The same document as the result route's.
    with cloud.client() as http:
        separate = http.get(f"/v1/tasks/{task_id}/result").json()
    assert result.counts == separate["counts"]
    assert result.shots == separate["shots"] == 500
    assert result.metadata == separate["metadata"]

    # Used once: a second call asks the cloud, and gets the same.
    again = backend.result(task_id)
    assert requests_for(cloud, task_id)[len(polls) :] == [
        f"GET /v1/tasks/{task_id}/result",  # the test's own request above
        f"GET /v1/tasks/{task_id}/result",
    ]
    assert again == result


def test_a_poll_before_completion_keeps_nothing(cloud: CloudServer, backend: EmulatedCloudBackend) -> None:
    task_id = backend.submit(X_ON_BIT0, 10, gateway_token())
    assert backend.status(task_id).state is TaskState.QUEUED
    # No result came with the poll, so result() asks the cloud, which has none yet.
    with pytest.raises(PermanentBackendError, match="only COMPLETED tasks have results"):
        backend.result(task_id)
    assert requests_for(cloud, task_id)[-1] == f"GET /v1/tasks/{task_id}/result"
    backend.cancel(task_id)


def test_carried_results_are_bounded_oldest_first(
    cloud: CloudServer, backend: EmulatedCloudBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(emulated_cloud, "_CARRIED_RESULTS", 2)
    tasks = [backend.submit(X_ON_BIT0, 10 + i, gateway_token()) for i in range(3)]
    for task_id in tasks:
        wait_terminal(backend, task_id)
    # The first poll's result was dropped for the third: only that one is fetched again.
    for i, task_id in enumerate(tasks):
        assert backend.result(task_id).shots == 10 + i
    fetched = [t for t in tasks if f"GET /v1/tasks/{t}/result" in requests_for(cloud, t)]
    assert fetched == tasks[:1]


def test_threads_sharing_the_adapter_each_get_their_own_result(
    cloud: CloudServer, backend: EmulatedCloudBackend
) -> None:
    tasks = [backend.submit(X_ON_BIT0, 20 + i, gateway_token()) for i in range(4)]
    shots: dict[str, int] = {}
    errors: list[BaseException] = []

    def work(task_id: str) -> None:
        try:
            wait_terminal(backend, task_id)
            shots[task_id] = backend.result(task_id).shots
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in tasks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert shots == {t: 20 + i for i, t in enumerate(tasks)}
    assert not any(f"GET /v1/tasks/{t}/result" in requests_for(cloud, t) for t in tasks)


def test_bell_counts(backend: EmulatedCloudBackend) -> None:
    task_id = backend.submit(BELL, 1000, gateway_token())
    wait_terminal(backend, task_id)
    result = backend.result(task_id)
    assert set(result.counts) == {"00", "11"}
    assert sum(result.counts.values()) == 1000


def test_find_task_unknown_token_is_none(backend: EmulatedCloudBackend) -> None:
    assert backend.find_task(gateway_token()) is None


def test_cancel_and_result_of_unfinished_task(backend: EmulatedCloudBackend) -> None:
    task_id = backend.submit(X_ON_BIT0, 10, gateway_token())
    with pytest.raises(PermanentBackendError, match="only COMPLETED tasks have results"):
        backend.result(task_id)
    backend.cancel(task_id)
    assert backend.status(task_id).state is TaskState.CANCELLED
    backend.cancel(task_id)  # harmless once finished
    assert backend.status(task_id).state is TaskState.CANCELLED


def test_unknown_task_is_permanent(backend: EmulatedCloudBackend) -> None:
    with pytest.raises(PermanentBackendError, match="404"):
        backend.status("task-000000000000000000000000")


def test_bad_program_is_permanent(cloud: CloudServer, backend: EmulatedCloudBackend) -> None:
    token = gateway_token()
    received = (cloud.data_dir / "received.log").read_bytes()
    # The gateway's payload contract refuses it before it leaves; the cloud never sees it.
    with pytest.raises(PermanentBackendError, match="refused at the boundary: line 2: header"):
        backend.submit("OPENQASM 3.0;\nthis is not a program;\n", 10, token)
    assert (cloud.data_dir / "received.log").read_bytes() == received
    assert backend.find_task(token) is None


def test_bad_token_is_permanent(cloud: CloudServer) -> None:
    adapter = make_backend(cloud.base_url, token="wrong-token", ca_file=cloud.ca_file)
    try:
        with pytest.raises(PermanentBackendError, match="401: invalid bearer token"):
            adapter.target()
        with pytest.raises(PermanentBackendError, match="401"):
            adapter.submit(X_ON_BIT0, 10, gateway_token())
    finally:
        adapter.close()


def test_nothing_listening_is_transient() -> None:
    base_url = f"http://127.0.0.1:{free_port()}"
    adapter = make_backend(base_url, token="whatever", timeout=2.0, allow_plaintext=True)
    try:
        with pytest.raises(TransientBackendError):
            adapter.target()
        with pytest.raises(TransientBackendError):
            adapter.submit(X_ON_BIT0, 10, gateway_token())
        with pytest.raises(TransientBackendError):
            adapter.find_task(gateway_token())
    finally:
        adapter.close()


def test_egress_allow_list_refuses_other_destinations(cloud: CloudServer) -> None:
    token = gateway_token()
    adapter = make_backend(
        cloud.base_url, token=cloud.token, allowed="https://127.0.0.1:1", ca_file=cloud.ca_file
    )
    try:
        with pytest.raises(PermanentBackendError, match="allow-list") as caught:
            adapter.submit(X_ON_BIT0, 10, token)
        assert isinstance(caught.value.__cause__, EgressPolicyError)
    finally:
        adapter.close()
    # Refused before any byte left: the cloud never heard of this token.
    assert token.encode() not in (cloud.data_dir / "received.log").read_bytes()


def test_unpinned_self_signed_certificate_is_refused(cloud: CloudServer) -> None:
    # Without a CA file the system CAs apply, and they do not vouch for the cloud's own certificate.
    adapter = make_backend(cloud.base_url, token=cloud.token)
    try:
        with pytest.raises(TransientBackendError, match="certificate verify failed"):
            adapter.target()
    finally:
        adapter.close()


def test_unreadable_ca_file_is_permanent(cloud: CloudServer, tmp_path: Path) -> None:
    adapter = make_backend(cloud.base_url, token=cloud.token, ca_file=tmp_path / "missing.pem")
    try:
        with pytest.raises(PermanentBackendError, match="CA file"):
            adapter.target()
    finally:
        adapter.close()


def test_egress_client_uses_tls13_and_verifies(cloud: CloudServer) -> None:
    assert cloud.ca_file is not None
    egress = egress_to(cloud.base_url, ca_file=cloud.ca_file)
    try:
        response = egress.request("GET", f"{cloud.base_url}/healthz")
        assert response.status_code == 200
        assert egress.policy.min_version == "1.3"
        assert egress.policy.ca_file == cloud.ca_file
        assert response.extensions["qhybrid_tls"].version == "TLSv1.3"
    finally:
        egress.close()


# --- throttling and server errors ----------------------------------------------------------------
# The emulated cloud's fault injection covers throttling, 5xx and dropped connections (see
# tests/cloud/test_faults.py). This small stdlib HTTP server plays the answers the cloud never
# gives: an HTTP-date Retry-After, an unreadable success body, a bare-text error, a hang.


class _TroubleHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.endswith("/throttled"):
            self._answer(429, b'{"detail": "slow down"}', {"Retry-After": "7"})
        elif self.path.endswith("/broken"):
            self._answer(503, b"upstream down", {"Retry-After": formatdate(time.time() + 30, usegmt=True)})
        elif self.path.endswith("/garbled"):
            self._answer(200, b"<html>not json</html>", {})
        elif self.path.endswith("/reset"):
            # SO_LINGER 0: closing sends a TCP reset instead of an orderly end.
            self.request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.request.close()
            self.close_connection = True
        elif self.path.endswith("/slow"):
            time.sleep(1.5)
            self._answer(200, b"{}", {})
        else:
            self._answer(404, b'{"detail": "nothing here"}', {})

    def _answer(self, code: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(code)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Keep test output quiet."""


@pytest.fixture(scope="module")
def trouble_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _TroubleHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _trouble_backend(url: str, device: str, timeout: float = 5.0) -> EmulatedCloudBackend:
    # A plain-http test server, reached through the emulated cloud's route table.
    egress = egress_to(url, token="t", device=device, timeout=timeout, allow_plaintext=True)
    return EmulatedCloudBackend(name="cloud", base_url=url, device=device, egress=egress)


def test_throttling_is_transient_with_retry_after(trouble_url: str) -> None:
    with pytest.raises(TransientBackendError, match="429: slow down") as caught:
        _trouble_backend(trouble_url, "throttled").target()
    assert caught.value.retry_after == 7.0


def test_server_error_is_transient_with_http_date_retry_after(trouble_url: str) -> None:
    with pytest.raises(TransientBackendError, match="503: upstream down") as caught:
        _trouble_backend(trouble_url, "broken").target()
    assert caught.value.retry_after is not None
    assert 25.0 <= caught.value.retry_after <= 31.0


def test_unreadable_success_body_is_transient(trouble_url: str) -> None:
    with pytest.raises(TransientBackendError, match="unreadable JSON"):
        _trouble_backend(trouble_url, "garbled").target()


def test_connection_reset_is_transient(trouble_url: str) -> None:
    with pytest.raises(TransientBackendError, match="connection dropped"):
        _trouble_backend(trouble_url, "reset").target()


def test_timeout_is_transient(trouble_url: str) -> None:
    with pytest.raises(TransientBackendError, match="timed out"):
        _trouble_backend(trouble_url, "slow", timeout=0.3).target()


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("", None), ("3", 3.0), (" 1.5 ", 1.5), ("-4", 0.0), ("soon", None), ("nan", None)],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_parse_retry_after_http_date() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after(formatdate(now + 120, usegmt=True), now=now) == pytest.approx(120.0)
    assert parse_retry_after(formatdate(now - 120, usegmt=True), now=now) == 0.0
