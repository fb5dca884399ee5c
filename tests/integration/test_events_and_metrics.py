"""A real job over a real stack: the event stream delivers every transition, and the metrics count the run.

API and worker share a ``PROMETHEUS_MULTIPROC_DIR``, so the API's ``/metrics`` adds up both
processes: the worker's transitions, provider task, egress requests and audit entries included.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from qhybrid.demo import sample_request
from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration

JOURNEY = ["accepted", "preparing", "submitting", "submitted"]


def read_stream(http: httpx.Client, url: str) -> tuple[list[dict[str, Any]], int]:
    """The stream's messages until it ends, and how many heartbeat comments came meanwhile."""
    messages: list[dict[str, Any]] = []
    heartbeats = 0
    with http.stream("GET", url, headers={"Accept": "text/event-stream"}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        current: dict[str, Any] = {}
        for line in response.iter_lines():
            if line.startswith(": heartbeat"):
                heartbeats += 1
            elif line.startswith(("id:", "event:", "data:")):
                name, text = line.split(":", 1)
                current[name] = json.loads(text) if name == "data" else text.strip()
            elif not line and current:
                messages.append(current)
                current = {}
    return messages, heartbeats


def value(text: str, series: str) -> float:
    match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
    return 0.0 if match is None else float(match.group(1))


@pytest.mark.parametrize("stack_env", ["embedded"], indirect=True)
def test_the_stream_delivers_every_transition_and_metrics_count_the_run(
    start_stack: Callable[..., Stack], tmp_path: Path
) -> None:
    shared = tmp_path / "prometheus"
    shared.mkdir()
    stack = start_stack(
        queue_delay=2.0,  # the job waits in the provider's queue: a quiet stretch for heartbeats
        run_delay=0.5,
        env={
            "PROMETHEUS_MULTIPROC_DIR": str(shared),
            "QHYBRID_EVENTS_POLL_SECONDS": "0.1",
            "QHYBRID_EVENTS_HEARTBEAT_SECONDS": "0.3",
        },
    )
    with httpx.Client(base_url=stack.api_url, timeout=120, trust_env=False) as http:
        accepted = http.post("/optimize_portfolio", json=sample_request())
        assert accepted.status_code == 202, accepted.text
        job_id = accepted.json()["job_id"]
        messages, heartbeats = read_stream(http, f"/jobs/{job_id}/events")
        response = http.get(f"/jobs/{job_id}")
        document = response.json()
        metrics = http.get("/metrics").text

    assert document["status"] == "completed", stack.logs()
    transitions = [m for m in messages if m["event"] == "transition"]
    # Every recorded transition, once, in order, with the event's number as its id.
    assert [(int(m["id"]), m["data"]["status"]) for m in transitions] == [
        (e["id"], e["status"]) for e in document["events"]
    ]
    statuses = [m["data"]["status"] for m in transitions]
    assert statuses[:4] == JOURNEY and statuses[-2:] == ["finalizing", "completed"]
    assert messages[-1] == {"event": "end", "data": {"job_id": job_id, "status": "completed"}}
    assert heartbeats >= 1

    # The completed price-history job's document stays small without ?include=request.
    assert len(response.content) < 20_000, len(response.content)
    assert "retry-after" not in response.headers
    top = document["result"]["quantum"]["top_samples"]
    counts = [sample["count"] for sample in top]
    assert counts == sorted(counts, reverse=True) and sum(counts) <= document["result"]["quantum"]["shots"]
    assets = set(sample_request()["prices"]["assets"])
    assert all(set(sample["selected"]) <= assets for sample in top)  # de-obfuscated asset names

    # The worker's counts, through the shared folder, in the API's /metrics.
    assert value(metrics, 'qhybrid_job_transitions_total{from_state="finalizing",to_state="completed"}') == 1
    assert value(metrics, 'qhybrid_job_state_seconds_count{state="preparing"}') == 1
    assert (
        value(metrics, 'qhybrid_provider_task_seconds_count{backend="emulated-cloud",outcome="completed"}')
        == 1
    )
    destination = stack.cloud.base_url.removeprefix("https://").rstrip("/")
    assert value(metrics, f'qhybrid_egress_requests_total{{destination="{destination}",outcome="2xx"}}') >= 3
    assert value(metrics, f'qhybrid_egress_bytes_total{{destination="{destination}",direction="sent"}}') > 0
    assert (
        value(metrics, f'qhybrid_egress_bytes_total{{destination="{destination}",direction="received"}}') > 0
    )
    assert value(metrics, 'qhybrid_audit_entries_total{outcome="written"}') >= 3
    assert value(metrics, 'qhybrid_jobs{state="completed"}') == 1
    assert (
        value(metrics, 'qhybrid_http_requests_total{code="202",method="POST",route="/optimize_portfolio"}')
        == 1
    )
