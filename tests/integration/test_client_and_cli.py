"""`qhybrid submit` / `qhybrid jobs ...` and the Python client against a real API, worker and cloud.

Every transition printed is checked against the job's recorded events (not what a poll saw), and
every exit code of the documented table is produced by a real situation: a completed job, a
classical fallback (a cloud that fails every task), a cancelled job, a timeout, no API, bad input
and Ctrl-C.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from qhybrid.client import AsyncClient, ClassicalFallbackError, Client, JobResult, JobState
from qhybrid.demo import sample_request
from tests.integration.conftest import Stack
from tests.support.processes import free_port

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("stack_env", ["embedded"], indirect=True)]

#: ``     2.4s  submitted  (task ...)``: a printed transition.
TRANSITION = re.compile(r"^\s+\d+\.\ds  ([a-z_]+)\b")


def qhybrid(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qhybrid", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def transitions(text: str) -> list[str]:
    return [m.group(1) for line in text.splitlines() if (m := TRANSITION.match(line))]


def recorded(stack: Stack, job_id: str) -> list[str]:
    with Client(stack.api_url) as client:
        return [event.status.api_name for event in client.get(job_id).events]


@pytest.fixture
def request_file(tmp_path: Path) -> Path:
    path = tmp_path / "request.json"
    path.write_text(json.dumps(sample_request()))
    return path


def test_a_completed_job_through_every_command(start_stack: Callable[..., Stack], request_file: Path) -> None:
    stack = start_stack()
    url = ("--url", stack.api_url)

    submitted = qhybrid("submit", str(request_file), *url, "--wait")
    assert submitted.returncode == 0, submitted.stderr + stack.logs()
    job_id = re.search(r"job (\S+) accepted", submitted.stderr).group(1)  # type: ignore[union-attr]
    # Every transition the worker recorded, in order, printed once: not only those polls saw.
    assert transitions(submitted.stderr) == recorded(stack, job_id)
    assert recorded(stack, job_id)[-1] == "completed"
    assert "best QPU sample" in submitted.stdout and "link to the QPU: TLSv1.3" in submitted.stdout

    listed = qhybrid("jobs", "list", *url)
    assert listed.returncode == 0 and job_id in listed.stdout  # the whole id, never cut
    page = json.loads(qhybrid("jobs", "list", *url, "--json", "--status", "completed").stdout)
    assert page["items"][0]["job_id"] == job_id

    shown = qhybrid("jobs", "show", job_id, *url)
    assert shown.returncode == 0
    assert shown.stdout.startswith(f"job {job_id}: completed")
    assert transitions(shown.stdout) == recorded(stack, job_id)
    document = json.loads(qhybrid("jobs", "show", job_id, *url, "--json").stdout)
    assert document["job_id"] == job_id and document["status"] == "completed"

    watched = qhybrid("jobs", "watch", job_id, *url)
    assert watched.returncode == 0
    assert transitions(watched.stdout) == recorded(stack, job_id)
    assert f"job {job_id} completed: objective" in watched.stdout
    lines = [
        json.loads(line) for line in qhybrid("jobs", "watch", job_id, *url, "--json").stdout.splitlines()
    ]
    assert [(line["job_id"], line["status"]) for line in lines] == [
        (job_id, s) for s in recorded(stack, job_id)
    ]

    result = qhybrid("jobs", "result", job_id, *url, "--json", "--require-quantum")
    assert result.returncode == 0
    assert json.loads(result.stdout)["selected"] == document["result"]["selected"]

    cancelled = qhybrid("jobs", "cancel", job_id, *url)
    assert cancelled.returncode == 2
    assert cancelled.stderr.strip().splitlines() == [
        "qhybrid: refused: HTTP 409 conflict: status: job is already completed; it cannot be cancelled"
    ]

    with Client(stack.api_url) as client:
        job = client.submit(sample_request())
        typed = job.result(timeout=240)
        assert job.status() is JobState.COMPLETED
    assert isinstance(typed, JobResult)
    assert len(typed.selected) == 5 and typed.is_quantum


def test_a_classical_fallback_is_not_a_success_when_quantum_is_required(
    start_stack: Callable[..., Stack], request_file: Path
) -> None:
    # A cloud whose every task fails, and one attempt per job: the job answers classically.
    failing = json.dumps([{"fault": "task_failed", "count": 1000}])
    stack = start_stack(cloud_args=["--faults", failing], env={"QHYBRID_MAX_REMOTE_ATTEMPTS": "1"})
    url = ("--url", stack.api_url)

    submitted = qhybrid("submit", str(request_file), *url, "--wait", "--require-quantum")
    assert submitted.returncode == 5, submitted.stderr + stack.logs()
    job_id = re.search(r"job (\S+) accepted", submitted.stderr).group(1)  # type: ignore[union-attr]
    assert transitions(submitted.stderr) == recorded(stack, job_id)
    assert "finalizing  (classical fallback: provider task" in submitted.stderr
    last = submitted.stderr.strip().splitlines()[-1]
    assert last.startswith(f"qhybrid: job {job_id} completed with a classical fallback")
    assert "classical fallback" in submitted.stdout  # the classical answer is still printed

    assert qhybrid("jobs", "result", job_id, *url).returncode == 0  # not required: an answer
    assert qhybrid("jobs", "result", job_id, *url, "--require-quantum").returncode == 5
    watched = qhybrid("jobs", "watch", job_id, *url, "--require-quantum")
    assert watched.returncode == 5
    assert "with a classical fallback" in watched.stdout

    with Client(stack.api_url) as client:
        job = client.job(job_id)
        assert job.result(timeout=60).source == "classical_fallback"
        with pytest.raises(ClassicalFallbackError) as caught:
            job.result(timeout=60, require_quantum=True)
    assert caught.value.job.fallback_reason is not None

    async def async_twin() -> str:
        async with AsyncClient(stack.api_url) as client:
            try:
                await client.job(job_id).result(timeout=60, require_quantum=True)
            except ClassicalFallbackError as exc:
                return exc.job.job_id
        return "no error"

    assert asyncio.run(async_twin()) == job_id


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_cancelled_timeout_interrupted_unreachable_and_refused(
    start_stack: Callable[..., Stack], request_file: Path, tmp_path: Path
) -> None:
    stack = start_stack(queue_delay=120.0)  # the job waits in the provider's queue
    url = ("--url", stack.api_url)
    submitted = qhybrid("submit", str(request_file), *url)
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()

    timed_out = qhybrid("jobs", "watch", job_id, *url, "--timeout", "2")
    assert timed_out.returncode == 4
    (message,) = timed_out.stderr.strip().splitlines()  # one line, no traceback
    assert message.startswith(f"qhybrid: job {job_id} still ")

    watcher = subprocess.Popen(
        [sys.executable, "-m", "qhybrid", "jobs", "watch", job_id, *url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A runner started in the background of a non-interactive shell hands its children SIGINT
        # ignored, and Python keeps an ignored SIGINT: the watcher must get the default, as a
        # terminal's Ctrl-C would find it.
        preexec_fn=_default_sigint,
    )
    assert watcher.stdout is not None
    assert TRANSITION.match(watcher.stdout.readline())  # it is following the job
    watcher.send_signal(signal.SIGINT)
    _, interrupted = watcher.communicate(timeout=60)
    assert watcher.returncode == 130
    assert interrupted.strip() == f"qhybrid: interrupted; job {job_id} goes on (qhybrid jobs watch {job_id})"

    cancelled = qhybrid("jobs", "cancel", job_id, *url)
    assert cancelled.returncode == 0, cancelled.stderr
    watched = qhybrid("jobs", "watch", job_id, *url)
    assert watched.returncode == 1
    assert transitions(watched.stdout)[-1] == "cancelled"
    result = qhybrid("jobs", "result", job_id, *url)
    assert result.returncode == 1
    assert result.stderr.strip() == f"qhybrid: job {job_id} was cancelled"

    nobody = qhybrid("jobs", "list", "--url", f"http://127.0.0.1:{free_port()}")
    assert nobody.returncode == 3
    (line,) = nobody.stderr.strip().splitlines()
    assert "Connection refused" in line and "Traceback" not in nobody.stderr

    not_json = tmp_path / "broken.json"
    not_json.write_text("{")
    assert qhybrid("submit", str(not_json), *url).returncode == 2
    bad: dict[str, Any] = json.loads(request_file.read_text())
    bad["budget"] = 10
    bad_file = tmp_path / "bad.json"
    bad_file.write_text(json.dumps(bad))
    refused = qhybrid("submit", str(bad_file), *url)
    assert refused.returncode == 2
    assert refused.stderr.startswith("qhybrid: refused: HTTP 422 invalid_request: budget")
