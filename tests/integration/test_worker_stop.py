"""A worker stops when told, says so, and hands an unfinished step to another worker (real processes)."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable

import pytest

from qhybrid.client import Client, JobState
from qhybrid.demo import sample_request
from tests.integration.conftest import Stack

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("stack_env", ["embedded"], indirect=True)]


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"never saw {what}")
        time.sleep(0.1)


def test_an_idle_worker_stops_on_sigint_and_says_so(start_stack: Callable[..., Stack]) -> None:
    stack = start_stack()
    worker = stack.workers[0]
    wait_for(lambda: "worker ready" in worker.log(), "the worker ready")
    worker.popen.send_signal(signal.SIGINT)
    assert worker.popen.wait(timeout=60) == 0
    log = worker.log()
    assert "worker stopping on SIGINT: 0 running step(s) to release" in log
    assert "worker stopped (SIGINT)" in log and "no step was left unfinished" in log


def test_sigterm_during_a_step_releases_the_job_to_another_worker(start_stack: Callable[..., Stack]) -> None:
    # The provider takes 10 s to answer the submission, so SIGTERM finds the SUBMITTING step
    # running; the held request ends before the test does, so the cloud stops at once after it.
    slow = json.dumps([{"match": "POST /v1/tasks", "fault": "slow", "seconds": 10}])
    stack = start_stack(
        cloud_args=["--faults", slow],
        # A lease far longer than the test: only the release can let another worker continue.
        env={"QHYBRID_WORKER_SHUTDOWN_SECONDS": "0.5", "QHYBRID_LEASE_SECONDS": "900"},
    )
    received = stack.cloud.data_dir / "received.log"
    with Client(stack.api_url) as client:
        job = client.submit(sample_request())
        wait_for(lambda: received.exists() and b"POST /v1/tasks" in received.read_bytes(), "the submission")
        first = stack.workers[0]
        first.popen.send_signal(signal.SIGTERM)
        assert first.popen.wait(timeout=60) == 0
        log = first.log()
        assert "worker stopping on SIGTERM: letting 1 running step(s) finish (up to 0.5 s)" in log
        assert f"released 1 job(s) to other workers: {job.id}" in log
        assert job.status() is JobState.SUBMITTING

        stack.start_worker()
        done = job.wait(timeout=240)
    assert done.status is JobState.COMPLETED, stack.logs()
    assert done.attempt == 1
    # The second worker found the first one's token: one provider task for the job.
    assert len(stack.submissions()) == 1
