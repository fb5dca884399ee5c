"""A worker's CPU per small job, step by step, with the emulated cloud's own time left out.

The journey runs in this process, in one thread, exactly as a worker thread runs it (real store,
real queue, real backends and gateway: TLS handshake, audit log, route tables), against an emulated
cloud started here with no queue or run delay. Each job is advanced until it waits on the cloud,
then advanced again once its task is done, until COMPLETED. The CPU of this thread
(``time.thread_time``) is summed per component by wrapping the functions below, so the figures
are the worker's and never the cloud's (a separate process) or the database's.

    .venv/bin/python -m benchmarks.worker_profile [--jobs 200] [--assets 6] [--database postgresql|sqlite]

Components are nested (the TLS handshake happens inside submit, status and result; the transpile
inside compile), so inclusive times overlap; "total" is the whole of each job's CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import redis

from benchmarks.report import machine, markdown_table
from qhybrid.core.config import Settings
from qhybrid.domain.states import JobState
from tests.support.cloud import start_cloud
from tests.support.journey import build, on

POSTGRES_ADMIN = os.environ.get("QHYBRID_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("QHYBRID_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

#: The contribution's annealing run that costs what the circuit's sampling took (past its floor).
EQUAL_TIME = "    of which: annealing for the circuit's sampling time, past its floor"
#: (label, module, attribute path) of every function whose CPU is summed.
PROBES: list[tuple[str, str, str]] = [
    ("journey: claim/get/transition (database)", "qhybrid.jobs.store", "JobStore.claim"),
    ("journey: claim/get/transition (database)", "qhybrid.jobs.store", "JobStore.claim_with_task"),
    ("journey: claim/get/transition (database)", "qhybrid.jobs.store", "JobStore.transition_returning"),
    ("journey: claim/get/transition (database)", "qhybrid.jobs.store", "JobStore.update_job"),
    ("journey: claim/get/transition (database)", "qhybrid.jobs.store", "JobStore.get_job"),
    ("journey: claim/get/transition (database)", "qhybrid.jobs.store", "JobStore.transition"),
    ("journey: claim/get/transition (database)", "qhybrid.jobs.store", "JobStore.release"),
    ("journey: remote task rows (database)", "qhybrid.jobs.store", "JobStore.remote_task"),
    ("journey: remote task rows (database)", "qhybrid.jobs.store", "JobStore.create_remote_task"),
    ("journey: remote task rows (database)", "qhybrid.jobs.store", "JobStore.attempt_task"),
    ("journey: remote task rows (database)", "qhybrid.jobs.store", "JobStore.update_remote_task"),
    ("queue: kick_at", "qhybrid.jobs.queue.huey_engine", "HueyQueue.kick_at"),
    ("PREPARING (all)", "qhybrid.jobs.journey", "Journey._prepare"),
    ("  estimate", "qhybrid.jobs.pipeline", "estimate"),
    ("  formulate", "qhybrid.jobs.pipeline", "formulate"),
    ("  obfuscate", "qhybrid.jobs.pipeline", "obfuscate"),
    ("  plan (angles)", "qhybrid.jobs.pipeline", "plan"),
    ("  compile (circuit, transpile, OpenQASM)", "qhybrid.jobs.pipeline", "compile_program"),
    ("    of which: circuit metrics (depth, gate counts)", "qhybrid.quantum.circuit", "circuit_metrics"),
    ("  key sealing", "qhybrid.proxy.keys", "KeyVault.seal"),
    ("SUBMITTING (all)", "qhybrid.jobs.journey", "Journey._submit"),
    ("polls and result (all)", "qhybrid.jobs.journey", "Journey._poll"),
    ("FINALIZING (all)", "qhybrid.jobs.journey", "Journey._finalize"),
    ("  classical baselines", "qhybrid.jobs.pipeline", "solve_classically"),
    ("  judge + refine", "qhybrid.jobs.pipeline", "judge"),
    ("  judge + refine", "qhybrid.jobs.pipeline", "refine"),
    (
        "  contribution (circuit vs classical samplers, swap annealing)",
        "qhybrid.jobs.attribution",
        "contribution",
    ),
    (
        EQUAL_TIME,
        "qhybrid.portfolio.references",
        "_equal_time",
    ),
    ("  result document (compare: portfolios, top samples, models)", "qhybrid.jobs.pipeline", "compare"),
    ("  moments read back (npz)", "qhybrid.jobs.pipeline", "Moments.from_bytes"),
    ("journey: stored request read back (each step)", "qhybrid.jobs.journey", "_request"),
    ("gateway: egress requests (all)", "qhybrid.gateway.egress", "EgressClient.request"),
    ("gateway: TCP connect + TLS handshake", "qhybrid.gateway.tls", "PolicyNetworkBackend.connect_tcp"),
    ("gateway: TCP connect + TLS handshake", "qhybrid.gateway.tls", "PlainStream.start_tls"),
    ("gateway: audit append (fsync)", "qhybrid.gateway.audit", "AuditLog.append"),
    ("gateway: boundary check (route, body, program)", "qhybrid.gateway.routes", "RouteTable.check"),
]

#: The labels whose sum is the journey's database and queue work (the target of issue 12: ≤ 5 ms).
DATABASE_AND_QUEUE = (
    "journey: claim/get/transition (database)",
    "journey: remote task rows (database)",
    "queue: kick_at",
)


def backend_cpu(admin: Any, database: str, exclude: list[int]) -> dict[int, float]:
    """CPU seconds (user + system) so far of each PostgreSQL server process serving ``database``.

    Read from ``/proc`` (the server runs on this machine); processes in ``exclude`` (the
    benchmark's own reads) are left out.
    """
    rows = admin.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = %s AND NOT (pid = ANY(%s))", (database, exclude)
    ).fetchall()
    ticks = os.sysconf("SC_CLK_TCK")
    found: dict[int, float] = {}
    for (pid,) in rows:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        found[pid] = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return found


class Meter:
    """Sums this thread's CPU per label; nested calls of one label count once.

    Only calls made while ``on`` is set count (inside ``Journey.advance``): the benchmark's own
    reads between two advances are not the worker's.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._active: set[str] = set()
        self.on = False
        self.thread = threading.get_ident()
        #: Database work of the measured thread: SQL statements, commits, pool checkouts.
        self.database: dict[str, int] = defaultdict(int)

    def counting(self, what: str) -> Callable[..., None]:
        """An event listener counting ``what`` when the measured thread is inside an advance."""

        def count(*_args: Any, **_kwargs: Any) -> None:
            if self.on and threading.get_ident() == self.thread:
                self.database[what] += 1

        return count

    def listen(self, engine: Any) -> None:
        """Count ``engine``'s SQL statements, transactions and connection checkouts.

        Statements: SQLAlchemy's and those of the PostgreSQL fast path (``jobs.pgfast``, one
        statement per call). Transactions: BEGIN … COMMIT pairs (autocommit statements have none).
        """
        from sqlalchemy import event

        event.listen(engine, "before_cursor_execute", self.counting("SQL statements"))
        transactions = self.counting("BEGIN/COMMIT transactions")

        def commit(connection: Any) -> None:
            if connection.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
                transactions()

        event.listen(engine, "commit", commit)
        event.listen(engine.pool, "checkout", self.counting("pool checkouts"))
        try:
            from qhybrid.jobs import pgfast
        except ImportError:  # before the fast path existed
            return
        original = pgfast.PgFastPath._cursor
        statements = self.counting("SQL statements")

        def counted(path: Any) -> Any:
            statements()
            return original(path)

        pgfast.PgFastPath._cursor = counted  # type: ignore[method-assign,assignment]

    def wrap(self, label: str, function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def measured(*args: Any, **kwargs: Any) -> Any:
            if label in self._active or not self.on or threading.get_ident() != self.thread:
                return function(*args, **kwargs)
            self._active.add(label)
            started = time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[label] += time.thread_time() - started
                self.calls[label] += 1
                self._active.discard(label)

        return measured


@contextlib.contextmanager
def probes(meter: Meter) -> Iterator[None]:
    """Wrap every probe (where it exists in this version of the code); unwrap at the end."""
    import importlib

    undo: list[tuple[Any, str, Any]] = []
    for label, module_name, path in PROBES:
        try:
            owner: Any = importlib.import_module(module_name)
        except ImportError:
            continue
        *parents, name = path.split(".")
        for parent in parents:
            owner = getattr(owner, parent, None)
        original = getattr(owner, name, None) if owner is not None else None
        if original is None:
            continue
        undo.append((owner, name, original))
        setattr(owner, name, meter.wrap(label, original))
    # Modules that imported a probed function by name keep the original: patch those too.
    import qhybrid.jobs.pipeline as pipeline_module

    for owner, name, original in list(undo):
        if owner is pipeline_module:
            continue
        for module in list(sys.modules.values()):
            if module is None or not getattr(module, "__name__", "").startswith("qhybrid."):
                continue
            if getattr(module, name, None) is original and module is not owner:
                undo.append((module, name, original))
                setattr(module, name, getattr(owner, name))
    try:
        yield
    finally:
        for owner, name, original in reversed(undo):
            setattr(owner, name, original)


def small_request(assets: int, seed: int) -> dict[str, Any]:
    """An ``assets``-asset selection request given as moments, p = 1, 512 shots."""
    import numpy as np

    rng = np.random.default_rng(seed)
    factors = rng.normal(size=(assets, assets)) * 0.05
    sigma = factors @ factors.T + np.eye(assets) * 0.01
    return {
        "assets": [
            {"name": f"A{i}", "expected_return": float(rng.normal(0.01, 0.004))} for i in range(assets)
        ],
        "covariance": [[float(v) for v in row] for row in (sigma + sigma.T) / 2],
        "risk_aversion": 0.5,
        "budget": assets // 2,
        "backend": "emulated-cloud",
        "shots": 512,
        "options": {"reps": 1, "seed": seed},
    }


def run(args: argparse.Namespace, work: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    cloud = start_cloud(work / "cloud", queue_delay=0.0, run_delay=0.0, token="profile-token")
    database = f"qhybrid_profile_{uuid.uuid4().hex[:8]}"
    queue_name = f"profile-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        data_dir=work / "data",
        poll_initial_seconds=0.05,
        poll_max_seconds=0.2,
    )
    if args.database == "postgresql":
        with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{database}"')
        base = POSTGRES_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
        settings = settings.model_copy(
            update={"database_url": f"{base}/{database}", "redis_url": REDIS_URL, "queue_name": queue_name}
        )
    settings = on(settings, cloud)
    # What a worker process does at start (``jobs.worker.Worker``), where this version has it.
    try:
        from qhybrid.quantum.circuit import transpile_on_calling_thread
    except ImportError:
        pass
    else:
        transpile_on_calling_thread()
    services = build(settings)
    meter = Meter()
    meter.listen(services.store.db.engine)
    totals: list[float] = []
    without: list[float] = []  # the same, less the annealing reference's equal-time run
    transitions: list[int] = []
    # The whole process's CPU during the advances: also the threads a step hands work to (Qiskit's
    # Rust pool, BLAS) and the lease keeper, which the thread's own CPU does not see.
    process_spent: list[float] = [0.0]

    # The benchmark's own reads between two advances: on a connection of their own (PostgreSQL),
    # whose server process is left out of the server's CPU per job.
    watch: Any = None
    if args.database == "postgresql":
        watch = psycopg.connect(f"{POSTGRES_ADMIN.rsplit('/', 1)[0]}/{database}", autocommit=True)
    server_cpu: float | None = None

    def state_of(job_id: str) -> tuple[str, Any, Any, str | None]:
        if watch is None:
            job = services.store.get_job(job_id)
            assert job is not None
            return job.state, job.next_poll_at, job.updated_at, job.error
        row = watch.execute(
            "SELECT state, next_poll_at, updated_at, error FROM jobs WHERE id = %s", (job_id,)
        ).fetchone()
        return row[0], row[1], row[2], row[3]

    def events_of(job_id: str) -> int:
        if watch is None:
            view = services.store.view(job_id)
            assert view is not None
            return len(view.events)
        return int(
            watch.execute("SELECT count(*) FROM job_events WHERE job_id = %s", (job_id,)).fetchone()[0]
        )

    def drive(job_id: str) -> float:
        """Advance the job as a worker thread would, waiting for each scheduled poll; its CPU."""
        spent = 0.0
        while True:
            started = time.thread_time()
            process_started = time.process_time()
            meter.on = True
            try:
                services.journey.advance(job_id)
            finally:
                meter.on = False
            spent += time.thread_time() - started
            process_spent[-1] += time.process_time() - process_started
            state, next_poll_at, updated_at, error = state_of(job_id)
            if JobState(state) in (JobState.COMPLETED, JobState.FAILED):
                break
            if next_poll_at is not None:
                time.sleep(max(0.0, (next_poll_at - updated_at).total_seconds()))
        if state != "COMPLETED":
            raise RuntimeError(f"job {job_id} {state}: {error}")
        return spent

    try:
        # Warm-up: imports, caches, the first handshake; not counted.
        for seed in range(3):
            drive(services.new_job(small_request(args.assets, seed)))
        meter.database.clear()  # the warm-up's statements are not the measured jobs'
        # Accepted before the clock: inserting jobs is the API's work, not the worker's.
        job_ids = [services.new_job(small_request(args.assets, 100 + index)) for index in range(args.jobs)]
        admin = psycopg.connect(POSTGRES_ADMIN, autocommit=True) if watch is not None else None
        exclude = [watch.info.backend_pid] if watch is not None else []
        cpu_before = backend_cpu(admin, database, exclude) if admin is not None else {}
        with probes(meter):
            for job_id in job_ids:
                equal_time = meter.seconds[EQUAL_TIME]
                process_spent.append(0.0)
                totals.append(drive(job_id))
                without.append(totals[-1] - (meter.seconds[EQUAL_TIME] - equal_time))
        if admin is not None:
            cpu_after = backend_cpu(admin, database, exclude)
            # Processes that started meanwhile count whole; any that ended are lost (none, normally).
            server_cpu = sum(after - cpu_before.get(pid, 0.0) for pid, after in cpu_after.items())
            admin.close()
        transitions.extend(events_of(job_id) for job_id in job_ids)
    finally:
        if watch is not None:
            watch.close()
        cloud.stop()
        services.store.db.dispose()
        if args.database == "postgresql":
            with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            client = redis.Redis.from_url(REDIS_URL)
            keys = list(client.scan_iter(match=f"*{queue_name}*"))
            if keys:
                client.delete(*keys)
    rows = []
    for label in dict.fromkeys(label for label, _, _ in PROBES):
        if label not in meter.seconds:
            continue
        rows.append(
            {
                "component": label,
                "ms per job": f"{1000 * meter.seconds[label] / args.jobs:.2f}",
                "calls per job": f"{meter.calls[label] / args.jobs:.1f}",
            }
        )
    for what, count in meter.database.items():
        rows.append({"component": f"({what})", "ms per job": "", "calls per job": f"{count / args.jobs:.1f}"})
    ordered = sorted(totals)
    summary = {
        "jobs": args.jobs,
        "median ms": 1000 * statistics.median(totals),
        "mean ms": 1000 * statistics.fmean(totals),
        "p90 ms": 1000 * ordered[int(0.9 * (len(ordered) - 1))],
        "transitions": statistics.fmean(transitions),
        "server ms": None if server_cpu is None else 1000 * server_cpu / args.jobs,
        "database and queue ms": 1000
        * sum(meter.seconds[label] for label in DATABASE_AND_QUEUE if label in meter.seconds)
        / args.jobs,
        "median ms without": 1000 * statistics.median(without),
        "process median ms": 1000 * statistics.median(process_spent[1:]),
        "process mean ms": 1000 * statistics.fmean(process_spent[1:]),
        "mean ms without": 1000 * statistics.fmean(without),
    }
    return rows, summary


def main() -> None:
    """Profile ``--jobs`` small jobs and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument(
        "--assets", type=int, default=6, help="assets (= qubits with privacy off/low/standard)"
    )
    parser.add_argument("--database", choices=["postgresql", "sqlite"], default="postgresql")
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="qhybrid-profile-") as folder:
        rows, summary = run(args, Path(folder))
    load_after = os.getloadavg()
    print(
        f"# worker CPU per job: {summary['jobs']} jobs of {args.assets} assets (p = 1, 512 shots), "
        f"{args.database}{' + Redis' if args.database == 'postgresql' else ' + SqliteHuey'}, emulated cloud "
        "excluded (separate process, no delays)"
    )
    print(f"# {machine()}; load average {load_before[0]:.2f} before, {load_after[0]:.2f} after (1 min)")
    print(
        f"# CPU per job: median {summary['median ms']:.1f} ms, mean {summary['mean ms']:.1f} ms, "
        f"p90 {summary['p90 ms']:.1f} ms; {summary['transitions']:.1f} events per job"
    )
    print(
        f"# the process's CPU per job during the advances (all its threads): median "
        f"{summary['process median ms']:.1f} ms, mean {summary['process mean ms']:.1f} ms"
    )
    print(f"# database and queue work per job (sum of their rows): {summary['database and queue ms']:.2f} ms")
    if summary["server ms"] is not None:
        print(
            "# PostgreSQL server processes' CPU per job (user + system, /proc, the benchmark's own "
            f"reads left out): {summary['server ms']:.1f} ms"
        )
    print(
        f"# CPU per job without the annealing reference's run for the circuit's sampling time (past "
        f"its 64-sweep floor): median {summary['median ms without']:.1f} ms, "
        f"mean {summary['mean ms without']:.1f} ms"
    )
    print("\n".join(markdown_table(rows)))


if __name__ == "__main__":
    main()
