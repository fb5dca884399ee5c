"""Decomposed jobs in-process against a real emulated cloud process: rounds of sub-problem tasks,
each under its own key, a crash mid-round, cancel, and the classical fallback."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from qhybrid.backends.base import QuantumBackend
from qhybrid.core.config import Settings
from qhybrid.domain.result import JobResult
from qhybrid.domain.states import JobState, TaskState
from qhybrid.jobs import subproblems
from qhybrid.portfolio.factor_model import factor_problem
from qhybrid.proxy.keys import KeyVaultError
from tests.api.test_large_universes import prices_request
from tests.support.backends import Crash, Forwarding
from tests.support.cloud import CloudServer, start_cloud
from tests.support.journey import build, on
from tests.support.processes import free_port

#: Sub-problems of 8 qubits on a 40-asset universe: 3 parts a round, 2 rounds (fast tests).
SMALL = {
    "subproblem_qubits": 8,
    "decomposition_parts": 3,
    "decomposition_rounds": 2,
    "decomposition_start_seconds": 0.3,
    "decomposition_exact_seconds": 1.0,
    "max_qubits": 12,
}


def decomposed_request(n: int = 40, budget: int = 4, seed: int = 5) -> dict[str, Any]:
    problem = factor_problem(n, budget, seed=seed)
    return {
        "assets": [
            {"name": name, "expected_return": float(mu)}
            for name, mu in zip(problem.names, problem.expected_returns, strict=True)
        ],
        "covariance": problem.covariance.tolist(),
        "risk_aversion": problem.risk_aversion,
        "budget": budget,
        "backend": "local",
        "shots": 256,
        "options": {"reps": 1, "seed": 11, "maxiter": 20},
    }


@pytest.fixture(scope="module")
def slow_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudServer]:
    """A cloud whose queue holds tasks for 30 s, to act on a job while its sub-problems wait."""
    server = start_cloud(
        tmp_path_factory.mktemp("decomposed-slow-cloud"),
        name="decomposed-slow-cloud",
        queue_delay=30,
        run_delay=0.2,
        token="decomposed-slow-token",
    )
    yield server
    server.stop()


def test_a_large_selection_is_solved_by_sub_problems_on_the_qpu_path(
    cloud_settings: Settings, cloud_process: CloudServer, consumer_for: Any
) -> None:
    priced = {"cloud_price_per_task": 0.25, "cloud_price_per_shot": 0.001}
    services = build(cloud_settings.model_copy(update={**SMALL, **priced}))
    consumer_for(services)
    request = decomposed_request()
    job_id = services.complete(request)
    view = services.store.view(job_id)
    assert view is not None and view.job.result is not None
    result = JobResult.model_validate(view.job.result)
    block = result.decomposition
    assert block is not None
    assert block.assets == 40 and block.budget == 4
    assert len(block.rounds) == 2
    # Every sub-problem went to the cloud as a task of its own, each submitted exactly once.
    tasks = [t for t in view.remote_tasks if t.round >= 1]
    assert len(tasks) == block.subproblems_sent == sum(len(r.subproblems) for r in block.rounds)
    assert all(t.state == TaskState.COMPLETED.value for t in tasks)
    assert all(1 <= size <= 8 for size in block.subproblem_sizes)
    submissions = cloud_process.submissions()
    assert [submissions[t.client_token] for t in tasks] == [1] * len(tasks)
    # Each round's numbers chain: the next round starts where the previous ended.
    assert block.rounds[0].objective_before == pytest.approx(block.start.objective)
    assert block.rounds[1].objective_before == pytest.approx(block.rounds[0].objective_after)
    assert result.objective <= block.start.objective + 1e-15
    assert result.objective <= result.classical.objective + 1e-15
    assert len(result.selected) == 4
    # The answer says plainly which step produced it.
    quantum_taken = any(r.improved_parts for r in block.rounds)
    assert result.source == ("quantum+decomposition" if quantum_taken else "classical_baseline")
    if block.final_step == "classical_start":
        assert result.objective == pytest.approx(block.start.objective)
    path = [e.to_state for e in view.events]
    assert path.count("SUBMITTING") == 2 and path[-2:] == ["FINALIZING", "COMPLETED"]
    # Every sub-problem task is paid for: 0.25 per task + 0.001 per shot.
    assert view.job.cost is not None
    assert view.job.cost["actual"] == pytest.approx(len(tasks) * (0.25 + 0.001 * 256))


def test_each_sub_problem_key_opens_only_its_own_task(cloud_settings: Settings, consumer_for: Any) -> None:
    services = build(cloud_settings.model_copy(update={**SMALL, "decomposition_rounds": 1}))
    consumer_for(services)
    job_id = services.complete(decomposed_request())
    view = services.store.view(job_id)
    assert view is not None
    tasks = [t for t in view.remote_tasks if t.round >= 1]
    assert len(tasks) >= 2
    vault = services.journey.vault
    keys = []
    for task in tasks:
        assert task.proxy_key is not None and task.counts is not None
        own = subproblems.task_name(task.round, task.part)
        keys.append(vault.open(task.proxy_key, job_id=job_id, task=own))
        for other in tasks:
            if other is task:
                continue
            with pytest.raises(KeyVaultError):
                vault.open(task.proxy_key, job_id=job_id, task=subproblems.task_name(other.round, other.part))
        with pytest.raises(KeyVaultError):
            vault.open(task.proxy_key, job_id=job_id)  # nor as the job's single key
    # A fresh key per sub-problem: no two are the same.
    assert len({key.to_bytes() for key in keys}) == len(keys)


class CrashOnSecondSubmit(Forwarding):
    """The real cloud adapter, except the worker 'dies' right after the provider accepted the
    round's second sub-problem and before its task id could be recorded."""

    def __init__(self, real: QuantumBackend) -> None:
        super().__init__(real)
        self.submitted = 0

    def submit(self, program: str, shots: int, client_token: str) -> str:
        task_id = self.real.submit(program, shots, client_token)
        self.submitted += 1
        if self.submitted == 2:
            raise Crash
        return task_id


def test_a_crash_mid_round_never_submits_a_sub_problem_twice(
    cloud_settings: Settings, cloud_process: CloudServer, consumer_for: Any
) -> None:
    settings = cloud_settings.model_copy(update={**SMALL, "decomposition_rounds": 1, "lease_seconds": 0.5})
    services = build(settings)
    real = services.backends.get("local")
    services.backends._backends["local"] = CrashOnSecondSubmit(real)
    job_id = services.new_job(decomposed_request())
    with pytest.raises(Crash):
        services.journey.advance(job_id)  # ACCEPTED -> PREPARING -> SUBMITTING: dies on part 1
    job = services.store.get_job(job_id)
    assert job is not None and job.state == "SUBMITTING"
    rows = services.store.round_tasks(job_id, 1)
    assert [row.task_id is not None for row in rows] == [True, False]
    tokens = [row.client_token for row in rows]
    assert [cloud_process.submissions()[token] for token in tokens] == [1, 1]

    # A new worker (the real adapter again) takes over once the dead worker's lease expires.
    services.backends._backends["local"] = real
    time.sleep(0.6)
    consumer_for(services)
    services.queue.kick(job_id)
    assert services.wait_for(job_id, {JobState.COMPLETED, JobState.FAILED}, timeout=120) == "COMPLETED"
    rows = services.store.round_tasks(job_id, 1)
    assert [row.client_token for row in rows[:2]] == tokens
    submissions = cloud_process.submissions()
    assert [submissions[row.client_token] for row in rows] == [1] * len(rows)
    assert all(row.state == TaskState.COMPLETED.value for row in rows)


def test_cancel_mid_decomposition_cancels_the_outstanding_tasks(
    slow_cloud: CloudServer, settings: Settings, consumer_for: Any
) -> None:
    services = build(on(settings, slow_cloud).model_copy(update=SMALL))
    consumer_for(services)
    job_id = services.new_job(decomposed_request())
    services.queue.kick(job_id)
    services.wait_for(job_id, {JobState.SUBMITTED, JobState.REMOTE_QUEUED}, timeout=120)
    assert services.store.request_cancel(job_id).accepted
    services.queue.kick(job_id)
    assert services.wait_for(job_id, {JobState.CANCELLED, JobState.FAILED, JobState.COMPLETED}) == "CANCELLED"
    tasks = services.store.round_tasks(job_id, 1)
    assert len(tasks) == 3
    backend = services.backends.get("local")
    for task in tasks:
        assert task.task_id is not None and task.state == TaskState.CANCELLED.value
        assert backend.status(task.task_id).state is TaskState.CANCELLED


def test_the_deadline_answers_with_the_classical_start_marked_as_such(
    slow_cloud: CloudServer, settings: Settings, consumer_for: Any
) -> None:
    services = build(on(settings, slow_cloud).model_copy(update=SMALL))
    consumer_for(services)
    job_id = services.new_job(decomposed_request(), deadline=8)
    services.queue.kick(job_id)
    assert services.wait_for(job_id, {JobState.COMPLETED, JobState.FAILED}, timeout=90) == "COMPLETED"
    job = services.store.get_job(job_id)
    assert job is not None and job.result is not None
    result = JobResult.model_validate(job.result)
    assert result.source == "classical_fallback" and result.fallback is not None
    assert result.decomposition is not None
    assert result.decomposition.final_step == "classical_start"
    assert result.decomposition.stopped == "fallback"
    assert result.objective == pytest.approx(result.decomposition.start.objective)
    assert np.array(result.bits).sum() == 4
    for task in services.store.round_tasks(job_id, 1):
        assert task.state == TaskState.CANCELLED.value


def test_an_unreachable_provider_gets_the_classical_start_of_a_large_universe(
    settings: Settings, consumer_for: Any
) -> None:
    # The device cannot even be asked for its size: PREPARING gives up before the loop began.
    dead = f"https://127.0.0.1:{free_port()}"
    services = build(settings.model_copy(update={**SMALL, "cloud_url": dead, "max_step_retries": 1}))
    consumer_for(services)
    job_id = services.new_job(decomposed_request())
    services.queue.kick(job_id)
    assert services.wait_for(job_id, {JobState.FAILED, JobState.COMPLETED}, timeout=60) == "COMPLETED"
    job = services.store.get_job(job_id)
    assert job is not None and job.result is not None
    result = JobResult.model_validate(job.result)
    assert result.source == "classical_fallback" and result.fallback is not None
    assert result.decomposition is not None and result.decomposition.rounds == []
    assert result.decomposition.final_step == "classical_start"
    assert result.objective == pytest.approx(result.decomposition.start.objective)
    assert result.found_by in ("greedy+local_search", "swap_annealing")


def test_a_large_price_history_is_estimated_here_and_decomposed(
    cloud_settings: Settings, consumer_for: Any
) -> None:
    services = build(cloud_settings.model_copy(update={**SMALL, "decomposition_rounds": 1}))
    consumer_for(services)
    body = {**prices_request(40, rows=80), "shots": 256, "options": {"reps": 1, "seed": 2, "maxiter": 20}}
    job_id = services.complete(body)
    job = services.store.get_job(job_id)
    assert job is not None and job.result is not None
    result = JobResult.model_validate(job.result)
    assert result.decomposition is not None and result.decomposition.subproblems_sent >= 1
    assert result.estimate is not None
    assert (result.estimate.estimator, result.estimate.assets, result.estimate.observations) == (
        "ledoit_wolf",
        40,
        79,
    )
    assert len(result.selected) == 4
