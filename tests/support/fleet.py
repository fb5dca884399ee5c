"""Many trusted-zone processes against one database: simulated hosts, job submission over HTTP,
and what the database and the provider say afterwards. Shared by the many-hosts and chaos tests
and by ``benchmarks.scale_out`` / ``benchmarks.chaos``."""

from __future__ import annotations

import base64
import os
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

from tests.support.processes import Process, start_process

#: Timings that let a test see leases expire and polls come round within seconds.
FAST_ENV = {
    "QHYBRID_LEASE_SECONDS": "5",
    "QHYBRID_POLL_INITIAL_SECONDS": "0.1",
    "QHYBRID_POLL_MAX_SECONDS": "0.5",
    "QHYBRID_RETRY_INITIAL_SECONDS": "0.2",
    "QHYBRID_RETRY_MAX_SECONDS": "2",
    "QHYBRID_RECONCILE_INTERVAL_SECONDS": "1",
    "QHYBRID_RECONCILE_GRACE_SECONDS": "2",
}

#: A small job: 5 assets, hold 2, one QAOA layer, 256 shots.
SMALL_REQUEST: dict[str, Any] = {
    "assets": [
        {"name": n, "expected_return": r}
        for n, r in zip("ABCDE", (0.012, 0.009, 0.007, 0.004, 0.010), strict=True)
    ],
    "covariance": [
        [0.031, 0.012, 0.004, 0.002, 0.010],
        [0.012, 0.024, 0.006, 0.001, 0.008],
        [0.004, 0.006, 0.018, 0.003, 0.002],
        [0.002, 0.001, 0.003, 0.010, 0.001],
        [0.010, 0.008, 0.002, 0.001, 0.040],
    ],
    "risk_aversion": 0.5,
    "budget": 2,
    "backend": "emulated-cloud",
    "shots": 256,
    "options": {"reps": 1},
}


def new_secret() -> str:
    """A 32-byte key (the KEK, the token key) as a secret manager would hand it out, in base64."""
    return base64.b64encode(os.urandom(32)).decode()


def libpq(url: str) -> str:
    """A SQLAlchemy ``postgresql+psycopg://`` URL as psycopg takes it."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


@dataclass
class Host:
    """A simulated host: its own data directory and its own worker processes."""

    name: str
    data_dir: Path
    env: dict[str, str]
    log_dir: Path
    workers: list[Process] = field(default_factory=list)
    started: int = 0

    def start_worker(self, threads: int = 2) -> Process:
        """Start one ``qhybrid worker`` process on this host."""
        self.started += 1
        proc = start_process(
            f"{self.name}-worker-{self.started}",
            ["-m", "qhybrid", "worker", "--threads", str(threads)],
            log_dir=self.log_dir,
            env=self.env,
        )
        self.workers.append(proc)
        return proc

    def live_workers(self) -> list[Process]:
        """Its workers still running."""
        return [w for w in self.workers if w.alive()]

    def pids(self) -> set[int]:
        """Process ids of every worker it ever ran (leases and events name them)."""
        return {w.popen.pid for w in self.workers}

    def kill_workers(self) -> None:
        """SIGKILL every worker of this host, as a lost machine would."""
        for worker in self.workers:
            worker.kill9()

    def stop(self) -> None:
        """Stop its workers."""
        for worker in self.workers:
            worker.stop()


def make_host(name: str, root: Path, shared_env: Mapping[str, str]) -> Host:
    """A host whose only shared state is what ``shared_env`` points at (database, queue, secrets)."""
    data_dir = root / name / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {**shared_env, "QHYBRID_DATA_DIR": str(data_dir)}
    return Host(name=name, data_dir=data_dir, env=env, log_dir=root / name / "logs")


def start_api(name: str, port: int, env: Mapping[str, str], log_dir: Path) -> Process:
    """A ``qhybrid serve`` process, once ``/readyz`` answers."""
    return start_process(
        name,
        ["-m", "qhybrid", "serve", "--port", str(port)],
        log_dir=log_dir,
        env=env,
        health_url=f"http://127.0.0.1:{port}/readyz",
        timeout=120,
    )


def submit(api_url: str, request: Mapping[str, Any], *, key: str | None = None, timeout: float = 120) -> str:
    """POST a job, retrying through outages with one Idempotency-Key, as a careful client does."""
    key = key or uuid.uuid4().hex
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            response = httpx.post(
                f"{api_url}/optimize_portfolio", json=request, headers={"Idempotency-Key": key}, timeout=10
            )
            if response.status_code == 202:
                return str(response.json()["job_id"])
            last = f"{response.status_code} {response.text[:200]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.5)
    raise AssertionError(f"could not submit a job in {timeout}s: {last}")


def job_states(database_url: str) -> dict[str, str]:
    """Every job's state."""
    with psycopg.connect(libpq(database_url), connect_timeout=3) as conn:
        rows = conn.execute("SELECT id, state FROM jobs").fetchall()
    return {str(job_id): str(state) for job_id, state in rows}


def job_events(database_url: str) -> list[tuple[str, str, str | None]]:
    """``(job id, to_state, actor)`` of every transition, in order."""
    with psycopg.connect(libpq(database_url), connect_timeout=3) as conn:
        rows = conn.execute("SELECT job_id, to_state, actor FROM job_events ORDER BY id").fetchall()
    return [(str(j), str(s), None if a is None else str(a)) for j, s, a in rows]


def remote_tasks(database_url: str) -> list[tuple[str, int, str, str | None]]:
    """``(job id, attempt, client token, task id)`` of every provider task the jobs recorded."""
    with psycopg.connect(libpq(database_url), connect_timeout=3) as conn:
        rows = conn.execute("SELECT job_id, attempt, client_token, task_id FROM remote_tasks").fetchall()
    return [(str(j), int(a), str(t), None if i is None else str(i)) for j, a, t, i in rows]


def results(database_url: str) -> dict[str, dict[str, Any]]:
    """The stored result of every job that has one."""
    with psycopg.connect(libpq(database_url), connect_timeout=3) as conn:
        rows = conn.execute("SELECT id, result FROM jobs WHERE result IS NOT NULL").fetchall()
    return {str(job_id): dict(result) for job_id, result in rows}


TERMINAL = {"COMPLETED", "FAILED", "CANCELLED"}


def wait_all_terminal(
    database_url: str,
    job_ids: set[str],
    *,
    timeout: float,
    tick: Callable[[dict[str, str]], None] | None = None,
) -> dict[str, str]:
    """Poll the database until every job ended; ``tick`` sees each snapshot (outages are skipped)."""
    deadline = time.monotonic() + timeout
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        try:
            states = job_states(database_url)
        except psycopg.Error:
            states = {}  # the database is down (on purpose, in the chaos test): look again
        if tick is not None:
            tick(states)
        if states and all(states.get(j) in TERMINAL for j in job_ids):
            return states
        time.sleep(0.25)
    return states


def pid_of(actor: str | None) -> int | None:
    """The process id in a lease owner ``host:pid:random``."""
    if actor is None or actor.count(":") < 2:
        return None
    try:
        return int(actor.split(":")[-2])
    except ValueError:
        return None
