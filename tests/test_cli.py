"""The two commands a newcomer runs end in `qhybrid demo`; its --json output is the contract."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_demo_json_prints_the_completed_job_and_nothing_else(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "qhybrid", "demo", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    job = json.loads(completed.stdout)  # stdout is the job document and nothing else
    assert job["status"] == "completed"
    result = job["result"]
    assert isinstance(result["selected"], list) and all(isinstance(n, str) for n in result["selected"])
    assert isinstance(result["objective"], float)
    assert isinstance(result["classical"]["objective"], float)
    # With the demo's default delays the job is seen waiting in the provider's queue, then running.
    statuses = [e["status"] for e in job["events"]]
    assert statuses.index("remote_queued") < statuses.index("remote_running") < statuses.index("completed")
    # The demo's state stays in the working directory it ran in.
    assert (tmp_path / ".qhybrid" / "qhybrid.db").exists()
    assert (tmp_path / ".qhybrid-cloud").is_dir()


def test_help_lists_the_commands() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "qhybrid", "--help"], capture_output=True, text=True, timeout=60, check=True
    )
    for command in ("serve", "worker", "cloud", "demo", "submit", "reconcile"):
        assert command in completed.stdout
