"""Tenants: another tenant's job does not exist for the caller; every route but /healthz needs a key."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from qhybrid.api.auth import Authenticator
from qhybrid.api.main import create_app
from qhybrid.core.config import Settings
from qhybrid.jobs.database import Database
from qhybrid.jobs.tenants import KeyStore, pepper_of
from tests.api.conftest import valid_request
from tests.support.api_server import running_api

A = {"Authorization": "Bearer key-of-a"}
B = {"Authorization": "Bearer key-of-b"}


@pytest.fixture
def two_tenants(settings: Settings) -> Iterator[TestClient]:
    """The API with tenant a and tenant b, each with a key from QHYBRID_API_KEYS."""
    keyed = settings.model_copy(update={"api_keys": [SecretStr("a:key-of-a"), SecretStr("b:key-of-b")]})
    with TestClient(create_app(keyed)) as client:
        yield client


def _submit(client: TestClient, headers: dict[str, str], **extra: str) -> str:
    response = client.post("/optimize_portfolio", json=valid_request(), headers={**headers, **extra})
    assert response.status_code == 202, response.text
    job_id: str = response.json()["job_id"]
    return job_id


def test_another_tenants_job_is_not_found_on_read_list_and_cancel(two_tenants: TestClient) -> None:
    job_of_a = _submit(two_tenants, A)
    job_of_b = _submit(two_tenants, B)

    read = two_tenants.get(f"/jobs/{job_of_a}", headers=B)
    assert read.status_code == 404
    assert read.json()["errors"][0]["field"] == "job_id"
    # The answer is the one for a job that never existed: nothing tells B that A's id is real.
    never = two_tenants.get("/jobs/00000000-0000-0000-0000-000000000000", headers=B)
    assert read.json()["message"].replace(job_of_a, "ID") == never.json()["message"].replace(
        "00000000-0000-0000-0000-000000000000", "ID"
    )

    listed_by_b = [item["job_id"] for item in two_tenants.get("/jobs", headers=B).json()["items"]]
    assert listed_by_b == [job_of_b]
    listed_by_a = [item["job_id"] for item in two_tenants.get("/jobs", headers=A).json()["items"]]
    assert listed_by_a == [job_of_a]

    cancel = two_tenants.post(f"/jobs/{job_of_a}/cancel", headers=B)
    assert cancel.status_code == 404
    untouched = two_tenants.get(f"/jobs/{job_of_a}", headers=A).json()
    assert untouched["status"] == "accepted"
    assert untouched["cancel_requested"] is False
    assert two_tenants.post(f"/jobs/{job_of_a}/cancel", headers=A).status_code == 202


def test_an_idempotency_key_replayed_by_another_tenant_is_its_own_job(two_tenants: TestClient) -> None:
    first = _submit(two_tenants, A, **{"Idempotency-Key": "rebalance-2026-12-06"})
    assert _submit(two_tenants, A, **{"Idempotency-Key": "rebalance-2026-12-06"}) == first
    # The same key with the same body: B gets a job of its own, not A's id.
    same_body = _submit(two_tenants, B, **{"Idempotency-Key": "rebalance-2026-12-06"})
    assert same_body != first
    # With another body: no 409 telling B that the key is in use elsewhere.
    other_body = two_tenants.post(
        "/optimize_portfolio",
        json=valid_request(budget=2),
        headers={**B, "Idempotency-Key": "rebalance-2026-12-07"},
    )
    assert other_body.status_code == 202
    a_conflict = two_tenants.post(
        "/optimize_portfolio",
        json=valid_request(budget=2),
        headers={**A, "Idempotency-Key": "rebalance-2026-12-06"},
    )
    assert a_conflict.status_code == 409  # a tenant's own reuse is still a conflict


@pytest.mark.parametrize("path", ["/openapi.json", "/docs", "/redoc", "/readyz", "/jobs", "/nowhere"])
def test_every_route_but_healthz_needs_a_key(two_tenants: TestClient, path: str) -> None:
    refused = two_tenants.get(path)
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == "Bearer"
    assert refused.json()["errors"] == [
        {
            "field": "authorization",
            "rule": "unauthorized",
            "message": "a valid 'Bearer <api key>' header is required",
        }
    ]
    assert two_tenants.get(path, headers={"Authorization": "Bearer key-of-c"}).status_code == 401
    assert two_tenants.get(path, headers={"Authorization": "Basic key-of-a"}).status_code == 401
    assert two_tenants.get(path, headers=A).status_code in (200, 404)
    assert two_tenants.get("/healthz").status_code == 200


def test_database_keys_authenticate_until_revoked(settings: Settings) -> None:
    db = Database(settings.resolved_database_url)
    db.migrate()
    keys = KeyStore(db, pepper_of(settings))
    info, key = keys.create("desk-7")
    revoked_info, revoked_key = keys.create("desk-7")
    keys.revoke(revoked_info.id)
    with TestClient(create_app(settings)) as client:
        headers = {"Authorization": f"Bearer {key}"}
        job_id = _submit(client, headers)
        assert client.get(f"/jobs/{job_id}", headers=headers).status_code == 200
        assert client.get("/jobs").status_code == 401  # a database key closes the API too
        assert client.get("/jobs", headers={"Authorization": f"Bearer {revoked_key}"}).status_code == 401
    with db.read() as session:
        from qhybrid.jobs.models import ApiKey, Job

        stored = session.get(ApiKey, info.id)
        assert stored is not None and key not in stored.key_hash and stored.prefix == key[:12]
        job = session.get(Job, job_id)
        assert job is not None and job.tenant == "desk-7"
    db.dispose()


def test_without_keys_the_api_is_open_and_says_so(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="qhybrid.api"), TestClient(create_app(settings)) as client:
        job_id = _submit(client, {})
        assert client.get(f"/jobs/{job_id}").json()["status"] == "accepted"
        assert client.get("/openapi.json").status_code == 200
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("the API is open to anyone" in message for message in warnings)


def test_readiness_tells_nothing_internal(settings: Settings) -> None:
    broken = settings.model_copy(
        update={"redis_url": "redis://127.0.0.1:1/0", "api_keys": [SecretStr("a:key-of-a")]}
    )
    with TestClient(create_app(broken)) as client:
        response = client.get("/readyz", headers=A)
        assert response.status_code == 503
        assert response.json() == {
            "status": "unavailable",
            "checks": {"database": "ok", "queue": "failing"},
        }


def test_an_unauthenticated_body_is_refused_before_it_is_read(settings: Settings) -> None:
    """A declared 7.9 MB body that never arrives gets its 401 at once, and the connection closes."""
    keyed = settings.model_copy(update={"api_keys": [SecretStr("a:key-of-a")]})
    with running_api(create_app(keyed)) as (host, port), socket.create_connection((host, port)) as sock:
        sock.settimeout(30)
        sock.sendall(
            b"POST /optimize_portfolio HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 7900000\r\n\r\n{"assets": ['
        )
        answer = b""
        while chunk := sock.recv(65536):  # the server closes: recv returns b"" instead of waiting
            answer += chunk
    head = answer.split(b"\r\n", 1)[0]
    assert head == b"HTTP/1.1 401 Unauthorized"
    assert b"connection: close" in answer.lower()


def test_an_open_api_asks_the_database_for_keys_once_per_window(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Counted, not timed: with a window longer than the test, only the check at start asks.
    monkeypatch.setattr("qhybrid.api.auth.OPEN_CHECK_SECONDS", 3600.0)
    calls: list[int] = []
    original = KeyStore.any_keys

    def counted(self: KeyStore) -> bool:
        calls.append(1)
        return original(self)

    monkeypatch.setattr(KeyStore, "any_keys", counted)
    # Inside the window a keyless request is let through without a thread hop to resolve().
    resolved: list[str | None] = []
    resolve = Authenticator.resolve

    def counted_resolve(self: Authenticator, key: str | None) -> str | None:
        resolved.append(key)
        return resolve(self, key)

    monkeypatch.setattr(Authenticator, "resolve", counted_resolve)
    with TestClient(create_app(settings)) as client:
        for _ in range(5):
            _submit(client, {})
        assert client.get("/jobs").status_code == 200
        assert len(calls) == 1
        assert resolved == []
        # A window that has run out asks again, and a key created meanwhile closes the API.
        services = client.app.state.services  # type: ignore[attr-defined]
        services.auth._keys.create("desk-9")
        assert client.get("/jobs").status_code == 200  # still inside the window
        services.auth._open_until = 0.0
        assert client.get("/jobs").status_code == 401
        assert len(calls) == 2
        assert resolved == [None]
