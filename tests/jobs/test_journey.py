"""The journey in-process against a real emulated cloud process: success, crashes, cancel, failures."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from pydantic import SecretStr

from qhybrid.backends.base import QuantumBackend, TaskStatus
from qhybrid.core.config import Settings
from qhybrid.domain.states import JobState, TaskState
from qhybrid.jobs.reconciler import reconcile_once
from qhybrid.portfolio.baselines import exact
from qhybrid.portfolio.lots import LotsProblem
from tests.support.backends import Crash, Forwarding
from tests.support.cloud import CloudServer, start_cloud
from tests.support.journey import REQUEST, build, formulation_of, on
from tests.support.processes import free_port


@pytest.fixture(scope="module")
def slow_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudServer]:
    """A cloud whose queue holds tasks for 30 s, to act on jobs while they wait remotely."""
    server = start_cloud(
        tmp_path_factory.mktemp("slow-cloud"),
        name="slow-cloud",
        queue_delay=30,
        run_delay=0.2,
        token="slow-token",
    )
    yield server
    server.stop()


def test_a_job_travels_to_completed(cloud_settings: Settings, consumer_for: Any) -> None:
    services = build(cloud_settings)
    consumer_for(services)
    job_id = services.complete()
    view = services.store.view(job_id)
    assert view is not None
    path = [e.to_state for e in view.events]
    assert path[:4] == ["ACCEPTED", "PREPARING", "SUBMITTING", "SUBMITTED"]
    assert path[-2:] == ["FINALIZING", "COMPLETED"]
    assert set(path) <= {s.value for s in JobState}
    result = view.job.result
    assert result is not None
    optimum = exact(formulation_of(REQUEST))
    assert result["classical"]["objective"] == pytest.approx(optimum.objective, rel=1e-12)
    assert len(result["selected"]) == 2
    assert set(result["selected"]) <= set("ABCDE")
    assert result["objective"] >= result["classical"]["objective"] - 1e-15
    assert result["gap"] >= 0
    assert result["quantum"]["task_id"] == view.remote_tasks[0].task_id
    assert result["quantum"]["shots"] == 512
    assert result["quantum"]["circuit"]["two_qubit_gates"] > 0
    assert 0 <= result["quantum"]["best_share"] <= 1
    assert view.remote_tasks[0].state == "COMPLETED"
    assert sum(view.remote_tasks[0].counts.values()) == 512  # type: ignore[union-attr]
    assert view.job.lease_owner is None


class CrashAfterSubmit(Forwarding):
    """The real cloud adapter, except the worker 'dies' right after the provider accepted the
    task and before the task id could be recorded."""

    def submit(self, program: str, shots: int, client_token: str) -> str:
        self.real.submit(program, shots, client_token)
        raise Crash


def test_crash_after_submission_never_submits_twice(
    cloud_settings: Settings, cloud_process: CloudServer
) -> None:
    settings = cloud_settings.model_copy(update={"lease_seconds": 0.5})
    services = build(settings)
    real = services.backends.get("local")
    services.backends._backends["local"] = CrashAfterSubmit(real)
    job_id = services.new_job()
    with pytest.raises(Crash):
        services.journey.advance(job_id)
    job = services.store.get_job(job_id)
    assert job is not None and job.state == "SUBMITTING" and job.lease_owner is not None
    row = services.store.remote_task(job_id, 1)
    assert row is not None and row.task_id is None
    assert cloud_process.submissions()[row.client_token] == 1

    # A new worker (the real adapter again) takes over once the dead worker's lease expires.
    services.backends._backends["local"] = real
    time.sleep(0.6)
    assert job_id in services.store.due_for_reconcile(grace_seconds=0)
    services.journey.advance(job_id)
    row = services.store.remote_task(job_id, 1)
    assert row is not None and row.task_id is not None
    assert services.store.get_job(job_id).state == "SUBMITTED"  # type: ignore[union-attr]
    assert cloud_process.submissions()[row.client_token] == 1


def test_cancel_reaches_the_provider(slow_cloud: CloudServer, settings: Settings, consumer_for: Any) -> None:
    services = build(on(settings, slow_cloud))
    consumer_for(services)
    job_id = services.new_job()
    services.queue.kick(job_id)
    services.wait_for(job_id, {JobState.REMOTE_QUEUED})
    outcome = services.store.request_cancel(job_id)
    assert outcome.accepted and not outcome.immediate
    services.queue.kick(job_id)
    assert services.wait_for(job_id, {JobState.CANCELLED, JobState.FAILED, JobState.COMPLETED}) == "CANCELLED"
    row = services.store.remote_task(job_id, 1)
    assert row is not None and row.task_id is not None
    assert services.backends.get("local").status(row.task_id).state is TaskState.CANCELLED
    events = services.store.view(job_id).events  # type: ignore[union-attr]
    assert "cancelled" in (events[-1].detail or "")


def test_unreachable_provider_fails_after_bounded_retries(settings: Settings, consumer_for: Any) -> None:
    dead = f"https://127.0.0.1:{free_port()}"
    services = build(settings.model_copy(update={"cloud_url": dead, "max_step_retries": 2}))
    consumer_for(services)
    job_id = services.new_job(fallback=False)
    services.queue.kick(job_id)
    assert services.wait_for(job_id, {JobState.FAILED, JobState.COMPLETED}, timeout=30) == "FAILED"
    job = services.store.get_job(job_id)
    assert job is not None and job.error is not None
    assert "gave up after 3 tries" in job.error
    assert "ConnectError" in job.error or "connect" in job.error.lower()


def test_unreachable_provider_gets_the_classical_fallback(settings: Settings, consumer_for: Any) -> None:
    dead = f"https://127.0.0.1:{free_port()}"
    services = build(settings.model_copy(update={"cloud_url": dead, "max_step_retries": 1}))
    consumer_for(services)
    job_id = services.new_job()
    services.queue.kick(job_id)
    assert services.wait_for(job_id, {JobState.FAILED, JobState.COMPLETED}, timeout=30) == "COMPLETED"
    view = services.store.view(job_id)
    assert view is not None and view.job.result is not None
    result = view.job.result
    assert result["source"] == "classical_fallback"
    assert "gave up after 2 tries" in result["fallback"]["reason"]
    assert result["quantum"] is None
    optimum = exact(formulation_of(REQUEST))
    assert result["objective"] == pytest.approx(optimum.objective, rel=1e-12)
    assert [e.to_state for e in view.events][-2:] == ["FINALIZING", "COMPLETED"]
    assert "classical fallback" in (view.events[-2].detail or "")


def test_refused_credentials_fail_at_once(cloud_settings: Settings, consumer_for: Any) -> None:
    services = build(cloud_settings.model_copy(update={"cloud_token": SecretStr("wrong-token")}))
    consumer_for(services)
    job_id = services.new_job(fallback=False)
    services.queue.kick(job_id)
    assert services.wait_for(job_id, {JobState.FAILED, JobState.COMPLETED}) == "FAILED"
    job = services.store.get_job(job_id)
    assert job is not None and job.error is not None
    assert "PermanentBackendError" in job.error
    assert job.step_failures == 0  # no retries for a refusal
    fallback_job = services.new_job()
    services.queue.kick(fallback_job)
    assert services.wait_for(fallback_job, {JobState.FAILED, JobState.COMPLETED}) == "COMPLETED"
    answered = services.store.get_job(fallback_job)
    assert answered is not None and answered.result is not None
    assert answered.result["source"] == "classical_fallback"
    assert "PermanentBackendError" in answered.result["fallback"]["reason"]


def test_deadline_answers_classically_and_cancels_the_task(
    slow_cloud: CloudServer, settings: Settings, consumer_for: Any
) -> None:
    services = build(on(settings, slow_cloud))
    consumer_for(services)
    job_id = services.new_job(deadline=4)
    services.queue.kick(job_id)
    assert (
        services.wait_for(job_id, {JobState.FAILED, JobState.COMPLETED, JobState.CANCELLED}, timeout=30)
        == "COMPLETED"
    )
    job = services.store.get_job(job_id)
    assert job is not None and job.result is not None
    assert job.result["source"] == "classical_fallback"
    assert "deadline" in job.result["fallback"]["reason"]
    row = services.store.remote_task(job_id, 1)
    assert row is not None and row.task_id is not None
    # The provider task is cancelled, not left to run (and bill).
    assert services.backends.get("local").status(row.task_id).state is TaskState.CANCELLED


def test_reconciler_rescues_a_job_whose_kick_was_lost(cloud_settings: Settings, consumer_for: Any) -> None:
    services = build(cloud_settings)
    consumer_for(services)
    job_id = services.new_job()  # stored, never kicked: as if the enqueue was lost
    time.sleep(0.3)
    assert services.store.get_job(job_id).state == "ACCEPTED"  # type: ignore[union-attr]
    assert reconcile_once(services.store, services.queue, grace_seconds=0) == [job_id]
    assert services.wait_for(job_id, {JobState.COMPLETED, JobState.FAILED}) == "COMPLETED"


class FirstTaskFails(Forwarding):
    """Test double until the cloud injects faults (issue 4): the real adapter, except that the
    provider reports the first task it ever sees as FAILED."""

    def __init__(self, real: QuantumBackend) -> None:
        super().__init__(real)
        self.failed: str | None = None

    def status(self, task_id: str) -> Any:
        if self.failed in (None, task_id):
            self.failed = task_id
            return TaskStatus(state=TaskState.FAILED, provider_state="FAILED", message="calibration drift")
        return self.real.status(task_id)


def test_a_failed_provider_task_is_resubmitted_under_a_new_token(
    cloud_settings: Settings, cloud_process: CloudServer, consumer_for: Any
) -> None:
    services = build(cloud_settings)
    double = FirstTaskFails(services.backends.get("local"))
    services.backends._backends["local"] = double
    consumer_for(services)
    job_id = services.complete()
    view = services.store.view(job_id)
    assert view is not None
    assert view.job.attempt == 2
    first, second = view.remote_tasks
    assert first.task_id == double.failed and second.task_id != first.task_id
    assert first.client_token != second.client_token
    assert any("calibration drift" in (e.detail or "") and e.to_state == "SUBMITTING" for e in view.events)
    counts = cloud_process.submissions()
    assert counts[first.client_token] == 1 and counts[second.client_token] == 1


def test_a_job_fails_when_every_attempt_fails_without_fallback(
    cloud_settings: Settings, consumer_for: Any
) -> None:
    services = build(cloud_settings.model_copy(update={"max_remote_attempts": 2}))

    class AlwaysFails(FirstTaskFails):
        def status(self, task_id: str) -> Any:
            return TaskStatus(state=TaskState.FAILED, provider_state="FAILED", message="device offline")

    services.backends._backends["local"] = AlwaysFails(services.backends.get("local"))
    consumer_for(services)
    job_id = services.new_job(fallback=False)
    services.queue.kick(job_id)
    assert services.wait_for(job_id, {JobState.COMPLETED, JobState.FAILED}) == "FAILED"
    job = services.store.get_job(job_id)
    assert job is not None and job.error is not None
    assert "device offline" in job.error and "after 2 attempts" in job.error


def test_weights_travel_end_to_end_and_match_brute_force(cloud_settings: Settings, consumer_for: Any) -> None:
    services = build(cloud_settings)
    consumer_for(services)
    request = {
        **REQUEST,
        "formulation": "weights",
        "budget": 5,
        "max_lots": 3,
        "lot_bounds": {"A": [1, 3]},
        "options": {"seed": 5},
    }
    job_id = services.complete(request)
    result = services.store.get_job(job_id).result  # type: ignore[union-attr]
    assert result is not None
    lots = result["lots"]
    assert sum(lots.values()) == 5 and 1 <= lots["A"] <= 3
    assert all(0 <= v <= 3 for v in lots.values())
    assert result["weights"] == {name: count / 5 for name, count in lots.items()}
    # Independent check: enumerate every integer allocation within the bounds.
    problem = formulation_of(request)
    assert isinstance(problem, LotsProblem)
    mu = problem.expected_returns
    sigma = problem.covariance
    best = min(
        (
            0.5 * (w := np.array(v) / 5) @ sigma @ w - mu @ w,
            v,
        )
        for v in itertools.product(range(1, 4), *([range(4)] * 4))
        if sum(v) == 5
    )
    assert result["objective"] == pytest.approx(best[0], rel=1e-12)
    assert tuple(lots[n] for n in "ABCDE") == best[1]
    assert result["quantum"]["formulation"] == "weights"
    assert result["quantum"]["qubits"] == 10  # two bits for 0..3 lots, two for A's 1..3


def test_prices_are_estimated_in_the_trusted_zone(cloud_settings: Settings, consumer_for: Any) -> None:
    services = build(cloud_settings)
    consumer_for(services)
    rng = np.random.default_rng(0)
    prices = 100 * np.cumprod(1 + rng.normal(0.0005, 0.01, size=(60, 4)), axis=0)
    request = {
        "prices": {"assets": ["W", "X", "Y", "Z"], "values": prices.tolist()},
        "estimator": "sample",
        "returns": "simple",
        "risk_aversion": 2.0,
        "budget": 2,
        "backend": "local",
        "shots": 256,
        "options": {"seed": 2},
    }
    job_id = services.complete(request)
    result = services.store.get_job(job_id).result  # type: ignore[union-attr]
    assert result is not None
    assert result["estimate"]["estimator"] == "sample"
    assert result["estimate"]["observations"] == 59
    returns = prices[1:] / prices[:-1] - 1
    mu, sigma = returns.mean(axis=0), np.cov(returns, rowvar=False)
    x = np.array([1.0 if n in result["selected"] else 0.0 for n in "WXYZ"])
    assert result["objective"] == pytest.approx(2.0 * x @ sigma @ x - mu @ x, rel=1e-9)
