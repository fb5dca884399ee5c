"""One cloud per data dir: a second one refuses to start, and the first keeps serving (real processes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.cloud.helpers import start_cloud, submit_body, wait_for_state
from tests.support.processes import free_port

pytestmark = pytest.mark.integration

PROGRAM = 'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[1] q;\nbit[1] c;\nx q[0];\nc = measure q;\n'


def test_a_second_cloud_on_a_held_data_dir_refuses_and_the_first_keeps_serving(tmp_path: Path) -> None:
    first = start_cloud(tmp_path, name="first", queue_delay=0.1, run_delay=0.1)
    try:
        socket_file = first.data_dir / "app.sock"
        assert socket_file.exists()
        second = subprocess.run(
            [
                sys.executable, "-m", "qhybrid", "cloud",
                "--port", str(free_port()), "--data-dir", str(first.data_dir), "--token", "other-token",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )  # fmt: skip
        assert second.returncode == 3
        lines = [line for line in (second.stdout + second.stderr).splitlines() if line.strip()]
        assert len(lines) == 1, lines  # one line, no traceback
        assert f"in use by another qhybrid cloud (pid {first.process.popen.pid})" in lines[0]
        # The first one was not disturbed: its socket is there, and it still authenticates and runs tasks.
        assert socket_file.exists()
        assert first.process.alive()
        with first.client() as http:
            assert http.get("/v1/devices/emulator").status_code == 200
            task = http.post("/v1/tasks", json=submit_body(PROGRAM, shots=10)).json()
            final, _ = wait_for_state(http, task["task_id"], ["COMPLETED"])
            assert final["state"] == "COMPLETED"
    finally:
        first.process.stop()
    # Stopped (or killed: the kernel drops the lock with the process), the data dir is free again.
    again = start_cloud(tmp_path, name="again", data_dir=first.data_dir)
    try:
        assert again.process.alive()
    finally:
        again.process.kill9()
    after_kill = start_cloud(tmp_path, name="after-kill", data_dir=first.data_dir)
    after_kill.process.stop()
    assert after_kill.process.popen.returncode == 0
