"""The journey wired in-process (store, queue, backends) for tests that drive jobs directly."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pydantic import SecretStr

from qhybrid.backends.registry import BackendRegistry
from qhybrid.core.config import Settings
from qhybrid.domain.request import JobRequest
from qhybrid.domain.states import JobState
from qhybrid.jobs import pipeline
from qhybrid.jobs.database import Database
from qhybrid.jobs.journey import Journey
from qhybrid.jobs.models import utcnow
from qhybrid.jobs.queue import JobQueue, make_queue
from qhybrid.jobs.store import JobStore
from qhybrid.portfolio.formulation import Formulation
from tests.support.cloud import CloudServer

REQUEST: dict[str, Any] = {
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
    "backend": "local",
    "shots": 512,
    "options": {"reps": 1, "seed": 3},
}


@dataclass
class Services:
    settings: Settings
    store: JobStore
    queue: JobQueue
    journey: Journey
    backends: BackendRegistry

    def new_job(
        self, request: dict[str, Any] | None = None, *, deadline: float = 3600, fallback: bool = True
    ) -> str:
        request = request or REQUEST
        if not fallback:
            request = {**request, "options": {**request["options"], "fallback": False}}
        job, _ = self.store.create_job(
            job_id=str(uuid.uuid4()),
            request=request,
            request_hash=uuid.uuid4().hex,
            backend=str(request.get("backend", "local")),
            shots=int(request["shots"]),
            deadline_at=utcnow() + timedelta(seconds=deadline),
        )
        return job.id

    def complete(self, request: dict[str, Any] | None = None) -> str:
        """Create a job, kick it, and return its id once it COMPLETED (fail if it FAILED)."""
        job_id = self.new_job(request)
        self.queue.kick(job_id)
        assert self.wait_for(job_id, {JobState.COMPLETED, JobState.FAILED}) == "COMPLETED"
        return job_id

    def wait_for(self, job_id: str, states: set[JobState], timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.store.get_job(job_id)
            assert job is not None
            if JobState(job.state) in states:
                return job.state
            time.sleep(0.05)
        job = self.store.get_job(job_id)
        raise AssertionError(f"job stuck in {job.state if job else None}: {job.last_error if job else ''}")


def build(settings: Settings) -> Services:
    db = Database(settings.resolved_database_url)
    db.migrate()
    store = JobStore(db)
    queue = make_queue(settings)
    backends = BackendRegistry(settings)
    journey = Journey(settings, store, queue, backends)
    queue.handler = journey.advance
    return Services(settings, store, queue, journey, backends)


def on(settings: Settings, cloud: CloudServer) -> Settings:
    """Settings pointed at ``cloud``."""
    return settings.model_copy(
        update={
            "cloud_url": cloud.base_url,
            "cloud_token": SecretStr(cloud.token),
            "cloud_ca_file": cloud.ca_file,
        }
    )


def formulation_of(request: dict[str, Any]) -> Formulation:
    """The business problem a request document describes, as the pipeline builds it."""
    typed = JobRequest.model_validate(request)
    return pipeline.formulate(typed, pipeline.estimate(typed))
