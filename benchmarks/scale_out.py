"""Jobs/s through the whole pipeline with 1, 2 and 4 worker processes sharing one PostgreSQL and
one queue, against the simplest alternative: one process with as many threads.

Each row: a fresh database, N ``qhybrid worker`` processes (``--threads`` each) started and ready,
then ``--jobs`` small jobs (5 assets, hold 2, p = 1, 256 shots) stored and kicked at once; the
clock runs from the first kick to the last job COMPLETED. The emulated cloud answers at once (no
queue or run delay) and runs on the same machine, as do PostgreSQL and the queue (our own, started
here). "QPU busy" is the share of the wall time the emulated QPU (one runner thread, FIFO, Aer
sampling) spent running tasks; the load average shows how busy the shared machine was.

    .venv/bin/python -m benchmarks.scale_out [--jobs 100] [--processes 1 2 4] [--queue redis|sqs]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from benchmarks.report import machine, markdown_table
from qhybrid.core.config import Settings
from qhybrid.jobs.database import Database
from qhybrid.jobs.models import utcnow
from qhybrid.jobs.queue import make_queue
from qhybrid.jobs.store import JobStore
from tests.support.cloud import CloudServer, start_cloud
from tests.support.fleet import SMALL_REQUEST, Host, make_host, new_secret, wait_all_terminal
from tests.support.servers import FAKE_AWS_ENV, PostgresCluster, start_moto, start_postgres, start_redis

TIMINGS = {
    "QHYBRID_POLL_INITIAL_SECONDS": "0.1",
    "QHYBRID_POLL_MAX_SECONDS": "0.5",
    # INFO, as deployed: the harness waits for the "worker ready" line, logged at INFO.
    "QHYBRID_LOG_LEVEL": "INFO",
}


def wait_ready(host: Host, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all("worker ready" in w.log() for w in host.workers):
            return
        dead = [w for w in host.workers if not w.alive()]
        if dead:
            raise RuntimeError(f"{dead[0].name} exited:\n{dead[0].log()[-3000:]}")
        time.sleep(0.2)
    raise RuntimeError("workers not ready")


def qpu_busy_seconds(cloud: CloudServer) -> float:
    """Seconds the emulated QPU (one runner thread, FIFO) spent running tasks."""
    with sqlite3.connect(cloud.data_dir / "cloud.db") as conn:
        (busy,) = conn.execute(
            "SELECT COALESCE(SUM(ended_at - started_at), 0) FROM tasks WHERE ended_at IS NOT NULL"
        ).fetchone()
    return float(busy)


def one_row(
    work: Path,
    postgres: PostgresCluster,
    queue_env: dict[str, str],
    cloud: CloudServer,
    *,
    processes: int,
    threads: int,
    jobs: int,
) -> dict[str, Any]:
    database_url = postgres.create_database()
    env = {
        **TIMINGS,
        **queue_env,
        "QHYBRID_DATABASE_URL": database_url,
        "QHYBRID_KEY_ENCRYPTION_KEY": new_secret(),
        "QHYBRID_CLOUD_URL": cloud.base_url,
        "QHYBRID_CLOUD_TOKEN": cloud.token,
        "QHYBRID_CLOUD_CA_FILE": str(cloud.ca_file),
    }
    host = make_host(f"p{processes}x{threads}", work, env)
    db = Database(database_url)
    db.migrate()
    store = JobStore(db)
    settings = Settings(
        data_dir=host.data_dir,
        database_url=database_url,
        redis_url=env.get("QHYBRID_REDIS_URL"),
        queue_name=env.get("QHYBRID_QUEUE_NAME", "qhybrid"),
        queue_url=env.get("QHYBRID_QUEUE_URL"),
    )
    queue = make_queue(settings)
    try:
        for _ in range(processes):
            host.start_worker(threads=threads)
        wait_ready(host)
        ids = []
        for _ in range(jobs):
            job, _ = store.create_job(
                job_id=str(uuid.uuid4()),
                request=SMALL_REQUEST,
                request_hash=uuid.uuid4().hex,
                backend="emulated-cloud",
                shots=int(SMALL_REQUEST["shots"]),
                deadline_at=utcnow() + timedelta(hours=1),
            )
            ids.append(job.id)
        busy_before = qpu_busy_seconds(cloud)
        load_before = os.getloadavg()[0]
        started = time.monotonic()
        for job_id in ids:
            queue.kick(job_id)
        states = wait_all_terminal(database_url, set(ids), timeout=1800)
        seconds = time.monotonic() - started
        busy = qpu_busy_seconds(cloud) - busy_before
        load_after = os.getloadavg()[0]
    finally:
        host.stop()
        db.dispose()
    done = sum(1 for j in ids if states.get(j) == "COMPLETED")
    return {
        "worker processes": processes,
        "threads each": threads,
        "jobs": jobs,
        "completed": done,
        "seconds": f"{seconds:.1f}",
        "jobs/s": f"{done / seconds:.2f}",
        "QPU busy": f"{100 * busy / seconds:.0f} %",
        "load avg before/after": f"{load_before:.1f} / {load_after:.1f}",
        "_rate": done / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--threads", type=int, default=2, help="threads per worker process")
    parser.add_argument("--queue", choices=["redis", "sqs"], default="redis")
    args = parser.parse_args()
    os.environ.update(FAKE_AWS_ENV)  # the local SQS endpoint, never a real account
    with tempfile.TemporaryDirectory(prefix="qhybrid-scale-") as folder:
        work = Path(folder)
        postgres = start_postgres()
        redis_server = start_redis() if args.queue == "redis" else None
        moto = start_moto(work) if args.queue == "sqs" else None
        cloud = start_cloud(work / "cloud", queue_delay=0.0, run_delay=0.0, token="scale-token")
        rows: list[dict[str, Any]] = []
        try:
            configs = [(n, args.threads) for n in args.processes]
            # The simplest alternative to more processes: one process with as many threads.
            configs.append((1, args.threads * max(args.processes)))
            for index, (processes, threads) in enumerate(configs):
                if redis_server is not None:
                    queue_env = {"QHYBRID_REDIS_URL": redis_server.url, "QHYBRID_QUEUE_NAME": f"scale{index}"}
                else:
                    assert moto is not None
                    queue_env = {"QHYBRID_QUEUE_URL": moto.queue_url(f"scale-{index}", wait=20)}
                rows.append(
                    one_row(
                        work, postgres, queue_env, cloud, processes=processes, threads=threads, jobs=args.jobs
                    )
                )
                print(f"{processes} x {threads}: {rows[-1]['jobs/s']} jobs/s", flush=True)
        finally:
            cloud.stop()
            if moto is not None:
                moto.stop()
            if redis_server is not None:
                redis_server.stop()
            postgres.stop()
    base = rows[0]["_rate"]
    for row in rows:
        row["vs 1 process"] = f"{row.pop('_rate') / base:.2f}x"
    print(machine())
    print(f"queue: {args.queue}; PostgreSQL, the queue and the emulated cloud on the same machine")
    print("\n".join(markdown_table(rows)))


if __name__ == "__main__":
    main()
