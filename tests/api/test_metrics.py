"""GET /metrics: Prometheus text with qhybrid_ metrics, route templates as labels, the key when auth is on."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from pydantic import SecretStr

from qhybrid.api.main import create_app
from qhybrid.core.config import Settings
from tests.api.conftest import valid_request


def value(text: str, series: str) -> float:
    match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
    assert match is not None, f"{series} not in the metrics"
    return float(match.group(1))


def test_metrics_count_requests_by_route_template_and_read_jobs_and_queue(client: TestClient) -> None:
    before = client.get("/metrics").text
    route = 'qhybrid_http_requests_total{code="202",method="POST",route="/optimize_portfolio"}'
    accepted_before = value(before, route) if route in before else 0.0
    job_id = client.post("/optimize_portfolio", json=valid_request()).json()["job_id"]
    client.get(f"/jobs/{job_id}")
    client.get("/jobs/no-such-job")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert value(text, route) == accepted_before + 1
    assert value(text, 'qhybrid_http_requests_total{code="200",method="GET",route="/jobs/{job_id}"}') >= 1
    assert value(text, 'qhybrid_http_requests_total{code="404",method="GET",route="/jobs/{job_id}"}') >= 1
    assert job_id not in text and "no-such-job" not in text  # templates, never raw paths
    assert (
        'qhybrid_http_request_duration_seconds_bucket{le="0.005",method="POST",route="/optimize_portfolio"}'
        in text
    )
    assert value(text, 'qhybrid_jobs{state="accepted"}') == 1
    assert value(text, 'qhybrid_jobs{state="completed"}') == 0
    assert value(text, "qhybrid_queue_pending") == 1  # the job's kick
    for family in (
        "qhybrid_job_transitions_total",
        "qhybrid_job_state_seconds",
        "qhybrid_provider_task_seconds",
        "qhybrid_step_retries_total",
        "qhybrid_fallbacks_total",
        "qhybrid_remote_resubmissions_total",
        "qhybrid_egress_requests_total",
        "qhybrid_egress_bytes_total",
        "qhybrid_audit_entries_total",
    ):
        assert f"# TYPE {family} " in text, family


def test_metrics_are_for_the_operations_tenant_once_keys_exist(settings: Settings) -> None:
    keyed = settings.model_copy(
        update={"api_keys": [SecretStr("desk-7:k-desk"), SecretStr("operations:k-ops")]}
    )
    with TestClient(create_app(keyed)) as client:
        refused = client.get("/metrics")
        assert refused.status_code == 401
        assert refused.json()["errors"][0]["field"] == "authorization"
        tenant = client.get("/metrics", headers={"Authorization": "Bearer k-desk"})
        assert tenant.status_code == 403  # a tenant does not read the whole deployment's counts
        assert "QHYBRID_METRICS_TENANT" in tenant.json()["message"]
        assert client.get("/metrics", headers={"Authorization": "Bearer k-ops"}).status_code == 200
        # The dashboard's page and files are served without a key (they hold no data) ...
        assert client.get("/").status_code == 200
        assert client.get("/static/dashboard/favicon.svg").status_code == 200
        # ... and a path that climbs out of /static is not a way around the key.
        assert client.get("/static/../jobs").status_code in (401, 404)
        assert client.get("/docs").status_code == 401
