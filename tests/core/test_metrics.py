"""The metrics module: names, the worker's own /metrics port, status classes."""

from __future__ import annotations

import httpx

from qhybrid.core.metrics import JOB_TRANSITIONS, serve_worker_metrics, status_class
from tests.support.processes import free_port


def test_status_classes() -> None:
    assert [status_class(code) for code in (200, 202, 301, 404, 503)] == ["2xx", "2xx", "3xx", "4xx", "5xx"]
    assert status_class(999) == "other"


def test_a_worker_serves_its_metrics_on_its_port_until_stopped() -> None:
    assert serve_worker_metrics(None) is None  # no port configured: nothing listens
    port = free_port()
    bound: list[int] = []
    server = serve_worker_metrics(port, host="127.0.0.1", started=bound.append)
    assert server is not None and bound == [port]
    try:
        JOB_TRANSITIONS.labels("submitted", "remote_queued").inc()
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        assert 'qhybrid_job_transitions_total{from_state="submitted",to_state="remote_queued"}' in text
        assert "# TYPE qhybrid_egress_requests_total counter" in text
    finally:
        server.shutdown()
        server.server_close()
