"""Jobs/s through the whole pipeline with an instant backend, and the CPU each process spent on them.

Each run: our own PostgreSQL and Redis, the emulated cloud (TLS, no queue or run delay), a layout of
``qhybrid worker`` processes and threads (``--workers 1x4 2x2``), started and ready; then a few warm-up jobs
(``--warmup``: each worker's first jobs pay one-off costs a deployed worker pays once), then ``--jobs``
small jobs (5 assets, hold 2, p = 1, 256 shots) stored and kicked at once (one ``LPUSH``). The clock
runs from that kick to the last of those jobs' ``finished_at``. Beside jobs/s, the CPU seconds (user + system,
psutil) that each process used between the kick and the end, per job: the workers, the cloud, the
PostgreSQL server (postmaster and every backend, including those that exited), Redis, and this
benchmark itself (it only waits, reading one count per 0.1 s). All of them share the machine's cores,
so the CPU per job, summed, is what bounds the jobs/s.

Two devices of the emulated cloud, one cloud process each, the runs interleaved: ``emulator``
samples every circuit on Qiskit Aer, as the cloud always does (about 5 ms of its CPU per 5-qubit
task, parsing included); ``emulated-instant`` is the throughput-testing device (``--sampler
instant``, never the default): it simulates nothing and returns uniform random shots, so its rows
measure everything but the simulation. Its jobs still run the whole journey, FINALIZING included,
on meaningless counts; it is named in every row it appears in.

    .venv/bin/python -m benchmarks.pipeline [--jobs 200] [--workers 1x4 2x2]
        [--device emulator emulated-instant] [--repeat 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]
import psycopg

from benchmarks.report import machine, markdown_table
from benchmarks.scale_out import wait_ready
from qhybrid.core.config import Settings
from qhybrid.jobs.database import Database
from qhybrid.jobs.models import utcnow
from qhybrid.jobs.queue import make_queue
from qhybrid.jobs.store import JobStore
from tests.support.cloud import CloudServer, start_cloud
from tests.support.fleet import SMALL_REQUEST, libpq, make_host, new_secret
from tests.support.servers import PostgresCluster, RedisServer, start_postgres, start_redis

#: The worker settings of the run: polls as fast as the instant cloud answers, logs at INFO as deployed.
TIMINGS = {
    "QHYBRID_POLL_INITIAL_SECONDS": "0.05",
    "QHYBRID_POLL_MAX_SECONDS": "0.5",
    "QHYBRID_LOG_LEVEL": "INFO",
}

#: The emulated cloud's devices a run can use, and the flags that start a cloud offering each.
DEVICES = {"emulator": [], "emulated-instant": ["--sampler", "instant"]}


def own_cpu(pid: int) -> float:
    """CPU seconds (user + system) of one process alone."""
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return float(times.user + times.system)


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process, its live children, and the children it reaped.

    PostgreSQL's backends come and go: a backend that exited was reaped by the postmaster, whose
    ``children_*`` times then hold it, so the sum only grows.
    """
    try:
        proc = psutil.Process(pid)
        times = proc.cpu_times()
        total = times.user + times.system + times.children_user + times.children_system
        for child in proc.children(recursive=True):
            try:
                ct = child.cpu_times()
                total += ct.user + ct.system
            except psutil.NoSuchProcess:
                pass
        return float(total)
    except psutil.NoSuchProcess:
        return 0.0


@dataclass
class Processes:
    """The process ids whose CPU the run reports, by role."""

    roles: dict[str, list[int]]
    #: Roles counted without their children (this benchmark is the parent of every server).
    alone: frozenset[str] = frozenset({"benchmark"})

    def snapshot(self) -> dict[str, float]:
        """CPU seconds per role so far."""
        return {
            role: sum((own_cpu if role in self.alone else tree_cpu)(pid) for pid in pids)
            for role, pids in self.roles.items()
        }


def wait_done(conn: psycopg.Connection[Any], jobs: int, timeout: float) -> int:
    """Until ``jobs`` jobs are terminal (one count per 0.1 s); returns how many are."""
    deadline = time.monotonic() + timeout
    done = 0
    while time.monotonic() < deadline:
        (done,) = conn.execute(
            "SELECT count(*) FROM jobs WHERE state IN ('COMPLETED', 'FAILED', 'CANCELLED')"
        ).fetchone() or (0,)
        if done >= jobs:
            break
        time.sleep(0.1)
    return int(done)


def state_medians(conn: psycopg.Connection[Any], job_ids: list[str]) -> dict[str, float]:
    """Median seconds the jobs spent in each state they left, from the job events."""
    rows = conn.execute(
        "SELECT job_id, at, to_state FROM job_events WHERE job_id = ANY(%s) ORDER BY job_id, id", (job_ids,)
    ).fetchall()
    spent: dict[str, list[float]] = defaultdict(list)
    previous: dict[str, tuple[Any, str]] = {}
    for job_id, at, state in rows:
        if job_id in previous:
            before_at, before_state = previous[job_id]
            spent[before_state].append((at - before_at).total_seconds())
        previous[job_id] = (at, state)
    return {state: statistics.median(values) for state, values in spent.items()}


def one_run(
    work: Path,
    postgres: PostgresCluster,
    redis_server: RedisServer,
    cloud: CloudServer,
    *,
    name: str,
    device: str,
    processes: int,
    threads: int,
    jobs: int,
    warmup: int,
) -> dict[str, Any]:
    """Warm the workers up with ``warmup`` jobs, then store ``jobs`` jobs, kick them, wait for the last.

    Returns:
        jobs/s, CPU per process and state medians of the measured jobs (the warm-up's excluded).
    """
    database_url = postgres.create_database()
    env = {
        **TIMINGS,
        "QHYBRID_REDIS_URL": redis_server.url,
        "QHYBRID_QUEUE_NAME": name,
        "QHYBRID_DATABASE_URL": database_url,
        "QHYBRID_KEY_ENCRYPTION_KEY": new_secret(),
        "QHYBRID_CLOUD_URL": cloud.base_url,
        "QHYBRID_CLOUD_TOKEN": cloud.token,
        "QHYBRID_CLOUD_CA_FILE": str(cloud.ca_file),
        "QHYBRID_CLOUD_DEVICE": device,
    }
    host = make_host(name, work, env)
    db = Database(database_url)
    db.migrate()
    store = JobStore(db)
    settings = Settings(
        data_dir=host.data_dir, database_url=database_url, redis_url=redis_server.url, queue_name=name
    )
    queue = make_queue(settings)
    try:
        for _ in range(processes):
            host.start_worker(threads=threads)
        wait_ready(host)
        ids = []
        for _ in range(warmup + jobs):
            job, _ = store.create_job(
                job_id=str(uuid.uuid4()),
                request=SMALL_REQUEST,
                request_hash=uuid.uuid4().hex,
                backend="emulated-cloud",
                shots=int(SMALL_REQUEST["shots"]),
                deadline_at=utcnow() + timedelta(hours=1),
            )
            ids.append(job.id)
        warm, ids = ids[:warmup], ids[warmup:]
        db.dispose()  # the benchmark's own pool stays out of PostgreSQL's count
        assert redis_server.process.popen is not None
        assert postgres.process.popen is not None
        watched = Processes(
            {
                "workers": [w.popen.pid for w in host.workers],
                "cloud": [cloud.process.popen.pid],
                "PostgreSQL": [postgres.process.popen.pid],
                "Redis": [redis_server.process.popen.pid],
                "benchmark": [os.getpid()],
            }
        )
        with psycopg.connect(libpq(database_url), autocommit=True) as conn:
            # A worker's first jobs pay one-off costs (imports, caches, first transpile); a
            # deployed worker runs thousands, so the clock starts once each thread has run some.
            queue.kick_many(warm)
            wait_done(conn, warmup, timeout=600)
            load_before = os.getloadavg()[0]
            handshakes_before = len(cloud.tls_log())
            cpu_before = watched.snapshot()
            kicked_at = utcnow()
            queue.kick_many(ids)
            done = wait_done(conn, warmup + jobs, timeout=1800) - warmup
            cpu_after = watched.snapshot()
            handshakes = len(cloud.tls_log()) - handshakes_before
            load_after = os.getloadavg()[0]
            (last, completed) = conn.execute(
                "SELECT max(finished_at), count(*) FILTER (WHERE state = 'COMPLETED') FROM jobs "
                "WHERE id = ANY(%s)",
                (ids,),
            ).fetchone() or (None, 0)
            medians = state_medians(conn, ids)
            (polls,) = conn.execute(
                "SELECT avg(polls) FROM remote_tasks WHERE job_id = ANY(%s)", (ids,)
            ).fetchone() or (None,)
    finally:
        host.stop()
    seconds = (last - kicked_at).total_seconds() if last is not None else float("nan")
    cpu = {role: cpu_after[role] - cpu_before[role] for role in cpu_after}
    return {
        "done": done,
        "completed": int(completed),
        "seconds": seconds,
        "cpu": cpu,
        "medians": medians,
        "polls": float(polls or 0.0),
        "handshakes": handshakes,
        "load": (load_before, load_after),
    }


def layout(text: str) -> tuple[int, int]:
    """``2x2`` -> (2 worker processes, 2 threads each)."""
    processes, _, threads = text.lower().partition("x")
    try:
        return int(processes), int(threads)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected PROCESSESxTHREADS such as 2x2, got {text!r}") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument(
        "--workers",
        type=layout,
        nargs="+",
        default=[(1, 4), (2, 2)],
        help="worker layouts, PROCESSESxTHREADS (default: 1x4 2x2)",
    )
    parser.add_argument("--device", choices=list(DEVICES), nargs="+", default=list(DEVICES))
    parser.add_argument("--repeat", type=int, default=1, help="rounds of every layout and device")
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="jobs run before the clock starts (default: 2 per worker thread, at least 8)",
    )
    args = parser.parse_args()
    cores = psutil.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="qhybrid-pipeline-") as folder:
        work = Path(folder)
        postgres = start_postgres()
        redis_server = start_redis()
        clouds: dict[str, CloudServer] = {}
        rows: list[dict[str, Any]] = []
        cpu_rows: list[dict[str, Any]] = []
        state_rows: list[dict[str, Any]] = []
        try:
            for device in args.device:
                clouds[device] = start_cloud(
                    work / f"cloud-{device}",
                    name=f"cloud-{device}",
                    queue_delay=0.0,
                    run_delay=0.0,
                    token="pipeline-token",
                    extra_args=["--device", device, *DEVICES[device]],
                )
            index = 0
            for _ in range(args.repeat):
                for processes, threads in args.workers:
                    for device in args.device:
                        index += 1
                        run = one_run(
                            work,
                            postgres,
                            redis_server,
                            clouds[device],
                            name=f"run{index}",
                            device=device,
                            processes=processes,
                            threads=threads,
                            jobs=args.jobs,
                            warmup=args.warmup
                            if args.warmup is not None
                            else max(8, 2 * processes * threads),
                        )
                        rate = run["completed"] / run["seconds"]
                        label = {"device": device, "workers x threads": f"{processes} x {threads}"}
                        print(f"{device}, {processes} x {threads}: {rate:.1f} jobs/s", flush=True)
                        cpu = run["cpu"]
                        total = sum(cpu.values())
                        rows.append(
                            {
                                **label,
                                "jobs": args.jobs,
                                "completed": run["completed"],
                                "seconds": f"{run['seconds']:.2f}",
                                "jobs/s": f"{rate:.1f}",
                                "polls/job": f"{run['polls']:.2f}",
                                "TLS handshakes": run["handshakes"],
                                "CPU ms/job, all processes": f"{1000 * total / args.jobs:.1f}",
                                f"CPU-bound jobs/s on {cores} cores": f"{cores * args.jobs / total:.1f}",
                                "load avg before/after": f"{run['load'][0]:.1f} / {run['load'][1]:.1f}",
                            }
                        )
                        cpu_rows.append(
                            {
                                **label,
                                **{
                                    f"{role} ms/job": f"{1000 * value / args.jobs:.1f}"
                                    for role, value in cpu.items()
                                },
                            }
                        )
                        med = run["medians"]
                        state_rows.append(
                            {
                                **label,
                                **{
                                    f"{state} (ms)": f"{1000 * med[state]:.0f}" if state in med else "-"
                                    for state in (
                                        "ACCEPTED",
                                        "PREPARING",
                                        "SUBMITTING",
                                        "SUBMITTED",
                                        "REMOTE_QUEUED",
                                        "REMOTE_RUNNING",
                                        "FINALIZING",
                                    )
                                },
                            }
                        )
        finally:
            for cloud in clouds.values():
                cloud.stop()
            redis_server.stop()
            postgres.stop()
    print(machine())
    print(
        f"cores: {psutil.cpu_count()}; PostgreSQL, Redis, the emulated cloud (TLS), the workers and this "
        "benchmark all on this machine; CPU = user + system seconds from psutil, kick to last job"
    )
    print("\n".join(markdown_table(rows)))
    print()
    print("\n".join(markdown_table(cpu_rows)))
    print()
    print("median time in each state (from the job events; the state entered at the kick first)")
    print("\n".join(markdown_table(state_rows)))


if __name__ == "__main__":
    main()
