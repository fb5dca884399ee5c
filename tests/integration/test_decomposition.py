"""A decomposed job over HTTP with real processes: the worker is killed with SIGKILL while the
round's sub-problem tasks wait at the provider; a new worker finishes the job and the emulated
cloud saw every sub-problem's token exactly once."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from rich.console import Console

from qhybrid.cli.output import print_result
from qhybrid.client import Client, JobDocument
from tests.integration.conftest import Stack
from tests.jobs.test_decomposed import decomposed_request

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("stack_env", ["embedded"], indirect=True)]

#: 40 assets in sub-problems of 8 qubits, 3 a round, 2 rounds.
SMALL = {
    "QHYBRID_MAX_QUBITS": "12",
    "QHYBRID_SUBPROBLEM_QUBITS": "8",
    "QHYBRID_DECOMPOSITION_PARTS": "3",
    "QHYBRID_DECOMPOSITION_ROUNDS": "2",
    "QHYBRID_DECOMPOSITION_START_SECONDS": "0.3",
    "QHYBRID_DECOMPOSITION_EXACT_SECONDS": "1",
}


def wait_for_status(client: Client, job_id: str, wanted: set[str], timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    status = "?"
    while time.monotonic() < deadline:
        job = client.get(job_id).raw
        status = job["status"]
        if status in wanted:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} never reached {wanted}; last {status}")


def test_a_decomposed_job_survives_kill_9_without_submitting_a_sub_problem_twice(
    start_stack: Callable[..., Stack],
) -> None:
    stack = start_stack(queue_delay=4.0, run_delay=0.2, env=SMALL)
    with Client(stack.api_url) as client:
        job_id = client.submit(decomposed_request()).id
        wait_for_status(client, job_id, {"remote_queued", "remote_running"})
        stack.workers[0].kill9()
        assert not stack.workers[0].alive()
        stack.start_worker()
        job = client.wait(job_id, timeout=180).raw
    assert job["status"] == "completed", stack.logs()
    block = job["result"]["decomposition"]
    assert block is not None and len(block["rounds"]) == 2
    sent = block["subproblems_sent"]
    assert sent == sum(len(r["subproblems"]) for r in block["rounds"]) >= 4
    # Every sub-problem task went to the provider exactly once, killed worker or not.
    counts = stack.submissions()
    assert len(counts) == sent and set(counts.values()) == {1}, counts
    assert job["result"]["source"] in ("quantum+decomposition", "classical_baseline")
    assert job["result"]["objective"] <= block["start"]["objective"] + 1e-15
    # What the command line prints: the decomposition, and which step produced the answer.
    console = Console(record=True, width=200)
    print_result(console, JobDocument.from_json(job))
    text = console.export_text()
    assert f"{sent} sub-problems sent to the QPU in 2 rounds" in text
    assert f"the answer comes from: {block['final_step']}" in text
    assert "classical fallback" not in text
