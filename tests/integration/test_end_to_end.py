"""The whole flow over HTTP: a real uvicorn API, real worker processes and the emulated cloud,
on the embedded default (SQLite + SqliteHuey), on the machine's PostgreSQL + Redis and on
PostgreSQL + SQS (a local SQS endpoint: moto's server mode)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from qhybrid.client import Client
from qhybrid.demo import sample_request
from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration


def wait_for_status(client: Client, job_id: str, wanted: set[str], timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(job_id).raw
        if job["status"] in wanted:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} never reached {wanted}; last {job['status']}")


def test_the_seed_flow_end_to_end(start_stack: Callable[..., Stack]) -> None:
    stack = start_stack()
    request = sample_request()
    with Client(stack.api_url) as client:
        raw = httpx.post(f"{stack.api_url}/optimize_portfolio", json=request)
        assert raw.status_code == 202
        assert raw.headers["location"] == f"/jobs/{raw.json()['job_id']}"
        job = client.wait(raw.json()["job_id"], timeout=120).raw
        assert job["status"] == "completed", stack.logs()
        statuses = [e["status"] for e in job["events"]]
        assert statuses[:4] == ["accepted", "preparing", "submitting", "submitted"]
        assert statuses[-2:] == ["finalizing", "completed"]
        result = job["result"]
        names = set(request["prices"]["assets"])
        assert set(result["selected"]) <= names and len(result["selected"]) == request["budget"]
        assert result["estimate"]["estimator"] == "ledoit_wolf"
        q = request["risk_aversion"]
        assert result["objective"] == pytest.approx(
            q * result["variance"] - result["expected_return"], rel=1e-9
        )
        assert result["gap"] >= 0
        assert result["objective"] >= result["classical"]["objective"] - 1e-15
        assert result["classical"]["optimal"] is True
        assert result["source"] in ("quantum", "quantum+refinement")
        assert result["quantum"]["task_id"] == job["remote_task"]["task_id"]
        assert job["remote_task"]["state"] == "COMPLETED"
        listed = client.list(limit=5)
        assert listed.items[0].job_id == job["job_id"]
        assert listed.items[0].objective == result["objective"]
    assert len(stack.submissions()) == 1


def test_worker_killed_while_the_task_waits_remotely(start_stack: Callable[..., Stack]) -> None:
    stack = start_stack(queue_delay=6.0)
    with Client(stack.api_url) as client:
        job_id = client.submit(sample_request()).id
        wait_for_status(client, job_id, {"remote_queued"}, timeout=90)
        stack.workers[0].kill9()
        assert not stack.workers[0].alive()
        stack.start_worker()
        job = client.wait(job_id, timeout=120).raw
    assert job["status"] == "completed", stack.logs()
    # From the QPU's samples: the classical fallback would also complete, and hide a lost task.
    assert job["result"]["source"] in ("quantum", "quantum+refinement"), job["result"].get("fallback")
    # One job, one attempt, one task: the provider saw exactly one submission.
    counts = stack.submissions()
    assert list(counts.values()) == [1], counts
    assert job["attempt"] == 1


# The command and the arithmetic do not depend on the queue or the database: the embedded
# stack is enough (the seed flow and the kill -9 test run on all three).
@pytest.mark.parametrize("stack_env", ["embedded"], indirect=True)
def test_submit_command_waits_and_prints_json(start_stack: Callable[..., Stack], tmp_path: Path) -> None:
    stack = start_stack()
    request_file = tmp_path / "request.json"
    request_file.write_text(json.dumps(sample_request()))
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "qhybrid",
            "submit",
            str(request_file),
            "--url",
            stack.api_url,
            "--wait",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr + stack.logs()
    job = json.loads(completed.stdout)
    assert job["status"] == "completed"
    assert "accepted" in completed.stderr  # progress goes to stderr, stdout is JSON only


# The command and the arithmetic do not depend on the queue or the database: the embedded
# stack is enough (the seed flow and the kill -9 test run on all three).
@pytest.mark.parametrize("stack_env", ["embedded"], indirect=True)
def test_weights_over_http_match_the_exact_optimum(start_stack: Callable[..., Stack]) -> None:
    from qhybrid.portfolio.baselines import exact
    from tests.support.journey import formulation_of

    stack = start_stack()
    request = sample_request(tickers=("AAPL", "MSFT", "JPM", "XOM", "KO"), budget=2)
    request.update(formulation="weights", budget=6, max_lots=3, lot_bounds={"KO": [1, 2]})
    with Client(stack.api_url) as client:
        job = client.submit(request).wait(timeout=120).raw
        job["request"] = client.get(job["job_id"], include_request=True).raw["request"]
    assert job["status"] == "completed", stack.logs()
    result = job["result"]
    assert sum(result["lots"].values()) == 6
    assert 1 <= result["lots"]["KO"] <= 2
    optimum = exact(formulation_of(job["request"]))
    assert optimum.optimal
    assert result["objective"] == pytest.approx(optimum.objective, rel=1e-12)
    assert result["classical"]["objective"] == pytest.approx(optimum.objective, rel=1e-12)
