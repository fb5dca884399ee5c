"""Limits under abuse: rate limit, per-tenant caps, trickling clients, absurd magnitudes, forged cursors."""

from __future__ import annotations

import base64
import select
import socket
import time
from collections.abc import Iterator

import pytest
import redis
from fastapi.testclient import TestClient
from pydantic import SecretStr

from qhybrid.api.main import create_app
from qhybrid.api.server import HeaderDeadlineProtocol, uvicorn_options
from qhybrid.core.config import Settings
from tests.api.conftest import valid_request
from tests.support.api_server import running_api

A = {"Authorization": "Bearer key-of-a"}
B = {"Authorization": "Bearer key-of-b"}
KEYS = [SecretStr("a:key-of-a"), SecretStr("b:key-of-b")]


def _keyed(settings: Settings, **update: object) -> Settings:
    return settings.model_copy(update={"api_keys": KEYS, **update})


# ------------------------------------------------------------------------------ rate limit


def _assert_rate_limited(response_status: int, headers: dict[str, str], body: dict[str, object]) -> None:
    assert response_status == 429
    assert 1 <= int(headers["retry-after"]) <= 60
    assert body["errors"] == [
        {
            "field": "tenant",
            "rule": "rate_limited",
            "message": str(body["message"]).split(": ", 1)[1],
        }
    ]
    assert "QHYBRID_RATE_LIMIT" in str(body["message"])


def test_rate_limit_per_tenant_answers_429_with_retry_after(settings: Settings) -> None:
    with TestClient(create_app(_keyed(settings, rate_limit="2/minute"))) as client:
        for _ in range(2):
            assert client.post("/optimize_portfolio", json=valid_request(), headers=A).status_code == 202
        refused = client.post("/optimize_portfolio", json=valid_request(), headers=A)
        _assert_rate_limited(refused.status_code, dict(refused.headers), refused.json())
        # Another tenant has its own count; reading is not limited.
        assert client.post("/optimize_portfolio", json=valid_request(), headers=B).status_code == 202
        assert client.get("/jobs", headers=A).status_code == 200
        assert len(client.get("/jobs", headers=A).json()["items"]) == 2


def test_wrong_keys_from_one_address_get_429_past_the_limit(settings: Settings) -> None:
    with TestClient(create_app(_keyed(settings, auth_failure_limit="3/minute"))) as client:
        wrong = {"Authorization": "Bearer guess"}
        assert [client.get("/jobs", headers=wrong).status_code for _ in range(3)] == [401, 401, 401]
        refused = client.post("/optimize_portfolio", json=valid_request(), headers=wrong)
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert refused.json()["errors"][0]["field"] == "authorization"
        assert "QHYBRID_AUTH_FAILURE_LIMIT" in refused.json()["message"]
        assert client.get("/jobs").status_code == 429  # no key at all counts as a failure too
        # Only failures count: a valid key from the same address still works.
        assert client.get("/jobs", headers=A).status_code == 200


@pytest.fixture
def limit_queue(queue_name: str, redis_server: str) -> Iterator[str]:
    """A Huey queue name on Redis; the limiter's keys under it are removed afterwards."""
    yield queue_name
    client = redis.Redis.from_url(redis_server)
    keys = list(client.scan_iter(match=f"qhybrid-limits:{queue_name}*"))
    if keys:
        client.delete(*keys)


def test_with_redis_every_api_process_shares_the_count(
    settings: Settings, redis_server: str, limit_queue: str
) -> None:
    shared = _keyed(settings, rate_limit="2/minute", redis_url=redis_server, queue_name=limit_queue)
    # Two applications, as two API processes would be: the third submission is refused by either.
    with TestClient(create_app(shared)) as first, TestClient(create_app(shared)) as second:
        assert first.app.state.services.limiter.shared  # type: ignore[attr-defined]
        assert first.post("/optimize_portfolio", json=valid_request(), headers=A).status_code == 202
        assert second.post("/optimize_portfolio", json=valid_request(), headers=A).status_code == 202
        refused = first.post("/optimize_portfolio", json=valid_request(), headers=A)
        _assert_rate_limited(refused.status_code, dict(refused.headers), refused.json())
        assert second.post("/optimize_portfolio", json=valid_request(), headers=A).status_code == 429
    assert list(redis.Redis.from_url(redis_server).scan_iter(match=f"qhybrid-limits:{limit_queue}*"))


def test_rate_limit_setting_is_validated() -> None:
    assert Settings(rate_limit="60/minute").rate_limit == "60/minute"
    assert Settings(rate_limit="10 per 5 seconds").rate_limit == "10 per 5 seconds"
    with pytest.raises(ValueError, match="rate_limit"):
        Settings(rate_limit="lots")
    with pytest.raises(ValueError, match="rate_limit"):
        Settings(rate_limit="0/minute")
    with pytest.raises(ValueError, match="auth_failure_limit"):
        Settings(auth_failure_limit="often")
    assert Settings().auth_failure_limit == "60/minute"


# ------------------------------------------------------------------------------------ caps


def test_active_jobs_cap_per_tenant(settings: Settings) -> None:
    with TestClient(create_app(_keyed(settings, max_active_jobs_per_tenant=1))) as client:
        first = client.post(
            "/optimize_portfolio", json=valid_request(), headers={**A, "Idempotency-Key": "k1"}
        )
        assert first.status_code == 202
        refused = client.post("/optimize_portfolio", json=valid_request(budget=2), headers=A)
        assert refused.status_code == 429
        assert refused.json()["errors"][0]["field"] == "tenant"
        assert refused.json()["errors"][0]["rule"] == "max_active_jobs"
        assert "QHYBRID_MAX_ACTIVE_JOBS_PER_TENANT" in refused.json()["message"]
        # A replay creates nothing, so it is never capped; the other tenant is not affected.
        replay = client.post(
            "/optimize_portfolio", json=valid_request(), headers={**A, "Idempotency-Key": "k1"}
        )
        assert replay.status_code == 202 and replay.json()["job_id"] == first.json()["job_id"]
        assert client.post("/optimize_portfolio", json=valid_request(), headers=B).status_code == 202
        # Once the job ends, the tenant may submit again.
        job_id = first.json()["job_id"]
        assert client.post(f"/jobs/{job_id}/cancel", headers=A).status_code == 202
        assert client.post("/optimize_portfolio", json=valid_request(), headers=A).status_code == 202


def test_estimated_cost_per_day_cap(settings: Settings) -> None:
    priced = _keyed(settings, cloud_price_per_task=1.0, max_cost_per_day=2.5)
    with TestClient(create_app(priced)) as client:
        for _ in range(2):
            assert client.post("/optimize_portfolio", json=valid_request(), headers=A).status_code == 202
        refused = client.post("/optimize_portfolio", json=valid_request(), headers=A)
        assert refused.status_code == 429
        assert refused.json()["errors"][0]["rule"] == "max_cost_per_day"
        assert "3.00 USD in the last 24 hours" in refused.json()["message"]
        assert client.post("/optimize_portfolio", json=valid_request(), headers=B).status_code == 202
        assert len(client.get("/jobs", headers=A).json()["items"]) == 2


def test_a_cost_cap_refuses_jobs_whose_cost_is_unknown(settings: Settings) -> None:
    with TestClient(create_app(_keyed(settings, max_cost_per_day=10.0))) as client:
        unknown = client.post("/optimize_portfolio", json=valid_request(backend="ibm:ibm_torino"), headers=A)
        # Either the backend is refused by name or its cost; never accepted without a cost.
        assert unknown.status_code == 422
        assert unknown.json()["errors"][0]["field"] == "backend"


# ------------------------------------------------------------------------ trickling clients


class _QuickHeaders(HeaderDeadlineProtocol):
    header_timeout = 1.0


def _trickle(
    sock: socket.socket, data: bytes, pause: float = 0.2, give_up: float = 120.0
) -> tuple[bytes, int]:
    """Send ``data`` a byte at a time; stop when the server closes the connection.

    Returns:
        What the server answered, and how many bytes were sent before it closed.
    """
    answer = b""
    started = time.monotonic()
    for sent, byte in enumerate(data):
        try:
            sock.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            return answer, sent
        readable, _, _ = select.select([sock], [], [], pause)
        if readable:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                return answer, sent
            if not chunk:
                return answer, sent + 1
            answer += chunk
            while readable:
                readable, _, _ = select.select([sock], [], [], 0.5)
                if readable:
                    chunk = sock.recv(65536)
                    if not chunk:
                        return answer, sent + 1
                    answer += chunk
        assert time.monotonic() - started < give_up, "the server never closed the connection"
    return answer, len(data)


def test_a_body_trickled_byte_by_byte_is_cut_off(settings: Settings) -> None:
    app = create_app(_keyed(settings, body_timeout_seconds=1.0))
    body = b'{"assets": [' + b" " * 2000 + b"]}"
    head = (
        b"POST /optimize_portfolio HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer key-of-a\r\n"
        b"Content-Type: application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    options = uvicorn_options(settings) | {"http": _QuickHeaders}
    with running_api(app, **options) as (host, port), socket.create_connection((host, port)) as sock:
        sock.sendall(head)
        answer, sent = _trickle(sock, body)
    # 2,000 bytes at 5 a second would take 400 s; the server answered and closed long before.
    assert sent < len(body)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b"QHYBRID_BODY_TIMEOUT_SECONDS" in answer


def test_headers_trickled_byte_by_byte_are_cut_off(settings: Settings) -> None:
    app = create_app(_keyed(settings))
    head = b"GET /jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer key-of-a\r\nX-Padding: " + b"p" * 2000
    options = uvicorn_options(settings) | {"http": _QuickHeaders}
    with running_api(app, **options) as (host, port):
        with socket.create_connection((host, port)) as sock:
            answer, sent = _trickle(sock, head)
        assert sent < len(head) and answer == b""  # closed, without ever reaching the application
        # A client that sends its request at once is served, and again on the same connection.
        with socket.create_connection((host, port)) as sock:
            sock.settimeout(30)
            request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
            for _ in range(2):
                sock.sendall(request)
                assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")


def test_without_the_header_deadline_a_trickler_stays_connected(settings: Settings) -> None:
    """The positive control: uvicorn's own protocol lets the same trickle go on past the deadline."""
    head = b"GET /jobs HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 8  # 5 s at 5 bytes a second
    with (
        running_api(create_app(_keyed(settings)), http="auto") as (host, port),
        socket.create_connection((host, port)) as sock,
    ):
        answer, sent = _trickle(sock, head)
    assert (answer, sent) == (b"", len(head))


def test_serve_passes_the_limits_to_uvicorn() -> None:
    options = uvicorn_options(Settings(keep_alive_seconds=7, max_connections=50))
    assert options["timeout_keep_alive"] == 7
    assert options["limit_concurrency"] == 50
    assert options["http"] == "qhybrid.api.server:HeaderDeadlineProtocol"


# ------------------------------------------------------------------------ absurd magnitudes


@pytest.mark.parametrize(
    ("change", "field", "rule"),
    [
        (
            {"assets": [{"name": "AAPL", "expected_return": 1e308}, *valid_request()["assets"][1:]]},
            "assets[0].expected_return",
            "less_than_equal",
        ),
        (
            {"assets": [{"name": "AAPL", "expected_return": -2e3}, *valid_request()["assets"][1:]]},
            "assets[0].expected_return",
            "greater_than_equal",
        ),
        (
            {"covariance": [[1e300, 0.0, 0.0], [0.0, 1e300, 0.0], [0.0, 0.0, 1e300]]},
            "covariance",
            "max_magnitude",
        ),
    ],
    ids=["return-1e308", "return-minus-2e3", "covariance-1e300"],
)
def test_absurd_magnitudes_are_refused_naming_the_field(
    client: TestClient, change: dict[str, object], field: str, rule: str
) -> None:
    response = client.post("/optimize_portfolio", json=valid_request(**change))
    assert response.status_code == 422
    assert {"field": field, "rule": rule} == {
        key: response.json()["errors"][0][key] for key in ("field", "rule")
    }


def test_absurd_prices_are_refused(client: TestClient) -> None:
    request = {
        "prices": {"assets": ["A", "B", "C"], "values": [[1.0, 2.0, 3.0], [1.1, 2e13, 3.1], [1.2, 2.2, 3.2]]},
        "budget": 1,
    }
    response = client.post("/optimize_portfolio", json=request)
    assert response.status_code == 422
    error = response.json()["errors"][0]
    assert (error["field"], error["rule"]) == ("prices.values", "max_magnitude")
    assert "at most 1e+12" in error["message"]


# ------------------------------------------------------------------------- forged cursors


@pytest.mark.parametrize(
    "raw",
    [
        "9999-12-31T23:59:59|x",
        "9999-12-31T23:59:59-01:00|x",
        "0001-01-01T00:00:00+00:00|x",
        "2026-12-06T10:00:00+00:00|' OR 1=1 --",
        "2026-12-06T10:00:00+05:00|abc",
    ],
)
def test_forged_cursors_are_a_4xx_naming_the_cursor(client: TestClient, raw: str) -> None:
    cursor = base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")
    response = client.get("/jobs", params={"cursor": cursor})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "cursor"
