"""CPU of a job's last exchange with the emulated cloud: the poll that sees COMPLETED, and the result.

``.venv/bin/python -m benchmarks.poll_result`` starts the emulated cloud of the qhybrid on the path
(TLS, no queue or run delay), submits ``--tasks`` six-qubit tasks through the real gateway (an
``sx`` on each qubit: about 64 outcomes in 512 shots), waits until all are COMPLETED, then calls
the adapter's ``status()`` and ``result()`` on each, ``--rounds`` times (kept-alive TLS, audit
on). It prints the calling thread's CPU (``thread_time``) and the cloud process's (user + system,
psutil) per task, the median over the rounds.

To compare two versions, run it alternately with ``PYTHONPATH`` pointing at each tree's ``src``
and root (the cloud process inherits it); the two versions must share the adapter's contract.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import psutil  # type: ignore[import-untyped]

from benchmarks.report import machine
from qhybrid.backends.emulated_cloud import EmulatedCloudBackend
from qhybrid.gateway.audit import AuditLog
from tests.support.cloud import TOKENS, egress_to, start_cloud

QUBITS = 6
SHOTS = 512
PROGRAM = (
    f'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[{QUBITS}] q;\nbit[{QUBITS}] c;\n'
    + "".join(f"sx q[{i}];\n" for i in range(QUBITS))
    + "".join(f"c[{i}] = measure q[{i}];\n" for i in range(QUBITS))
)


def measure(tasks: int, rounds: int) -> tuple[list[float], list[float]]:
    """Milliseconds of CPU per task in each round: (this thread's, the cloud process's)."""
    worker: list[float] = []
    server: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        cloud = start_cloud(Path(tmp), queue_delay=0.0, run_delay=0.0)
        try:
            egress = egress_to(
                cloud.base_url,
                token=cloud.token,
                ca_file=cloud.ca_file,
                audit=AuditLog(Path(tmp) / "egress.log"),
                keepalive_seconds=30,
            )
            backend = EmulatedCloudBackend(
                name="cloud", base_url=cloud.base_url, device="emulator", egress=egress
            )
            ids = [backend.submit(PROGRAM, SHOTS, TOKENS.mint()) for _ in range(tasks)]
            with cloud.client() as http:
                for task_id in ids:
                    while http.get(f"/v1/tasks/{task_id}").json()["state"] != "COMPLETED":
                        time.sleep(0.05)
            backend.status(ids[0])  # warm the connection and the code paths
            backend.result(ids[0])
            process = psutil.Process(cloud.process.popen.pid)
            for _ in range(rounds):
                before = process.cpu_times()
                started = time.thread_time()
                for task_id in ids:
                    if backend.status(task_id).state.value != "COMPLETED":
                        raise RuntimeError(f"task {task_id} is not COMPLETED")
                    if sum(backend.result(task_id).counts.values()) != SHOTS:
                        raise RuntimeError(f"task {task_id} has a short result")
                ended = time.thread_time()
                after = process.cpu_times()
                worker.append(1000 * (ended - started) / tasks)
                cloud_seconds = (after.user + after.system) - (before.user + before.system)
                server.append(1000 * cloud_seconds / tasks)
            backend.close()
        finally:
            cloud.process.stop()
    return worker, server


def main() -> None:
    """Run the measurement and print one line per figure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--label", default="", help="a name for this run's line (e.g. old, new)")
    args = parser.parse_args()
    worker, server = measure(args.tasks, args.rounds)
    label = f"{args.label}: " if args.label else ""
    print(f"# {machine()}")
    print(
        f"{label}worker thread {statistics.median(worker):.2f} ms/task "
        f"(rounds {', '.join(f'{x:.2f}' for x in worker)}); "
        f"cloud {statistics.median(server):.2f} ms/task (rounds {', '.join(f'{x:.2f}' for x in server)})"
    )


if __name__ == "__main__":
    main()
