"""A worker's operations: log lines per job, and how long it takes to stop, against the previous code.

Both workers run in the same run, against the same API and emulated cloud (this checkout's), on the
same embedded database: this checkout's worker, and the worker of ``--baseline-rev`` (default: the
last commit before the jobs CLI and quiet logs) extracted with ``git archive`` into a temporary
folder and run from the same virtualenv. For each, ``--repeats`` times:

- a job: start the worker, run one sample job to completion, count the worker's log lines (and
  those of qiskit's loggers), send SIGINT, time from the signal to the process's exit;
- idle: start the worker, wait until it is ready, send SIGINT, time to exit.

Run: ``.venv/bin/python -m benchmarks.worker_ops [--repeats 3] [--baseline-rev e3b81ba]``
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.report import machine, markdown_table
from qhybrid.client import Client
from qhybrid.demo import sample_request
from tests.support.cloud import start_cloud
from tests.support.processes import Process, free_port, start_process

ROOT = Path(__file__).resolve().parents[1]
BASELINE = "e3b81ba"


def extract(rev: str, folder: Path) -> Path:
    """``src/`` of ``rev`` in ``folder`` (read from git; the checkout is not touched)."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "src"], capture_output=True, check=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(folder, filter="data")
    return folder / "src"


def stop_seconds(process: Process) -> float:
    """SIGINT, then the seconds until the process has exited."""
    started = time.perf_counter()
    process.popen.send_signal(signal.SIGINT)
    process.popen.wait(timeout=120)
    return time.perf_counter() - started


def wait_ready(process: Process) -> None:
    deadline = time.monotonic() + 120
    while "worker ready" not in process.log():
        if time.monotonic() > deadline or not process.alive():
            raise RuntimeError(f"worker not ready:\n{process.log()[-3000:]}")
        time.sleep(0.05)


def measure(
    name: str, src: Path, env: dict[str, str], api_url: str, folder: Path, run: int
) -> dict[str, Any]:
    worker_env = {**env, "PYTHONPATH": str(src)}
    worker = start_process(f"{name}-job-{run}", ["-m", "qhybrid", "worker"], log_dir=folder, env=worker_env)
    wait_ready(worker)
    with Client(api_url) as client:
        job = client.submit(sample_request()).wait(timeout=600)
    if job.status.api_name != "completed":
        raise RuntimeError(f"job ended {job.status.api_name}: {job.error}")
    time.sleep(1.0)  # let the last lines be written
    lines = worker.log().splitlines()
    after_job = stop_seconds(worker)
    idle = start_process(f"{name}-idle-{run}", ["-m", "qhybrid", "worker"], log_dir=folder, env=worker_env)
    wait_ready(idle)
    time.sleep(2.0)
    idle_stop = stop_seconds(idle)
    return {
        "lines": len(lines),
        "qiskit": sum(1 for line in lines if " qiskit" in line.split(":", 3)[2][:40]),
        "after_job": after_job,
        "idle": idle_stop,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline-rev", default=BASELINE)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="qhybrid-worker-ops-") as tmp:
        folder = Path(tmp)
        cloud = start_cloud(folder / "cloud", queue_delay=0.5, run_delay=0.5, token="bench")
        api_port = free_port()
        env = {
            "QHYBRID_DATA_DIR": str(folder / "qhybrid"),
            "QHYBRID_CLOUD_URL": cloud.base_url,
            "QHYBRID_CLOUD_TOKEN": cloud.token,
            "QHYBRID_CLOUD_CA_FILE": str(cloud.ca_file),
            "QHYBRID_POLL_INITIAL_SECONDS": "0.25",
            "QHYBRID_POLL_MAX_SECONDS": "0.5",
        }
        api = start_process(
            "api",
            ["-m", "qhybrid", "serve", "--port", str(api_port)],
            log_dir=folder,
            env=env,
            health_url=f"http://127.0.0.1:{api_port}/readyz",
        )
        variants = {
            f"baseline ({args.baseline_rev})": extract(args.baseline_rev, folder / "baseline"),
            "this checkout": ROOT / "src",
        }
        samples: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
        try:
            for run in range(args.repeats):
                for name, src in variants.items():  # interleaved, so both see the same load
                    samples[name].append(
                        measure(name.split()[0], src, env, f"http://127.0.0.1:{api_port}", folder, run)
                    )
        finally:
            api.stop()
            cloud.stop()
    median = statistics.median
    rows = [
        {
            "worker": name,
            "log lines for one job (median)": median(s["lines"] for s in runs),
            "of which qiskit": median(s["qiskit"] for s in runs),
            "SIGINT to exit after a job, s (median)": f"{median(s['after_job'] for s in runs):.2f}",
            "SIGINT to exit when idle, s (median)": f"{median(s['idle'] for s in runs):.2f}",
            "runs": len(runs),
        }
        for name, runs in samples.items()
    ]
    print(f"# {machine()}, {sys.platform}, load average {os.getloadavg()[0]:.1f}")
    print("\n".join(markdown_table(rows)))


if __name__ == "__main__":
    main()
