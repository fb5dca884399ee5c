"""A bounded chaos run: jobs through the API while workers are killed -9 every few seconds and our
own PostgreSQL and Redis are killed and restarted mid-run. Used by ``tests/integration/test_chaos.py``
(100 jobs) and ``benchmarks.chaos`` (500)."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from tests.support.cloud import start_cloud
from tests.support.fleet import (
    FAST_ENV,
    SMALL_REQUEST,
    TERMINAL,
    job_states,
    make_host,
    new_secret,
    remote_tasks,
    results,
    start_api,
    submit,
    wait_all_terminal,
)
from tests.support.processes import free_port
from tests.support.servers import start_postgres, start_redis


@dataclass
class ChaosReport:
    """What a chaos run saw."""

    jobs: int
    states: Counter[str]
    sources: Counter[str]
    worker_kills: int
    database_kills: int
    redis_kills: int
    seconds: float
    tasks_per_job: Counter[int]
    posts_per_token: Counter[int]
    unsubmitted_tokens: int
    events: list[str] = field(default_factory=list)
    logs: str = ""

    @property
    def completed(self) -> int:
        """Jobs that completed."""
        return self.states.get("COMPLETED", 0)

    @property
    def duplicate_submissions(self) -> int:
        """Provider POSTs beyond one per job (a task per extra token, or a token POSTed twice)."""
        extra_tasks = sum((n - 1) * k for n, k in self.tasks_per_job.items() if n > 1)
        extra_posts = sum((n - 1) * k for n, k in self.posts_per_token.items() if n > 1)
        return extra_tasks + extra_posts


def run_chaos(
    work_dir: Path,
    *,
    jobs: int = 100,
    workers: int = 3,
    threads: int = 2,
    kill_every: float | None = 3.0,
    database_kills: int = 1,
    redis_kills: int = 1,
    outage_seconds: float = 1.5,
    timeout: float = 300.0,
    seed: int = 0,
) -> ChaosReport:
    """Run ``jobs`` small jobs through an API and ``workers`` worker processes under chaos.

    Every ``kill_every`` seconds one running worker, picked at random, is killed -9 and a fresh
    one started, provided some job finished since the previous kill: on a quiet machine jobs finish
    every fraction of a second, so workers die every ``kill_every`` seconds; on a machine so loaded
    that a worker needs longer than the period to start and finish one job, the kills wait for it
    rather than starving every job of progress (seen: 0/100 done after 590 s at load 14 when a kill
    waited only for some job to move one step). ``kill_every=None`` adapts the period to the
    machine: three times the longest a first worker took from its start to its ready line (at
    least 3 s), so that a replaced worker lives long enough after its start to finish steps (a
    fixed 3 s let 500 jobs on a loaded machine complete nothing in 4 minutes).
    Our own PostgreSQL is killed -9 (all its processes) ``database_kills`` times and Redis (with
    its append-only file) ``redis_kills`` times, spread over the run by progress (the first at a
    fifth of the jobs done), each restarted after ``outage_seconds``. The emulated cloud answers
    at once (no queue or run delay).
    """
    rng = random.Random(seed)
    postgres = start_postgres()
    redis_server = start_redis()
    cloud = start_cloud(work_dir / "cloud", queue_delay=0.0, run_delay=0.0, token="chaos-token")
    database_url = postgres.create_database()
    env = {
        **FAST_ENV,
        "QHYBRID_DATABASE_URL": database_url,
        "QHYBRID_REDIS_URL": redis_server.url,
        "QHYBRID_QUEUE_NAME": "chaos",
        "QHYBRID_KEY_ENCRYPTION_KEY": new_secret(),
        "QHYBRID_CLOUD_URL": cloud.base_url,
        "QHYBRID_CLOUD_TOKEN": cloud.token,
        "QHYBRID_CLOUD_CA_FILE": str(cloud.ca_file),
    }
    host = make_host("host", work_dir, env)
    api_port = free_port()
    api = start_api("api", api_port, host.env, host.log_dir)
    events: list[str] = []
    kills = {"worker": 0, "database": 0, "redis": 0}
    started = time.monotonic()

    def note(text: str) -> None:
        events.append(f"{time.monotonic() - started:7.1f}s {text}")

    try:
        for _ in range(workers):
            host.start_worker(threads=threads)
        if kill_every is None:
            kill_every = max(3.0, 3 * _startup_seconds(host.workers))
            note(f"kill period {kill_every:.1f} s (3 x the workers' start-up)")
        period: float = kill_every
        job_ids: set[str] = set()
        lock = threading.Lock()

        def submit_all() -> None:
            for _ in range(jobs):
                job_id = submit(f"http://127.0.0.1:{api_port}", SMALL_REQUEST)
                with lock:
                    job_ids.add(job_id)

        submitter = threading.Thread(target=submit_all, name="chaos-submitter", daemon=True)
        submitter.start()
        plan = [("database", (i + 1) / (database_kills + 1)) for i in range(database_kills)]
        plan += [("redis", (i + 1.5) / (redis_kills + 1.5)) for i in range(redis_kills)]
        plan.sort(key=lambda item: item[1])
        next_worker_kill = time.monotonic() + period
        ready_pids: set[int] = set()
        done_at_last_kill = -1

        def tick(states: dict[str, str]) -> None:
            nonlocal next_worker_kill, done_at_last_kill
            done = sum(1 for s in states.values() if s in TERMINAL)
            if plan and states and done >= max(1, int(plan[0][1] * jobs)) and done < jobs:
                target, _ = plan.pop(0)
                server: Any = postgres if target == "database" else redis_server
                server.kill9()
                kills[target] += 1
                note(f"{target} killed -9 at {done}/{jobs} done")
                time.sleep(outage_seconds)
                server.start()
                note(f"{target} restarted")
            # Only workers that are up and consuming are killed, so that a loaded machine, where a
            # worker takes longer than the kill period to start, still makes progress.
            for worker in host.live_workers():
                if worker.popen.pid not in ready_pids and "worker ready" in worker.log():
                    ready_pids.add(worker.popen.pid)
            ready = [w for w in host.live_workers() if w.popen.pid in ready_pids]
            # The first kill needs no finished job (it lands mid-run either way); each later one
            # waits until a job finished since the previous kill, so every kill comes after progress.
            finished_since = done > done_at_last_kill
            if time.monotonic() >= next_worker_kill and done < jobs and ready and finished_since:
                done_at_last_kill = done
                victim = rng.choice(ready)
                victim.kill9()
                kills["worker"] += 1
                host.workers.remove(victim)
                host.start_worker(threads=threads)
                note(f"worker {victim.popen.pid} killed -9 at {done}/{jobs} done; a new one started")
                next_worker_kill = time.monotonic() + period

        # Wait for the submitter first (it retries through the outages), then for every job.
        while submitter.is_alive():
            submitter.join(0.25)
            tick(_safe_states(database_url))
        states = wait_all_terminal(database_url, job_ids, timeout=timeout, tick=tick)
        seconds = time.monotonic() - started
        mine = {job: states.get(job, "MISSING") for job in job_ids}
        tasks = remote_tasks(database_url)
        posts = cloud.submissions()
        per_job = Counter(Counter(job for job, *_ in tasks if job in job_ids).values())
        stored = results(database_url)
        return ChaosReport(
            jobs=len(job_ids),
            states=Counter(mine.values()),
            sources=Counter(str(stored[j].get("source")) for j in job_ids if j in stored),
            worker_kills=kills["worker"],
            database_kills=kills["database"],
            redis_kills=kills["redis"],
            seconds=seconds,
            tasks_per_job=per_job,
            posts_per_token=Counter(posts.get(token, 0) for _, _, token, _ in tasks),
            unsubmitted_tokens=sum(1 for _, _, token, _ in tasks if posts.get(token, 0) == 0),
            events=events,
            logs="\n".join(f"--- {w.name}\n{w.log()[-1500:]}" for w in [api, *host.workers]),
        )
    finally:
        host.stop()
        api.stop()
        cloud.stop()
        redis_server.stop()
        postgres.stop()


def _startup_seconds(workers: list[Any], timeout: float = 300.0) -> float:
    """Seconds until every worker in ``workers`` (just started) logged its ready line."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if all("worker ready" in w.log() for w in workers):
            break
        time.sleep(0.1)
    return time.monotonic() - started


def _safe_states(database_url: str) -> dict[str, str]:
    try:
        return job_states(database_url)
    except psycopg.Error:
        return {}  # the database is down on purpose
