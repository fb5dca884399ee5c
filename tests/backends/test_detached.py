"""DetachedTaskRunner with real detached runner processes and the real local simulators."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from qhybrid.backends import detached
from qhybrid.backends.base import PermanentBackendError, TaskStatus, TransientBackendError
from qhybrid.backends.detached import DetachedTaskRunner, task_id_for
from qhybrid.domain.states import TERMINAL_TASK_STATES, TaskState

pytestmark = pytest.mark.integration  # every test here starts real runner processes

# Classical bits cross the qubits on purpose: c[0] reads q[2] (flipped), c[1] reads q[0] and
# c[2] reads q[1]. Bit 0 first, the only outcome is "100", whatever order a simulator measures in.
# Made of gates FakeManilaV2 runs natively, so the same text serves every executor.
CROSSED_BITS = """OPENQASM 3.0;
include "stdgates.inc";
qubit[5] q;
bit[3] c;
x q[2];
c[1] = measure q[0];
c[0] = measure q[2];
c[2] = measure q[1];
"""

EXECUTORS = ("braket_sv", "braket_dm", "ibm:FakeManilaV2")


def wait_terminal(runner: DetachedTaskRunner, task_id: str, timeout: float = 90.0) -> TaskStatus:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = runner.status(task_id)
        if status.state in TERMINAL_TASK_STATES:
            return status
        time.sleep(0.1)
    log = (runner.root / task_id / "runner.log").read_text(errors="replace")
    raise AssertionError(f"task {task_id} did not finish in {timeout} s; runner log:\n{log}")


def runner_pid(runner: DetachedTaskRunner, task_id: str) -> int:
    data = json.loads((runner.root / task_id / "runner.json").read_text())
    return int(data["pid"])


def gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] in "ZX"


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[DetachedTaskRunner]:
    runner = DetachedTaskRunner(tmp_path / "local-tasks")
    yield runner
    # Leave no runner behind, whatever the test did.
    for task_dir in runner.root.glob("local-*"):
        if runner.status(task_dir.name).state not in TERMINAL_TASK_STATES:
            runner.cancel(task_dir.name)


@pytest.fixture(scope="module")
def bit_order_tasks(tmp_path_factory: pytest.TempPathFactory) -> tuple[DetachedTaskRunner, dict[str, str]]:
    """One task per executor, submitted together so that they run side by side."""
    runner = DetachedTaskRunner(tmp_path_factory.mktemp("bit-order") / "local-tasks")
    ids = {
        executor: runner.submit(executor, CROSSED_BITS, 300, f"bits-{executor}", {"seed": 11})
        for executor in EXECUTORS
    }
    return runner, ids


@pytest.mark.parametrize("executor", EXECUTORS)
def test_bit_zero_is_the_first_character_for_every_executor(
    bit_order_tasks: tuple[DetachedTaskRunner, dict[str, str]], executor: str
) -> None:
    runner, ids = bit_order_tasks
    status = wait_terminal(runner, ids[executor])
    assert status.state is TaskState.COMPLETED, status.message
    result = runner.result(ids[executor])
    assert result.shots == 300
    assert sum(result.counts.values()) == 300
    assert all(len(outcome) == 3 for outcome in result.counts)
    if executor.startswith("ibm:"):
        # The fake device's noise model flips a few readouts.
        assert result.counts.get("100", 0) >= 0.8 * 300, result.counts
    else:
        assert result.counts == {"100": 300}
    assert result.metadata["executor"] == executor


def test_submit_is_idempotent_and_a_new_runner_instance_resumes(runner: DetachedTaskRunner) -> None:
    task_id = runner.submit("braket_sv", CROSSED_BITS, 50, "token-1", {})
    assert task_id == task_id_for("token-1")
    first_pid = runner_pid(runner, task_id)
    # Same token, even with other arguments: same task, and no second runner.
    assert runner.submit("braket_dm", CROSSED_BITS, 999, "token-1", {}) == task_id
    assert runner_pid(runner, task_id) == first_pid
    assert runner.find("token-1") == task_id
    assert runner.find("another-token") is None

    # A worker restart: a fresh instance over the same directory finds and follows the task.
    restarted = DetachedTaskRunner(runner.root)
    assert restarted.find("token-1") == task_id
    status = wait_terminal(restarted, task_id)
    assert status.state is TaskState.COMPLETED
    assert restarted.result(task_id).counts == {"100": 50}
    assert runner.status(task_id).state is TaskState.COMPLETED

    # Cancelling a finished task leaves it as it is.
    restarted.cancel(task_id)
    assert runner.status(task_id).state is TaskState.COMPLETED


def test_the_task_outlives_the_process_that_submitted_it(runner: DetachedTaskRunner) -> None:
    # The submitting "worker" is a separate process that exits (as a crashed worker would)
    # right after submitting; this process then resumes the task by id and by token.
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from qhybrid.backends.detached import DetachedTaskRunner\n"
        "runner = DetachedTaskRunner(Path(sys.argv[1]))\n"
        "print(runner.submit('braket_sv', sys.argv[2], 40, 'token-gone', {}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(runner.root), CROSSED_BITS],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    task_id = done.stdout.strip()
    assert runner.find("token-gone") == task_id
    assert wait_terminal(runner, task_id).state is TaskState.COMPLETED
    assert runner.result(task_id).counts == {"100": 40}


def test_a_killed_runner_makes_the_task_failed(runner: DetachedTaskRunner) -> None:
    task_id = runner.submit("braket_sv", CROSSED_BITS, 10, "token-killed", {})
    pid = runner_pid(runner, task_id)
    os.killpg(pid, signal.SIGKILL)  # a crash (the runner is still importing the simulator)
    deadline = time.monotonic() + 10
    while not gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    status = runner.status(task_id)
    assert status.state is TaskState.FAILED
    assert status.message is not None and "runner exited without a result" in status.message
    with pytest.raises(PermanentBackendError, match="FAILED"):
        runner.result(task_id)


def test_cancel_kills_the_runner_and_is_idempotent(runner: DetachedTaskRunner) -> None:
    task_id = runner.submit("braket_sv", CROSSED_BITS, 10, "token-cancel", {})
    pid = runner_pid(runner, task_id)
    runner.cancel(task_id)
    assert runner.status(task_id).state is TaskState.CANCELLED
    deadline = time.monotonic() + 10
    while not gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(pid)
    runner.cancel(task_id)
    assert runner.status(task_id).state is TaskState.CANCELLED
    with pytest.raises(PermanentBackendError, match="CANCELLED"):
        runner.result(task_id)
    # Submitting again under the token does not bring it back to life.
    assert runner.submit("braket_sv", CROSSED_BITS, 10, "token-cancel", {}) == task_id
    assert runner.status(task_id).state is TaskState.CANCELLED


def test_a_crash_before_the_launch_is_recovered_by_the_next_submit(runner: DetachedTaskRunner) -> None:
    # The task directory exists but its runner was never launched (submitter died in between).
    task_dir = runner.root / task_id_for("token-orphan")
    runner._create(task_dir, "braket_sv", CROSSED_BITS, 20, "token-orphan", {})
    assert runner.find("token-orphan") == task_dir.name
    assert runner.status(task_dir.name).state is TaskState.QUEUED
    with pytest.raises(TransientBackendError, match="no result yet"):
        runner.result(task_dir.name)
    assert runner.submit("braket_sv", CROSSED_BITS, 20, "token-orphan", {}) == task_dir.name
    assert wait_terminal(runner, task_dir.name).state is TaskState.COMPLETED


def test_a_task_never_launched_fails_after_the_grace_period(
    runner: DetachedTaskRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(detached, "LAUNCH_GRACE_SECONDS", 0.0)
    task_dir = runner.root / task_id_for("token-lost")
    runner._create(task_dir, "braket_sv", CROSSED_BITS, 20, "token-lost", {})
    time.sleep(0.01)
    status = runner.status(task_dir.name)
    assert status.state is TaskState.FAILED
    assert status.message == "runner was never started"


def test_a_failing_program_reports_the_error(runner: DetachedTaskRunner) -> None:
    unmeasured = CROSSED_BITS.replace("c[2] = measure q[1];\n", "")
    task_id = runner.submit("braket_sv", unmeasured, 10, "token-bad", {})
    status = wait_terminal(runner, task_id)
    assert status.state is TaskState.FAILED
    assert status.message is not None and "every classical bit must be measured" in status.message


def test_refusals(runner: DetachedTaskRunner) -> None:
    with pytest.raises(PermanentBackendError, match="unknown local executor"):
        runner.submit("qpu-in-the-basement", CROSSED_BITS, 10, "t", {})
    with pytest.raises(PermanentBackendError, match="unknown local executor"):
        runner.submit("ibm:../etc", CROSSED_BITS, 10, "t", {})
    with pytest.raises(PermanentBackendError, match="shots"):
        runner.submit("braket_sv", CROSSED_BITS, 0, "t", {})
    with pytest.raises(PermanentBackendError, match="not a local task id"):
        runner.status("../../etc/passwd")
    with pytest.raises(PermanentBackendError, match="does not exist"):
        runner.status(task_id_for("never-submitted"))
    assert not list(runner.root.iterdir())


def test_a_relative_root_works_from_another_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    runner = DetachedTaskRunner(Path("relative-tasks"))
    assert runner.root.is_absolute()
    task_id = runner.submit("braket_sv", CROSSED_BITS, 10, "relative-root-token-1", {})
    assert wait_terminal(runner, task_id).state is TaskState.COMPLETED
    assert runner.result(task_id).counts == {"100": 10}
