"""The JSON logs of a real run: an API, a worker and a cloud, one format, every line about the job named."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from qhybrid.client import Client
from qhybrid.core.logging import JSON_FIELDS
from qhybrid.demo import sample_request
from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration


def json_lines(text: str) -> list[dict[str, Any]]:
    lines = [line for line in text.splitlines() if line.strip()]
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON line: {line!r}")
    return parsed


@pytest.mark.parametrize("stack_env", ["embedded"], indirect=True)
def test_a_worker_run_logs_json_lines_naming_the_job_and_its_state(start_stack: Callable[..., Stack]) -> None:
    stack = start_stack(env={"QHYBRID_LOG_FORMAT": "json"}, cloud_env={"QCLOUD_LOG_FORMAT": "json"})
    with Client(stack.api_url) as client:
        job = client.submit(sample_request()).wait(timeout=240)
    assert job.status.api_name == "completed", stack.logs()
    for process in reversed(stack.processes):
        process.stop()
    stack.cloud.stop()

    worker = json_lines(stack.workers[0].log())
    api = json_lines(stack.processes[0].log())
    cloud = json_lines(stack.cloud.process.log())
    for line in worker + api + cloud:  # one format for the three processes
        assert set(JSON_FIELDS) <= set(line), line
    about_the_job = [line for line in worker if line["job_id"] == job.job_id]
    states = [line["state"] for line in about_the_job]
    # Each step's lines carry the state the job was in, in journey order.
    assert states[0] == "accepted" and states[-1] == "finalizing"
    assert {"preparing", "submitting", "submitted"} <= set(states)
    # The job's lines name its tenant (the open API's "default"); lines outside a job name none.
    assert {line["tenant"] for line in about_the_job} == {"default"}
    assert all(line["tenant"] is None for line in worker if line["job_id"] is None)
    # The noise is gone: no third-party INFO line (qiskit's transpiler wrote 192 of 239 before).
    noisy = [line for line in worker if not line["logger"].startswith("qhybrid.") and line["level"] == "INFO"]
    assert noisy == []
    assert any(line["message"].startswith("worker stopped (SIGTERM)") for line in worker)
    # The API logs each request; the cloud never learns which job a task belongs to.
    assert any(line["logger"] == "uvicorn.access" for line in api)
    assert all(line["job_id"] is None for line in cloud)
    assert any("qhybrid cloud ready" in line["message"] for line in cloud)
