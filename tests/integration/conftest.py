"""A real stack (emulated cloud, uvicorn API, worker processes) for the integration tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.cloud import CloudServer, start_cloud
from tests.support.processes import Process, free_port, start_process, wait_until_healthy
from tests.support.servers import MotoServer

FAST = {
    "QHYBRID_POLL_INITIAL_SECONDS": "0.3",
    "QHYBRID_POLL_MAX_SECONDS": "1",
    "QHYBRID_RECONCILE_INTERVAL_SECONDS": "1",
    "QHYBRID_RECONCILE_GRACE_SECONDS": "2",
    "QHYBRID_LEASE_SECONDS": "20",
}


@dataclass
class Stack:
    env: dict[str, str]
    folder: Path
    cloud: CloudServer
    api_url: str = ""
    processes: list[Process] = field(default_factory=list)
    workers: list[Process] = field(default_factory=list)

    def start_worker(self) -> Process:
        index = len(self.workers)
        proc = start_process(
            f"worker-{index}", ["-m", "qhybrid", "worker"], log_dir=self.folder, env=self.env
        )
        self.workers.append(proc)
        self.processes.append(proc)
        return proc

    def submissions(self) -> dict[str, int]:
        return self.cloud.submissions()

    def logs(self) -> str:
        processes = [self.cloud.process, *self.processes]
        return "\n".join(f"--- {p.name}\n{p.log()[-3000:]}" for p in processes)


@pytest.fixture(params=["embedded", "redis+postgresql", "sqs+postgresql"])
def stack_env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    env = {"QHYBRID_DATA_DIR": str(tmp_path / "qhybrid"), **FAST}
    if request.param == "redis+postgresql":
        env["QHYBRID_DATABASE_URL"] = request.getfixturevalue("postgres_url")
        env["QHYBRID_REDIS_URL"] = request.getfixturevalue("redis_server")
        env["QHYBRID_QUEUE_NAME"] = request.getfixturevalue("queue_name")
    elif request.param == "sqs+postgresql":
        # The local SQS endpoint (moto server); the fake AWS credentials are in the environment.
        sqs: MotoServer = request.getfixturevalue("sqs_server")
        env["QHYBRID_DATABASE_URL"] = request.getfixturevalue("postgres_url")
        env["QHYBRID_QUEUE_URL"] = sqs.queue_url(wait=20)
    return env


@pytest.fixture
def start_stack(stack_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    """Starts cloud, API and one worker as separate processes; everything is stopped afterwards."""
    stacks: list[Stack] = []

    def start(
        queue_delay: float = 0.5,
        run_delay: float = 0.5,
        *,
        cloud_args: Sequence[str] = (),
        cloud_env: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Stack:
        """Start the stack; ``cloud_args`` (e.g. ``--faults``) and ``cloud_env`` go to the cloud,
        ``env`` to the API and the worker."""
        api_port = free_port()
        cloud = start_cloud(
            tmp_path / f"cloud-{len(stacks)}",  # one data dir per cloud: a cloud locks its own
            queue_delay=queue_delay,
            run_delay=run_delay,
            token="e2e-token",
            extra_args=cloud_args,
            env=cloud_env,
        )
        stack_vars = {
            **stack_env,
            "QHYBRID_CLOUD_URL": cloud.base_url,
            "QHYBRID_CLOUD_TOKEN": cloud.token,
            "QHYBRID_CLOUD_CA_FILE": str(cloud.ca_file),
            **(env or {}),
        }
        stack = Stack(env=stack_vars, folder=tmp_path / "logs", cloud=cloud)
        stacks.append(stack)
        stack.api_url = f"http://127.0.0.1:{api_port}"
        api = start_process(
            "api", ["-m", "qhybrid", "serve", "--port", str(api_port)], log_dir=stack.folder, env=stack_vars
        )
        stack.processes.append(api)
        # The worker starts while the API does (each spends seconds importing), as two services
        # of one deployment would: neither needs the other to start (the migration and the KEK
        # file are created once under a lock / O_EXCL), and a job waits in the queue until the
        # worker consumes. Only then does the test get the stack, once the API answers.
        stack.start_worker()
        wait_until_healthy(api, f"{stack.api_url}/healthz")  # /readyz needs a key once keys exist
        return stack

    yield start
    for stack in stacks:
        for proc in reversed(stack.processes):
            proc.stop()
        stack.cloud.stop()
