"""GET /jobs, GET /jobs/{id}, POST /jobs/{id}/cancel, health probes and the OpenAPI page."""

from __future__ import annotations

import itertools
import json
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import update

from qhybrid.api.main import create_app
from qhybrid.core.config import Settings
from qhybrid.demo import sample_request
from qhybrid.domain.request import JobRequest
from qhybrid.domain.result import JobResult
from qhybrid.domain.states import JobState
from qhybrid.jobs.models import Job, utcnow
from qhybrid.jobs.pipeline import estimate, fall_back
from qhybrid.jobs.store import JobStore
from tests.api.conftest import valid_request


def submit(client: TestClient) -> str:
    response = client.post("/optimize_portfolio", json=valid_request())
    assert response.status_code == 202
    job_id: str = response.json()["job_id"]
    return job_id


def test_unknown_job_is_404_naming_the_id(client: TestClient) -> None:
    response = client.get("/jobs/00000000-0000-0000-0000-000000000000")
    assert response.status_code == 404
    assert response.json()["errors"][0]["field"] == "job_id"
    assert client.post("/jobs/nope/cancel").status_code == 404


def test_job_document_has_the_contract_fields(client: TestClient) -> None:
    job = client.get(f"/jobs/{submit(client)}").json()
    for field in (
        "job_id",
        "status",
        "created_at",
        "updated_at",
        "events",
        "result",
        "remote_task",
        "request",
    ):
        assert field in job
    assert job["result"] is None
    assert job["created_at"].endswith("Z") or job["created_at"].endswith("+00:00")


def test_paging_walks_every_job_once(client: TestClient) -> None:
    ids = {submit(client) for _ in range(5)}
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, str | int] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/jobs", params=params).json()
        seen.extend(item["job_id"] for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids)
    assert client.get("/jobs", params={"status": "accepted"}).json()["items"]


def test_paging_parameters_are_validated(client: TestClient) -> None:
    for params, field in (
        ({"limit": 0}, "limit"),
        ({"limit": 1000}, "limit"),
        ({"status": "sleeping"}, "status"),
        ({"cursor": "garbage!"}, "cursor"),
    ):
        response = client.get("/jobs", params=params)
        assert response.status_code == 422, params
        assert response.json()["errors"][0]["field"] == field


def test_cancel_before_any_work_is_immediate_and_final(client: TestClient) -> None:
    job_id = submit(client)
    response = client.post(f"/jobs/{job_id}/cancel")
    assert response.status_code == 202
    job = response.json()
    assert job["status"] == "cancelled"
    assert [e["status"] for e in job["events"]] == ["accepted", "cancelled"]
    again = client.post(f"/jobs/{job_id}/cancel")
    assert again.status_code == 409
    assert "already cancelled" in again.json()["message"]


def test_cancel_of_a_job_a_worker_holds_is_flagged_and_kicked(client: TestClient) -> None:
    job_id = submit(client)
    store = client.app.state.services.store  # type: ignore[attr-defined]
    assert store.claim(job_id, owner="busy-worker", lease_seconds=60) is not None
    response = client.post(f"/jobs/{job_id}/cancel")
    assert response.status_code == 202
    assert response.json()["status"] == "accepted"
    assert response.json()["cancel_requested"] is True
    pending = client.app.state.services.queue.huey.pending()  # type: ignore[attr-defined]
    assert [t.args for t in pending] == [(job_id,), (job_id,)]  # the submit kick and the cancel kick


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"database": "ok", "queue": "ok"}}


def test_readiness_reports_a_dead_queue(settings: Settings) -> None:
    broken = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    with TestClient(create_app(broken)) as client:
        response = client.get("/readyz")
        assert response.status_code == 503
        checks = response.json()["checks"]
        assert checks["database"] == "ok"
        assert checks["queue"] == "failing"  # the reason is in the log, not in the answer
        # Accepting still works: the job is stored, the reconciler will kick it once Redis is back.
        accepted = client.post("/optimize_portfolio", json=valid_request())
        assert accepted.status_code == 202
        assert client.get(accepted.headers["location"]).json()["status"] == "accepted"


def test_openapi_documents_the_routes(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert {
        "/optimize_portfolio",
        "/jobs",
        "/jobs/{job_id}",
        "/jobs/{job_id}/cancel",
        "/healthz",
        "/readyz",
    } <= set(spec["paths"])
    assert client.get("/docs").status_code == 200


# ------------------------------------------------------------------------- ergonomics (issue 11)


def complete_with_a_real_result(client: TestClient, job_id: str) -> dict[str, Any]:
    """Write a real classical result (the pipeline's own fallback answer) into the job's row."""
    settings: Settings = client.app.state.services.settings  # type: ignore[attr-defined]
    request = JobRequest.model_validate(valid_request())
    result = fall_back(request, estimate(request), seed=7, reason="test: no QPU", settings=settings)
    document = result.model_dump(mode="json", exclude_unset=True)
    store: JobStore = client.app.state.services.store  # type: ignore[attr-defined]
    with store.db.write() as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(state=JobState.COMPLETED.value, result=document, finished_at=utcnow())
        )
    return document


def test_a_price_history_job_document_is_small_unless_the_request_is_asked_for(client: TestClient) -> None:
    body = sample_request()  # the demo's 10 assets × 756 daily closes
    assert len(body["prices"]["assets"]) == 10 and len(body["prices"]["values"]) >= 755
    accepted = client.post("/optimize_portfolio", json=body)
    assert accepted.status_code == 202
    location = accepted.headers["location"]
    lean = client.get(location)
    assert lean.json()["request"] is None
    assert len(lean.content) < 20_000
    full = client.get(location, params={"include": "request"})
    assert full.json()["request"]["prices"]["assets"] == body["prices"]["assets"]
    assert len(full.content) > 50_000  # the price history is what made it large
    refused = client.get(location, params={"include": "everything"})
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["field"] == "include[0]"


def test_retry_after_is_sent_while_a_job_is_unfinished(client: TestClient) -> None:
    accepted = client.post("/optimize_portfolio", json=valid_request())
    assert accepted.headers["retry-after"] == "1"
    location = accepted.headers["location"]
    assert int(client.get(location).headers["retry-after"]) >= 1
    client.post(f"{location}/cancel")
    assert "retry-after" not in client.get(location).headers


def test_the_result_route_answers_the_typed_result_or_says_why_not(client: TestClient) -> None:
    assert client.get("/jobs/nope/result").status_code == 404
    job_id = submit(client)
    early = client.get(f"/jobs/{job_id}/result")
    assert early.status_code == 409
    assert early.json()["errors"][0]["field"] == "status"
    assert "accepted" in early.json()["message"]
    assert early.headers["retry-after"] == "1"
    stored = complete_with_a_real_result(client, job_id)
    answer = client.get(f"/jobs/{job_id}/result")
    assert answer.status_code == 200
    result = JobResult.model_validate(answer.json())
    assert result.selected == stored["selected"]
    assert result.source == "classical_fallback"
    cancelled = submit(client)
    client.post(f"/jobs/{cancelled}/cancel")
    assert client.get(f"/jobs/{cancelled}/result").status_code == 409


def test_the_status_filter_takes_several_values_and_list_items_carry_the_selection(
    client: TestClient,
) -> None:
    accepted, cancelled, completed = submit(client), submit(client), submit(client)
    client.post(f"/jobs/{cancelled}/cancel")
    stored = complete_with_a_real_result(client, completed)

    def listed(params: dict[str, Any] | list[tuple[str, str]]) -> set[str]:
        response = client.get("/jobs", params=params)
        assert response.status_code == 200, response.text
        return {item["job_id"] for item in response.json()["items"]}

    assert listed([("status", "accepted"), ("status", "cancelled")]) == {accepted, cancelled}
    assert listed({"status": "completed,cancelled"}) == {completed, cancelled}
    assert listed({"status": "accepted"}) == {accepted}
    items = {item["job_id"]: item for item in client.get("/jobs").json()["items"]}
    assert items[completed]["selected"] == stored["selected"]
    assert items[accepted]["selected"] is None
    refused = client.get("/jobs", params=[("status", "accepted"), ("status", "asleep")])
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["field"] == "status"
    assert "asleep" in refused.json()["message"]


def read_events(client: TestClient, url: str, headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Parse a finite event stream into its messages (comments and retry lines left out)."""
    messages: list[dict[str, Any]] = []
    with client.stream("GET", url, headers=headers or {}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        current: dict[str, Any] = {}
        for line in response.iter_lines():
            if not line:
                if "event" in current:
                    messages.append(current)
                current = {}
            elif line.startswith(("id:", "event:", "data:")):
                name, value = line.split(":", 1)
                current[name] = json.loads(value) if name == "data" else value.strip()
    return messages


def test_the_event_stream_of_a_finished_job_replays_its_transitions_and_resumes(client: TestClient) -> None:
    job_id = submit(client)
    client.post(f"/jobs/{job_id}/cancel")
    messages = read_events(client, f"/jobs/{job_id}/events")
    assert [m["event"] for m in messages] == ["transition", "transition", "end"]
    assert [m["data"]["status"] for m in messages] == ["accepted", "cancelled", "cancelled"]
    document = client.get(f"/jobs/{job_id}").json()
    assert [int(m["id"]) for m in messages[:2]] == [e["id"] for e in document["events"]]
    resumed = read_events(client, f"/jobs/{job_id}/events", {"Last-Event-ID": messages[0]["id"]})
    assert [m["data"]["status"] for m in resumed] == ["cancelled", "cancelled"]
    assert client.get("/jobs/nope/events").status_code == 404
    bad = client.get(f"/jobs/{job_id}/events", headers={"Last-Event-ID": "x"})
    assert bad.status_code == 422


def test_the_frontier_is_long_only_efficient_and_places_the_answer(client: TestClient) -> None:
    job_id = submit(client)
    before = client.get(f"/jobs/{job_id}/frontier").json()
    assert before["chosen"] is None
    assert [a["name"] for a in before["assets"]] == ["AAPL", "MSFT", "KO"]
    points = before["points"]
    assert len(points) == 30
    returns = [p["expected_return"] for p in points]
    vols = [p["volatility"] for p in points]
    assert returns == sorted(returns)
    assert all(b >= a - 1e-9 for a, b in itertools.pairwise(vols))  # the efficient branch
    for point in points:
        assert all(w >= 0 for w in point["weights"].values())
        assert abs(sum(point["weights"].values()) - 1) < 1e-4
    assert abs(returns[-1] - 0.0012) < 1e-9  # ends on the best asset alone
    stored = complete_with_a_real_result(client, job_id)
    after = client.get(f"/jobs/{job_id}/frontier", params={"points": 5}).json()
    assert len(after["points"]) == 5
    chosen = after["chosen"]
    assert chosen["selected"] == stored["selected"]
    # No long-only portfolio beats the frontier: the answer lies on or below it.
    assert chosen["volatility"] >= min(vols) - 1e-9
    assert client.get("/jobs/nope/frontier").status_code == 404


def test_swagger_ui_and_the_dashboard_are_served_from_the_wheel(client: TestClient) -> None:
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert "/static/swagger-ui/swagger-ui-bundle.js" in docs.text
    assert "cdn" not in docs.text.lower() and "https://" not in docs.text
    assert "default-src 'self'" in docs.headers["content-security-policy"]
    for asset in ("swagger-ui/swagger-ui-bundle.js", "swagger-ui/swagger-ui.css", "dashboard/favicon.svg"):
        assert client.get(f"/static/{asset}").status_code == 200, asset
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert client.get("/redoc").status_code == 404
