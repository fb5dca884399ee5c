"""Workers on several hosts share nothing but PostgreSQL, the queue and two secrets.

Hosts are simulated by separate processes with separate data directories (no shared files: each
keeps its own audit log, and no key file exists: the KEK and the gateway's token key come from
the environment as a secret manager would hand them out); network namespaces are not used. One
host's workers are killed -9 while they are in the middle of jobs; the other hosts finish those
jobs, opening keys sealed on the dead host and sending tokens it stored, and the provider sees
one submission per job.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from qhybrid.gateway.audit import verify
from tests.support.cloud import CloudServer, start_cloud
from tests.support.fleet import (
    FAST_ENV,
    SMALL_REQUEST,
    Host,
    job_events,
    make_host,
    new_secret,
    pid_of,
    remote_tasks,
    results,
    start_api,
    submit,
    wait_all_terminal,
)
from tests.support.processes import Process, free_port
from tests.support.servers import MotoServer

pytestmark = pytest.mark.integration

JOBS = 12


@pytest.fixture(params=["redis", "sqs"])
def shared_env(request: pytest.FixtureRequest, postgres_url: str) -> dict[str, str]:
    """What the hosts share: the database, the queue, the KEK and the gateway's token key."""
    env = {
        **FAST_ENV,
        "QHYBRID_DATABASE_URL": postgres_url,
        "QHYBRID_KEY_ENCRYPTION_KEY": new_secret(),
        # A token stored by host-b before its POST must pass the survivors' gateways.
        "QHYBRID_EGRESS_TOKEN_KEY": new_secret(),
    }
    if request.param == "redis":
        env["QHYBRID_REDIS_URL"] = request.getfixturevalue("redis_server")
        env["QHYBRID_QUEUE_NAME"] = request.getfixturevalue("queue_name")
    else:
        sqs: MotoServer = request.getfixturevalue("sqs_server")
        env["QHYBRID_QUEUE_URL"] = sqs.queue_url(wait=20)
    return env


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[CloudServer]:
    # The QPU keeps each task a while, so jobs wait remotely when the host dies.
    server = start_cloud(tmp_path / "cloud", queue_delay=0.6, run_delay=0.2, token="hosts-token")
    yield server
    server.stop()


def test_other_hosts_finish_the_jobs_of_a_killed_host(
    shared_env: dict[str, str], cloud: CloudServer, tmp_path: Path
) -> None:
    shared = {
        **shared_env,
        "QHYBRID_CLOUD_URL": cloud.base_url,
        "QHYBRID_CLOUD_TOKEN": cloud.token,
        "QHYBRID_CLOUD_CA_FILE": str(cloud.ca_file),
    }
    hosts = [make_host(name, tmp_path / "hosts", shared) for name in ("host-a", "host-b", "host-c")]
    a, b, c = hosts
    processes: list[Process] = []
    try:
        api_port = free_port()
        processes.append(start_api("api", api_port, a.env, a.log_dir))
        for host in hosts:
            host.start_worker(threads=2)
        database_url = shared["QHYBRID_DATABASE_URL"]
        job_ids = {submit(f"http://127.0.0.1:{api_port}", SMALL_REQUEST) for _ in range(JOBS)}

        # Wait until host-b has prepared and submitted jobs that are still waiting on the QPU.
        victims = _live_jobs_submitted_by(b, database_url, job_ids, at_least=2, timeout=90)
        b.kill_workers()
        assert not b.live_workers()

        states = wait_all_terminal(database_url, job_ids, timeout=180)
        logs = "\n".join(w.log()[-2000:] for h in hosts for w in h.workers)
        assert {states[j] for j in job_ids} == {"COMPLETED"}, logs
        # Every answer came from the QPU: a classical fallback would hide a job the survivors lost.
        sources = {job: result.get("source") for job, result in results(database_url).items()}
        assert "classical_fallback" not in {sources[j] for j in job_ids}, (sources, logs)
        events = job_events(database_url)
        finisher = {job: pid_of(actor) for job, state, actor in events if state == "COMPLETED"}
        survivors = a.pids() | c.pids()
        # Keys sealed on host-b were opened on the others: the KEK came from the shared secret.
        assert all(finisher[job] in survivors for job in victims), (victims, finisher)
        # One provider task per job, each submitted once.
        tasks = remote_tasks(database_url)
        assert sorted(job for job, *_ in tasks) == sorted(job_ids)
        submissions = cloud.submissions()
        assert {token: submissions.get(token) for _, _, token, _ in tasks} == {
            token: 1 for _, _, token, _ in tasks
        }
        # The hosts kept their own files: each survivor's audit log is its own intact chain.
        for host in (a, c):
            report = verify(host.data_dir / "audit" / "egress.log")
            assert report.ok and report.entries > 0, report
            assert not (host.data_dir / "keys" / "kek").exists()
            assert not (host.data_dir / "gateway" / "token-key").exists()
    finally:
        for host in hosts:
            host.stop()
        for proc in processes:
            proc.stop()


def _live_jobs_submitted_by(
    host: Host, database_url: str, job_ids: set[str], *, at_least: int, timeout: float
) -> set[str]:
    deadline = time.monotonic() + timeout
    pids = host.pids()
    while time.monotonic() < deadline:
        events = job_events(database_url)
        ended = {job for job, state, _ in events if state in ("COMPLETED", "FAILED", "CANCELLED")}
        mine = {job for job, state, actor in events if state == "SUBMITTED" and pid_of(actor) in pids}
        live = (mine & job_ids) - ended
        if len(live) >= at_least:
            return live
        time.sleep(0.05)
    raise AssertionError(f"{host.name} never held {at_least} live jobs")
